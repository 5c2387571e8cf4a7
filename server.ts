/**
 * The server's side: offer a name at a relay and take the clients that ask
 * for it, each as a normal `Deno.TcpConn`. Library and executable.
 *
 * ```sh
 * # expose the local SSH server as "home-ssh"
 * deno run -A jsr:@x/tcp-relay/server --relay relay.example.com --name home-ssh --to 127.0.0.1:22
 * ```
 *
 * @example Serving every client of a name
 * ```ts
 * import { listen } from "jsr:@x/tcp-relay/server";
 *
 * using listener = listen({ relay: "relay.example.com", name: "echo" });
 * for await (const conn of listener) {
 *   conn.readable.pipeTo(conn.writable).catch(() => {});
 * }
 * ```
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  checkOptions,
  type HelperOptions,
  refusal,
  type RelayConn,
  type Session,
  withRelay,
} from "./helpers/_dial.ts";
import { proof } from "./protocol/_auth.ts";
import { RelayError } from "./protocol/_errors.ts";
import {
  DEFAULT_HEARTBEAT,
  formatAddr,
  nameProblem,
  parseHostPort,
  Word,
} from "./protocol/_wire.ts";
import { pipePair } from "./datapath/_pipe.ts";
import { Source } from "./datapath/_source.ts";
import {
  COMMON_OPTIONS,
  integer,
  parseFlags,
  runMain,
  setupLogging,
  stopSignal,
  TLS_OPTIONS,
  tlsOptions,
  UsageError,
} from "./cli/_common.ts";

export type { HelperOptions, RelayConn } from "./helpers/_dial.ts";

const log = getLogger(["tcp-relay", "server"]);

/** Options of the server's helpers. */
export interface ServerOptions extends HelperOptions {
  /**
   * The owner's secret of an owned name (protocol v2): proves, without
   * sending it, that this server may use the name.
   */
  secret?: string;
}

/** What {@linkcode reserve} learned. */
export interface ReserveResult {
  /** The owner's secret, when the relay's open registration made the caller the name's owner. */
  secret?: string;
}

/** `COMMAND name [proof]`: a v2 request line. */
function request(s: Session, command: string, options: ServerOptions): string {
  const { name, secret } = options;
  return secret
    ? `${command} ${name} ${proof(secret, s.nonce!, command, name)}`
    : `${command} ${name}`;
}

/**
 * Offers `name` at the relay and waits until a client asks for it: one
 * connection per call, as the seed's `server.accept`. The name is reserved if
 * it was not. Under protocol v2 the relay acknowledges the parking and probes
 * it (`PING`); a relay silent for three of its heartbeats fails the call with
 * `TIMEOUT`. A TCP connection has `setNoDelay(true)`; every byte read from
 * it is the client's.
 *
 * @example Taking one client
 * ```ts
 * import { accept } from "jsr:@x/tcp-relay";
 *
 * const conn = await accept({ relay: "relay.example.com", name: "echo" });
 * await conn.readable.pipeTo(conn.writable);
 * ```
 */
export function accept<O extends ServerOptions>(
  options: O,
): Promise<RelayConn<O>> {
  return withRelay(options, "server", async (s) => {
    if (s.nonce === undefined) {
      await s.write(Word.CONNECT, options.name);
      s.deadline();
      await s.expect(Word.CONNECTED);
    } else {
      await s.write(request(s, Word.CONNECT, options));
      const parked = await s.read();
      const m = /^PARKED(?: (\d+(?:\.\d+)?))?$/i.exec(parked);
      if (!m) throw refusal(parked, s.where, options.name);
      const beat = (Number(m[1]) || DEFAULT_HEARTBEAT / 1000) * 1000;
      for (;;) {
        s.deadline(3 * beat); // two heartbeats missed, and some slack
        const got = await s.read();
        if (got.toUpperCase() === Word.CONNECTED) break;
        if (got.toUpperCase() !== Word.PING) {
          throw refusal(got, s.where, options.name);
        }
        await s.write(Word.PONG);
      }
      s.deadline();
    }
    if ("setNoDelay" in s.conn) s.conn.setNoDelay(true);
    return s.conn as RelayConn<O>;
  });
}

async function command(options: ServerOptions, word: string): Promise<string> {
  return await withRelay(options, "server", async (s) => {
    await s.write(
      s.nonce === undefined
        ? `${word}\n${options.name}`
        : request(s, word, options),
    );
    // The seed's (v1) relay answers nothing on success and closes; a v2
    // relay always answers.
    const reply = await s.read().catch((e) => {
      const v1 = s.nonce === undefined;
      if (v1 && e instanceof RelayError && e.code === "CLOSED") return Word.OK;
      throw e;
    });
    s.conn.close();
    const [ok, secret] = reply.split(" ");
    if (ok.toUpperCase() !== Word.OK) {
      throw refusal(reply, s.where, options.name);
    }
    return secret;
  });
}

/**
 * Reserves `name` at the relay, so that clients asking for it wait for a
 * server instead of hearing `NOEXIST`. Rejects with a `USED` {@linkcode RelayError}
 * if it is reserved already. Where the relay allows open registration, the
 * first reservation makes the caller the name's owner: keep the `secret` it
 * resolves with (it is sent only once) and pass it to the other helpers.
 *
 * @example Reserving a name, and owning it where the relay allows
 * ```ts
 * import { reserve } from "jsr:@x/tcp-relay";
 *
 * const { secret } = await reserve({ relay: "relay.example.com", name: "home-ssh" });
 * if (secret) console.log("keep this secret:", secret);
 * ```
 */
export async function reserve(options: ServerOptions): Promise<ReserveResult> {
  const secret = await command(options, Word.RESERVE);
  return secret ? { secret } : {};
}

/**
 * Releases `name` at the relay: its waiting connections are closed and
 * clients hear `NOEXIST` again (an owned name stays owned).
 *
 * @example Giving a name back
 * ```ts
 * import { release } from "jsr:@x/tcp-relay";
 *
 * await release({ relay: "relay.example.com", name: "home-ssh" });
 * ```
 */
export async function release(options: ServerOptions): Promise<void> {
  await command(options, Word.RELEASE);
}

/** Options of {@linkcode listen}. */
export interface ListenOptions extends ServerOptions {
  /** Connections kept waiting at the relay. Default `2`. */
  pool?: number;
  /** First pause before reconnecting to a relay that is away, in ms. Default `100`. */
  minBackoff?: number;
  /** Longest pause between reconnections, in ms. Default `30000`. */
  maxBackoff?: number;
}

export { RelayListener } from "./helpers/_listener.ts";
import { RelayListener } from "./helpers/_listener.ts";

/**
 * Keeps `pool` connections waiting at the relay under `name`, replaces each
 * one a client takes at once, and reconnects with exponential backoff and
 * jitter while the relay is away: a relay restart needs no server restart.
 *
 * @example Accepting clients until Ctrl-C
 * ```ts
 * import { listen } from "jsr:@x/tcp-relay";
 *
 * const ac = new AbortController();
 * Deno.addSignalListener("SIGINT", () => ac.abort());
 * for await (const conn of listen({ relay: "relay.example.com", name: "echo", signal: ac.signal })) {
 *   conn.readable.pipeTo(conn.writable).catch(() => {});
 * }
 * ```
 */
export function listen<O extends ListenOptions>(
  options: O,
): RelayListener<RelayConn<O>> {
  checkOptions(options);
  const pool = options.pool ?? 2;
  if (!Number.isInteger(pool) || pool < 1 || pool > 1000) {
    throw new RangeError(
      `options.pool must be a whole number from 1 to 1000, not ${pool}`,
    );
  }
  return new RelayListener<RelayConn<O>>(
    { ...options, pool },
    (o) => accept(o) as Promise<RelayConn<O>>,
  );
}

const USAGE = `tcp-relay server: exposes a local TCP service through a relay

Usage: deno run -A jsr:@x/tcp-relay/server --relay HOST[:PORT] --name NAME --to HOST:PORT [options]

Options:
  --relay HOST[:PORT]   the relay (port default 8010)
  --name NAME           the name clients ask for
  --to HOST:PORT        the local service each client is connected to
  --pool N              connections kept waiting at the relay (default 2)
  --secret SECRET       the owner's secret of an owned name (protocol v2);
                        or set TCP_RELAY_SECRET, which ps does not show
  --tls                 reach the relay over TLS
  --ca FILE             trust this certificate (PEM) for TLS
  --log-level LEVEL     trace, debug, info, warning, error (default info)
  --log-format FORMAT   text or json (default text)
  -h, --help            show this help
  -V, --version         show the version`;

async function main(): Promise<never> {
  const options = {
    ...COMMON_OPTIONS,
    relay: { type: "string" },
    name: { type: "string" },
    to: { type: "string" },
    pool: { type: "string", default: "2" },
    secret: { type: "string" },
    ...TLS_OPTIONS,
  } as const;
  return await runMain(
    USAGE,
    () => parseFlags(Deno.args, options),
    async (v) => {
      for (const flag of ["relay", "name", "to"]) {
        if (typeof v[flag] !== "string") {
          throw new UsageError(
            `--${flag} is required`,
          );
        }
      }
      const bad = nameProblem(v.name as string);
      if (bad) throw new UsageError(`--name: ${bad}`);
      let to: { hostname: string; port: number };
      try {
        to = parseHostPort(v.to as string);
      } catch (e) {
        throw new UsageError(`--to: ${(e as Error).message}`);
      }
      const pool = integer("pool", v.pool as string, 1, 1000);
      await setupLogging(v["log-level"] as string, v["log-format"] as string);
      const name = v.name as string;
      const listener = listen({
        relay: v.relay as string,
        name,
        pool,
        secret: (v.secret as string | undefined) ??
          Deno.env.get("TCP_RELAY_SECRET"),
        ...tlsOptions(v),
        signal: stopSignal(),
      });
      log.info("Offering {name} at {relay}, forwarding to {to}", {
        name,
        relay: v.relay,
        to: `${to.hostname}:${to.port}`,
      });
      for await (const conn of listener) {
        Deno.connect(to).then((local) => {
          local.setNoDelay(true);
          log.info("Client for {name} connected to {to}", {
            name,
            to: formatAddr(local.remoteAddr),
          });
          return pipePair(conn, new Source(conn), local, new Source(local));
        }, (e) => {
          log.warn("Cannot reach {to}: {error}", {
            to: `${to.hostname}:${to.port}`,
            error: String(e),
          });
          conn.close();
        });
      }
      log.info("Stopped");
    },
  );
}

if (import.meta.main) main();
