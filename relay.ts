/**
 * The relay: servers behind NAT and their clients both dial out to it; it
 * pairs a waiting server connection with each client asking for its name and
 * copies bytes both ways. Library and executable.
 *
 * ```sh
 * deno run -A jsr:@x/tcp-relay/relay --server-port 8010 --client-port 9010
 * deno run -A jsr:@x/tcp-relay/relay names add home-ssh --data /var/lib/tcp-relay
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
  DEFAULT_HEARTBEAT,
  DEFAULT_SERVER_PORT,
  DEFAULT_WAIT,
} from "./protocol/_wire.ts";
import {
  type Conn,
  type NameOwners,
  type RelayStats,
  Rendezvous,
} from "./engine/_rendezvous.ts";
import { DEFAULT_LIMITS, type Limits } from "./engine/_guard.ts";
import { newSecret } from "./protocol/_auth.ts";
import { parseRelayFlags, RELAY_USAGE, runNames } from "./cli/_relay.ts";
import { runMain, setupLogging, stopSignal } from "./cli/_common.ts";
import { NameStore } from "./engine/_store.ts";

export type { NameOwners, RelayStats } from "./engine/_rendezvous.ts";
export type { Limits } from "./engine/_guard.ts";

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
  /** How often parked v2 connections are probed (`PING`), in ms. Default `15000`. */
  heartbeat?: number;
  /** Serve both ports over TLS with this certificate and key (PEM). Default: plain TCP. */
  tls?: { cert: string; key: string };
  /**
   * Owned and private names (for example a credentials store). Default: no
   * owned names, except those made by `openRegistration`.
   */
  names?: NameOwners;
  /**
   * Let the first v2 `RESERVE` of a free name become its owner (the secret is
   * answered once). Default `false`.
   */
  openRegistration?: boolean;
  /** Limits against a single host exhausting the relay. Defaults in {@linkcode Limits}. */
  limits?: Partial<Limits>;
  /**
   * How bytes are copied: `"loop"`, a read/write loop per direction, or
   * `"streams"`, `readable.pipeTo(writable)` over streams of our own (kept
   * for the benchmark's comparison: it holds more memory per pair). Default
   * `"loop"`.
   */
  dataPath?: "loop" | "streams";
  /**
   * Give memory back to the system when the relay goes quiet after a busy
   * spell: one full garbage collection and, on Linux with glibc,
   * `malloc_trim(0)` (which needs `--allow-ffi`). It sets V8's `--expose-gc`
   * for new contexts. The relay executable turns it on. Default `false`.
   */
  reclaimMemory?: boolean;
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

/** Owners kept in memory: open registration without a credentials store. */
class MemoryOwners implements NameOwners {
  #owners = new Map<string, { secret: string }>();
  get(name: string) {
    return this.#owners.get(name);
  }
  add(name: string) {
    if (this.#owners.has(name)) {
      return Promise.reject(new RangeError(`Name ${name} exists`));
    }
    const owner = { secret: newSecret() };
    this.#owners.set(name, owner);
    return Promise.resolve(owner);
  }
  remove(name: string) {
    return Promise.resolve(this.#owners.delete(name));
  }
  names() {
    return [...this.#owners.keys()];
  }
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
  const listen = (port: number): Deno.Listener<Conn> =>
    options.tls
      ? Deno.listenTls({ hostname, port, ...options.tls })
      : Deno.listen({ hostname, port });
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  for (const [k, v] of Object.entries(limits)) {
    if (typeof v === "number" && (!Number.isInteger(v) || v < 1)) {
      throw new RangeError(`limits.${k} must be a whole number >= 1, not ${v}`);
    }
  }
  const settings = {
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
    heartbeat: Math.max(
      1,
      checkMs("heartbeat", options.heartbeat, DEFAULT_HEARTBEAT),
    ),
    dataPath: options.dataPath === "streams"
      ? "streams" as const
      : "loop" as const,
    limits,
    owners: options.names ??
      (options.openRegistration ? new MemoryOwners() : undefined),
    openRegistration: !!options.openRegistration,
    reclaimMemory: !!options.reclaimMemory,
  };
  const serverListener = listen(options.serverPort ?? DEFAULT_SERVER_PORT);
  let clientListener: Deno.Listener<Conn>;
  try {
    clientListener = listen(options.clientPort ?? DEFAULT_CLIENT_PORT);
  } catch (e) {
    serverListener.close();
    throw e;
  }
  const core = new Rendezvous(settings, serverListener, clientListener);
  const shutdown = () => core.shutdown();
  options.signal?.addEventListener("abort", shutdown, { once: true });
  if (options.signal?.aborted) shutdown();
  core.finished.then(() =>
    options.signal?.removeEventListener("abort", shutdown)
  );
  return {
    serverAddr: serverListener.addr as Deno.NetAddr,
    clientAddr: clientListener.addr as Deno.NetAddr,
    finished: core.finished,
    stats: () => core.stats(),
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

async function main(): Promise<never> {
  if (Deno.args[0] === "names") return await runNames(Deno.args.slice(1));
  return await runMain(
    RELAY_USAGE,
    () => parseRelayFlags(Deno.args),
    async (v) => {
      const options = v as unknown as RelayOptions & {
        data?: string;
        logLevel: string;
        logFormat: string;
      };
      await setupLogging(options.logLevel, options.logFormat);
      const log = getLogger(["tcp-relay", "relay"]);
      let store: NameStore | undefined;
      if (options.data) {
        store = await NameStore.open(options.data);
        options.names = store;
        log.info("Credentials from {path}: {count} owned names", {
          path: store.path,
          count: store.names().length,
        });
      }
      const signal = stopSignal();
      const relay = serveRelay({ ...options, signal });
      using _watch = store?.watch(() =>
        log.info("Credentials reloaded from {path}", { path: store!.path })
      );
      const hup = () =>
        store?.reload().then(
          () => log.info("Credentials reloaded"),
          (e) =>
            log.error("Cannot reload credentials: {error}", {
              error: String(e),
            }),
        );
      if (store) {
        Deno.addSignalListener("SIGHUP", hup);
      }
      log.info("Relay listening: servers on {server}, clients on {client}", {
        server: `${relay.serverAddr.hostname}:${relay.serverAddr.port}`,
        client: `${relay.clientAddr.hostname}:${relay.clientAddr.port}`,
        tls: !!options.tls,
      });
      await relay.finished;
      if (store) Deno.removeSignalListener("SIGHUP", hup);
      log.info("Relay stopped");
    },
  );
}

if (import.meta.main) main();
