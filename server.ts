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

import {
  checkOptions,
  type HelperOptions,
  type HostPort,
  refusal,
  type RelayConn,
  type Session,
  withRelay,
} from "./helpers/_dial.ts";
import {
  type ListenerState,
  type PoolOptions,
  RelayListener,
} from "./helpers/_listener.ts";
import { MultiListener } from "./helpers/_multi.ts";
import { DEFAULT_MAX_POOL, Unparked } from "./helpers/_demand.ts";
import { proof } from "./protocol/_auth.ts";
import { RelayError } from "./protocol/_errors.ts";
import {
  DEFAULT_HEARTBEAT,
  formatAddr,
  requestLine,
  Word,
} from "./protocol/_wire.ts";

export type {
  HelperOptions,
  RelayAddress,
  RelayConn,
} from "./helpers/_dial.ts";
export { type ListenerState, RelayListener };

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
  return requestLine(
    command,
    name,
    secret && proof(secret, s.nonce!, command, name),
  );
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
  return park(options) as Promise<RelayConn<O>>;
}

/**
 * {@linkcode accept}, telling `parked()` once the connection waits at the
 * relay. At each PING (v2), a connection that `stay()` no longer wants
 * answers `STOP`: the relay unparks it, and no client can have taken it
 * meanwhile (the relay pairs none while a PING is out). It rejects with
 * {@linkcode Unparked}.
 */
function park(
  options: ServerOptions,
  parked?: () => void,
  stay?: () => boolean,
): Promise<Deno.TcpConn | Deno.TlsConn> {
  // Without a proof to make, the request goes with HELLO 2: no nonce needed.
  const early = options.secret
    ? undefined
    : requestLine(Word.CONNECT, options.name);
  return withRelay(options, "server", async (s) => {
    if (s.nonce === undefined) {
      await s.write(Word.CONNECT, options.name);
      s.deadline();
      parked?.(); // as far as a v1 relay tells
      await s.expect(Word.CONNECTED);
    } else {
      if (!early) await s.write(request(s, Word.CONNECT, options));
      const answer = await s.read();
      const m = /^PARKED(?: (\d+(?:\.\d+)?))?$/i.exec(answer);
      if (!m) throw refusal(answer, s.where, options.name);
      parked?.();
      const beat = (Number(m[1]) || DEFAULT_HEARTBEAT / 1000) * 1000;
      for (;;) {
        s.deadline(3 * beat); // two heartbeats missed, and some slack
        const got = await s.read();
        if (got.toUpperCase() === Word.CONNECTED) break;
        if (got.toUpperCase() !== Word.PING) {
          throw refusal(got, s.where, options.name);
        }
        if (stay && !stay()) {
          await s.write(Word.STOP);
          throw new Unparked();
        }
        await s.write(Word.PONG);
      }
      s.deadline();
    }
    if ("setNoDelay" in s.conn) s.conn.setNoDelay(true);
    return s.conn;
  }, { early });
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
  /**
   * Connections kept waiting at the relay (at each relay, given several).
   * Default `2`.
   */
  pool?: number;
  /**
   * Connections parked or being dialed at most when a crowd comes (on-demand
   * parking, protocol v2): the relay tells how many clients wait and that
   * many more are opened at once, in parallel, up to this many; once the
   * crowd is gone the pool shrinks back to `pool`. At least `pool`; equal
   * to it, a fixed pool. Against a relay without on-demand parking (a v1
   * relay, or an older v2 one), a fixed pool of `pool`. Default `64` (or
   * `pool`, if that is more).
   */
  maxPool?: number;
  /**
   * How long after the relay last told of waiting clients the connections
   * opened on demand are closed, in ms. Default `5000`.
   */
  shrinkAfter?: number;
  /** First pause before reconnecting to a relay that is away, in ms. Default `100`. */
  minBackoff?: number;
  /**
   * Longest pause between reconnections, in ms: a relay back after a restart
   * is found again within about this long. Default `5000`.
   */
  maxBackoff?: number;
}

/**
 * Keeps `pool` connections waiting at the relay under `name`, replaces each
 * one a client takes at once, and reconnects with exponential backoff and
 * jitter while the relay is away: a relay restart needs no server restart.
 * When more clients come at once than are parked, a relay that speaks
 * on-demand parking says how many wait, and up to `maxPool` connections are
 * opened at once; they are closed again once the crowd is gone.
 * The listener's `ready` resolves once a connection is parked, and its
 * `state` and `lastError` tell whether the relay is reachable; a failure
 * that retrying cannot mend (a wrong secret, a certificate not trusted, not
 * a relay) rejects `ready`, ends the `for await` with the error and closes
 * the listener. Leaving a `for await` early closes it too.
 *
 * Given several relays (`relay: ["a.example.com", "b.example.com"]`), it
 * keeps `pool` connections parked at each of them and yields the clients of
 * all: a relay that goes away is retried with backoff while the others
 * serve on, and one that refuses for good is given up alone. It is parked
 * while any relay has it parked, and fails only once every relay failed.
 *
 * @example Offering one service at two relays
 * ```ts
 * import { listen } from "jsr:@x/tcp-relay";
 *
 * using listener = listen({ relay: ["a.example.com", "b.example.com"], name: "echo" });
 * for await (const conn of listener) {
 *   conn.readable.pipeTo(conn.writable).catch(() => {});
 * }
 * ```
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
  const relays = checkOptions(options, "server");
  const pool = options.pool ?? 2;
  if (!Number.isInteger(pool) || pool < 1 || pool > 1000) {
    throw new RangeError(
      `options.pool must be a whole number from 1 to 1000, not ${pool}`,
    );
  }
  const maxPool = options.maxPool ?? Math.max(DEFAULT_MAX_POOL, pool);
  if (!Number.isInteger(maxPool) || maxPool < pool || maxPool > 1000) {
    throw new RangeError(
      `options.maxPool must be a whole number from options.pool (${pool}) to 1000, not ${maxPool}`,
    );
  }
  for (const key of ["minBackoff", "maxBackoff", "shrinkAfter"] as const) {
    const ms = options[key];
    if (ms !== undefined && !(typeof ms === "number" && ms >= 0)) {
      throw new RangeError(`options.${key} must be a number of ms >= 0`);
    }
  }
  const o: PoolOptions = { ...options, pool, maxPool };
  /** The listener at one relay. */
  const at = (relay: HostPort, opts: PoolOptions) =>
    new RelayListener<RelayConn<O>>(
      opts,
      formatAddr({ transport: "tcp", ...relay }),
      (o, parked, stay) => park(o, parked, stay) as Promise<RelayConn<O>>,
    );
  if (relays.length === 1) return at(relays[0], o);
  // Several relays: the whole pool at each, merged (helpers/_multi.ts).
  return new MultiListener<RelayConn<O>>(
    o,
    // the set closes them (an aborted signal: at once, before they dial)
    relays.map((relay) =>
      at(relay, {
        ...o,
        relay,
        signal: options.signal?.aborted ? options.signal : undefined,
      })
    ),
  );
}

/** The executable: its code is loaded only when run, not by importing the library. */
async function main(): Promise<never> {
  const { serverMain } = await import("./cli/_server.ts");
  return await serverMain(Deno.args);
}

if (import.meta.main) main();
