/**
 * The relay: servers behind NAT and their clients both dial out to it; it
 * pairs a waiting server connection with each client asking for its name and
 * copies bytes both ways. Library and executable.
 *
 * ```sh
 * deno run -A jsr:@x/tcp-relay/relay --server-port 8010 --client-port 9010
 * ```
 *
 * Run `deno run -A jsr:@x/tcp-relay/relay --help` for every flag.
 *
 * @example Running a relay in-process on free ports
 * ```ts
 * import { serveRelay } from "jsr:@x/tcp-relay/relay";
 *
 * await using relay = serveRelay({ hostname: "127.0.0.1", serverPort: 0, clientPort: 0 });
 * console.log(relay.serverAddr.port, relay.clientAddr.port, relay.stats());
 * ```
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  DEFAULT_CLIENT_PORT,
  DEFAULT_DRAIN_TIMEOUT,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_SERVER_PORT,
  DEFAULT_WAIT,
} from "./_protocol.ts";
import { type RelayStats, Rendezvous } from "./_rendezvous.ts";
import {
  COMMON_OPTIONS,
  integer,
  parseFlags,
  runMain,
  seconds,
  setupLogging,
  stopSignal,
  UsageError,
} from "./_cli.ts";

export type { RelayStats } from "./_rendezvous.ts";

/** Options of {@linkcode serveRelay}. */
export interface RelayOptions {
  /** Address to listen on. Default `"0.0.0.0"`. */
  hostname?: string;
  /** Port for servers; `0` picks a free one. Default `8010`. */
  serverPort?: number;
  /** Port for clients; `0` picks a free one. Default `9010`. */
  clientPort?: number;
  /** How long a client asking for a reserved name waits for a server, in ms. Default `5000`. */
  wait?: number;
  /** How long a connection may take to finish its handshake, in ms. Default `10000`. */
  handshakeTimeout?: number;
  /** How long active pairs may finish after a shutdown starts, in ms. Default `10000`. */
  drainTimeout?: number;
  /**
   * How bytes are copied: `"loop"`, a read/write loop per direction, or
   * `"streams"`, `readable.pipeTo(writable)` over streams of our own (kept
   * for the benchmark's comparison: it holds more memory per pair). Default
   * `"loop"`.
   */
  dataPath?: "loop" | "streams";
  /** Aborting it shuts the relay down as {@linkcode Relay.shutdown} does. */
  signal?: AbortSignal;
}

/**
 * A running relay, from {@linkcode serveRelay}.
 *
 * @example Reading live counts, then stopping
 * ```ts
 * import { serveRelay } from "jsr:@x/tcp-relay/relay";
 *
 * const relay = serveRelay({ serverPort: 0, clientPort: 0 });
 * console.log(relay.stats().activePairs);
 * await relay.shutdown();
 * ```
 */
export interface Relay extends AsyncDisposable {
  /** Where servers connect. */
  readonly serverAddr: Deno.NetAddr;
  /** Where clients connect. */
  readonly clientAddr: Deno.NetAddr;
  /** Settles when the relay has stopped and every connection is closed. */
  readonly finished: Promise<void>;
  /** Live counts: parked connections per name, pairs, bytes relayed. */
  stats(): RelayStats;
  /**
   * Stops accepting, closes parked and handshaking connections, lets active
   * pairs finish for up to `drainTimeout`, then closes them. Resolves with
   * {@linkcode Relay.finished}.
   */
  shutdown(): Promise<void>;
}

function checkMs(name: string, value: number | undefined, fallback: number) {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value >= 0)) {
    throw new RangeError(`${name} must be a number of ms >= 0, not ${value}`);
  }
  return value;
}

/**
 * Starts a relay: listens on the server and client ports at once (so their
 * addresses are known on return) and serves until shut down.
 *
 * @example A relay on the default ports, stopped by Ctrl-C
 * ```ts
 * import { serveRelay } from "jsr:@x/tcp-relay/relay";
 *
 * const ac = new AbortController();
 * Deno.addSignalListener("SIGINT", () => ac.abort());
 * const relay = serveRelay({ signal: ac.signal });
 * await relay.finished;
 * ```
 */
export function serveRelay(options: RelayOptions = {}): Relay {
  const hostname = options.hostname ?? "0.0.0.0";
  const serverListener = Deno.listen({
    hostname,
    port: options.serverPort ?? DEFAULT_SERVER_PORT,
  });
  let clientListener: Deno.TcpListener;
  try {
    clientListener = Deno.listen({
      hostname,
      port: options.clientPort ?? DEFAULT_CLIENT_PORT,
    });
  } catch (e) {
    serverListener.close();
    throw e;
  }
  const core = new Rendezvous(
    {
      wait: checkMs("wait", options.wait, DEFAULT_WAIT),
      handshakeTimeout: checkMs(
        "handshakeTimeout",
        options.handshakeTimeout,
        DEFAULT_HANDSHAKE_TIMEOUT,
      ),
      drainTimeout: checkMs(
        "drainTimeout",
        options.drainTimeout,
        DEFAULT_DRAIN_TIMEOUT,
      ),
      dataPath: options.dataPath === "streams" ? "streams" : "loop",
    },
    serverListener,
    clientListener,
  );
  const shutdown = () => core.shutdown();
  options.signal?.addEventListener("abort", shutdown, { once: true });
  if (options.signal?.aborted) shutdown();
  core.finished.then(() =>
    options.signal?.removeEventListener("abort", shutdown)
  );
  return {
    serverAddr: serverListener.addr,
    clientAddr: clientListener.addr,
    finished: core.finished,
    stats: () => core.stats(),
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

const USAGE = `tcp-relay: pairs servers behind NAT with their clients

Usage: deno run -A jsr:@x/tcp-relay/relay [options]

Options:
  --host HOST               address to listen on (default 0.0.0.0)
  --server-port PORT        port for servers (default ${DEFAULT_SERVER_PORT})
  --client-port PORT        port for clients (default ${DEFAULT_CLIENT_PORT})
  --wait SECONDS            how long a client waits for a server of a
                            reserved name before OFFLINE (default ${
  DEFAULT_WAIT / 1000
})
  --handshake-timeout SECONDS
                            time allowed for a handshake (default ${
  DEFAULT_HANDSHAKE_TIMEOUT / 1000
})
  --drain-timeout SECONDS   on SIGINT/SIGTERM, time active pairs get to
                            finish (default ${DEFAULT_DRAIN_TIMEOUT / 1000})
  --data-path loop|streams  how bytes are copied: read/write loops (default)
                            or pipeTo over Web Streams (for benchmarks)
  --log-level LEVEL         trace, debug, info, warning, error (default info)
  --log-format FORMAT       text or json (default text)
  -h, --help                show this help
  -V, --version             show the version`;

function dataPath(value: string): "loop" | "streams" {
  if (value === "loop" || value === "streams") return value;
  throw new UsageError(`--data-path takes loop or streams, not "${value}"`);
}

async function main(): Promise<never> {
  const options = {
    ...COMMON_OPTIONS,
    host: { type: "string", default: "0.0.0.0" },
    "server-port": { type: "string", default: String(DEFAULT_SERVER_PORT) },
    "client-port": { type: "string", default: String(DEFAULT_CLIENT_PORT) },
    wait: { type: "string", default: String(DEFAULT_WAIT / 1000) },
    "handshake-timeout": {
      type: "string",
      default: String(DEFAULT_HANDSHAKE_TIMEOUT / 1000),
    },
    "drain-timeout": {
      type: "string",
      default: String(DEFAULT_DRAIN_TIMEOUT / 1000),
    },
    "data-path": { type: "string", default: "loop" },
  } as const;
  return await runMain(
    USAGE,
    () => parseFlags(Deno.args, options),
    async (v) => {
      const relayOptions: RelayOptions = {
        hostname: v.host as string,
        serverPort: integer(
          "server-port",
          v["server-port"] as string,
          0,
          65535,
        ),
        clientPort: integer(
          "client-port",
          v["client-port"] as string,
          0,
          65535,
        ),
        wait: seconds("wait", v.wait as string),
        handshakeTimeout: seconds(
          "handshake-timeout",
          v["handshake-timeout"] as string,
        ),
        drainTimeout: seconds("drain-timeout", v["drain-timeout"] as string),
        dataPath: dataPath(v["data-path"] as string),
        signal: stopSignal(),
      };
      await setupLogging(v["log-level"] as string, v["log-format"] as string);
      const log = getLogger(["tcp-relay", "relay"]);
      const relay = serveRelay(relayOptions);
      log.info("Relay listening: servers on {server}, clients on {client}", {
        server: `${relay.serverAddr.hostname}:${relay.serverAddr.port}`,
        client: `${relay.clientAddr.hostname}:${relay.clientAddr.port}`,
      });
      await relay.finished;
      log.info("Relay stopped");
    },
  );
}

if (import.meta.main) main();
