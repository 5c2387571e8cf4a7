/**
 * The helpers' side of a handshake: dial the relay (TCP or TLS), negotiate
 * protocol v2 or fall back to v1 for a seed relay, and read the relay's lines
 * one byte at a time (so the connection handed to the user holds every byte
 * of application data), bounded by a timeout and an AbortSignal from the
 * first SYN to the relay's last answer.
 *
 * A v2 dial sends `HELLO 2` at once, without waiting for the relay's
 * greeting: one round trip fewer, and a TLS relay, hearing plain bytes,
 * closes at once instead of waiting for a handshake. A v1 (seed) relay reads
 * the line as a command or a name and answers as it did before. A request
 * that needs no nonce (no proof) may go in the same write (`early`): one
 * round trip fewer again.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { RelayError } from "../protocol/_errors.ts";
import {
  DEFAULT_HELPER_TIMEOUT,
  formatAddr,
  HELLO_V2,
  line,
  readLineExact,
  Word,
  writeAll,
} from "../protocol/_wire.ts";
import { eachRelay } from "./_multi.ts";
import {
  checkOptions,
  type Conn,
  type HelperOptions,
  type HostPort,
} from "./_options.ts";
import {
  isTlsRecord,
  noGreeting,
  refusal,
  speaksTls,
  tlsFailure,
  wrongPort,
} from "./_hints.ts";

export { refusal } from "./_hints.ts";
export {
  checkOptions,
  type Conn,
  type HelperOptions,
  type HostPort,
  type RelayAddress,
  type RelayConn,
} from "./_options.ts";

const log = getLogger(["tcp-relay", "helper"]);

/** One handshake: the connection and the means to read and write lines. */
export interface Session {
  conn: Conn;
  /** `host:port` of the relay, for messages. */
  where: string;
  /** The relay's nonce under protocol v2; `undefined` under v1. */
  nonce?: string;
  /** Reads the next line; the end of the stream is a `CLOSED` error. */
  read(): Promise<string>;
  /** Writes lines, all in one write. */
  write(...lines: string[]): Promise<void>;
  /** Reads a line and fails unless it is `word`. */
  expect(word: string): Promise<void>;
  /** Restarts the timeout with `ms`, or stops it (`undefined`). */
  deadline(ms?: number): void;
}

/** The longest wait for the relay's greeting, in ms (within `timeout`). */
const GREETING_TIMEOUT = 5_000;

/** Relays that answered `HELLO 2` as a v1 relay does, and when. */
const v1Relays = new Map<string, number>();
const V1_MEMORY = 5 * 60_000;

/** Connections handed out after a v1 handshake (a seed relay). */
const v1Conns = new WeakSet<Deno.Conn>();

/**
 * Whether `conn` came from a helper that spoke protocol v1 with the relay,
 * which is then a seed relay: one that closes both sides when one side ends,
 * so that a half-close loses the answer.
 */
export function isV1Session(conn: Deno.Conn): boolean {
  return v1Conns.has(conn);
}

class FallBack extends Error {}

/** How a dial goes besides its options. */
export interface DialHow {
  /**
   * A v2 request line sent with `HELLO 2`, in the same write, before the
   * nonce is known (so: one without a proof). The body then sends no
   * request of its own when the session has a nonce.
   */
  early?: string;
  /**
   * Speak v2 or nothing: against a v1 relay, reject with `UNKNOWN_COMMAND`
   * instead of dialing again in v1.
   */
  v2Only?: boolean;
}

/**
 * The (first) relay's address as `host:port` and the key it is remembered
 * by (a v1 relay, a relay without on-demand parking).
 */
export function relayKey(
  options: HelperOptions,
  role: "server" | "client",
): { where: string; key: string; addr: HostPort } {
  const addr = checkOptions(options, role)[0];
  return { addr, ...keyOf(options, addr, role) };
}

function keyOf(
  options: HelperOptions,
  addr: HostPort,
  role: "server" | "client",
): { where: string; key: string } {
  const where = formatAddr({ transport: "tcp", ...addr });
  return { where, key: `${role} ${where} ${options.tls ? "tls" : "tcp"}` };
}

/**
 * Dials the relay's server or client port, reads its greeting, negotiates v2
 * (or, against a v1 relay, dials again and speaks v1), and runs `body` (the
 * connection stays open unless `body` closes it). On failure the connection
 * is closed and the error becomes a {@linkcode RelayError}, or
 * `signal.reason` on abort. `timeout` bounds both dials together.
 *
 * Given several relays, it tries them in order (see `eachRelay`).
 */
export async function withRelay<T>(
  options: HelperOptions,
  role: "server" | "client",
  body: (session: Session) => Promise<T>,
  how: DialHow = {},
): Promise<T> {
  const relays = checkOptions(options, role);
  return await eachRelay(
    relays,
    options,
    role,
    (addr, started) =>
      withOne(options, addr, role, (s) => {
        started();
        return body(s);
      }, how),
  );
}

/** {@linkcode withRelay} at one relay, `addr`. */
async function withOne<T>(
  options: HelperOptions,
  addr: HostPort,
  role: "server" | "client",
  body: (session: Session) => Promise<T>,
  how: DialHow,
): Promise<T> {
  const { where, key } = keyOf(options, addr, role);
  const end = Date.now() + (options.timeout ?? DEFAULT_HELPER_TIMEOUT);
  const since = v1Relays.get(key);
  if (since === undefined || Date.now() - since > V1_MEMORY) {
    try {
      return await dial(options, addr, where, role, end, true, body, how);
    } catch (e) {
      if (!(e instanceof FallBack)) throw e;
      v1Relays.set(key, Date.now());
      log.info(
        "Relay {relay} speaks protocol v1 only: owned and private names are not available, and one side's end closes both",
        { relay: where },
      );
    }
  }
  if (how.v2Only) {
    throw new RelayError(
      "UNKNOWN_COMMAND",
      `Relay ${where} speaks protocol v1 only`,
    );
  }
  return await dial(options, addr, where, role, end, false, async (s) => {
    const result = await body(s);
    v1Conns.add(s.conn);
    return result;
  });
}

/** How far a dial got, for the messages of a timeout. */
type Phase = "connect" | "tls" | "greeting" | "answer";

/**
 * Opens the TCP connection, then TLS over it; `signal` aborts either.
 * `opened` hears of each connection as soon as it exists, and the phase.
 */
async function open(
  options: HelperOptions,
  addr: { hostname: string; port: number },
  where: string,
  signal: AbortSignal,
  opened: (conn: Conn, phase: Phase) => void,
): Promise<Conn> {
  let tcp: Deno.TcpConn;
  try {
    tcp = await Deno.connect({ ...addr, signal });
  } catch (e) {
    if (signal.aborted) throw e;
    const why = String((e as Error)?.message ?? e)
      .replace(/ \(os error \d+\)$/, "").toLowerCase();
    throw new RelayError(
      "UNREACHABLE",
      `Cannot reach relay at ${where}: ${why}`,
      {
        cause: e,
      },
    );
  }
  if (!options.tls) {
    opened(tcp, "greeting");
    return tcp;
  }
  opened(tcp, "tls");
  // Before TLS: Deno's TlsConn has no setNoDelay of its own.
  tcp.setNoDelay(true);
  const conn = await Deno.startTls(tcp, {
    hostname: addr.hostname,
    caCerts: options.caCerts,
  });
  opened(conn, "tls");
  try {
    await conn.handshake();
  } catch (e) {
    if (signal.aborted) throw e;
    throw tlsFailure(e, where);
  }
  opened(conn, "greeting");
  return conn;
}

async function dial<T>(
  options: HelperOptions,
  addr: { hostname: string; port: number },
  where: string,
  role: "server" | "client",
  end: number,
  v2: boolean,
  body: (session: Session) => Promise<T>,
  how: DialHow = {},
): Promise<T> {
  const { signal } = options;
  signal?.throwIfAborted();
  const tls = !!options.tls;
  const stop = new AbortController();
  let conn: Conn | undefined;
  let timedOut = false;
  const close = () => {
    stop.abort();
    try {
      conn?.close();
    } catch {
      // closed already
    }
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = (ms?: number) => {
    clearTimeout(timer);
    timer = ms === undefined ? undefined : setTimeout(() => {
      timedOut = true;
      close();
    }, Math.max(0, ms));
  };
  deadline(end - Date.now());
  signal?.addEventListener("abort", close);
  let phase = "connect" as Phase;
  try {
    conn = await open(options, addr, where, stop.signal, (c, p) => {
      conn = c;
      phase = p;
    });
    const session: Session = {
      conn,
      where,
      async read() {
        const text = await readLineExact(conn!);
        if (text === null) {
          throw new RelayError(
            "CLOSED",
            `Relay ${where} closed the connection`,
          );
        }
        return text;
      },
      async write(...lines) {
        await writeAll(conn!, line(lines.join("\n")));
      },
      async expect(word) {
        const got = await session.read();
        if (got.toUpperCase() !== word) throw refusal(got, where, options.name);
      },
      deadline,
    };
    // Pipelined: sent before the greeting arrives (see the module doc).
    const hello = v2
      ? session.write(HELLO_V2, ...how.early ? [how.early] : [])
      : Promise.resolve();
    hello.catch(() => {}); // a failed write shows in the reads below
    await greeting(session, role, tls, end);
    phase = "answer";
    if (v2) {
      await hello;
      const reply = await session.read();
      if (reply.toUpperCase().startsWith(`${HELLO_V2} `)) {
        session.nonce = reply.slice(HELLO_V2.length + 1);
      } else if (reply === Word.UNKNOWN_COMMAND || reply === Word.NOEXIST) {
        throw new FallBack();
      } else throw refusal(reply, where, options.name);
    }
    return await body(session);
  } catch (e) {
    close();
    if (e instanceof FallBack) throw e;
    signal?.throwIfAborted();
    if (timedOut) {
      if (phase === "greeting") throw noGreeting(where, tls, "TIMEOUT");
      throw new RelayError(
        "TIMEOUT",
        phase === "connect"
          ? `Cannot reach relay at ${where} in time`
          : phase === "tls"
          ? `TLS with relay at ${where} did not finish in time`
          : `Relay ${where} did not answer in time`,
      );
    }
    if (e instanceof RelayError) throw e;
    if (phase === "greeting") throw noGreeting(where, tls, "CLOSED", e);
    throw new RelayError(
      "CLOSED",
      `Connection to relay ${where} failed: ${e}`,
      { cause: e },
    );
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", close);
  }
}

/**
 * Reads the relay's greeting (`SERVER` or `CLIENT`) within
 * {@linkcode GREETING_TIMEOUT}, and tells the other port and TLS apart.
 */
async function greeting(
  s: Session,
  role: "server" | "client",
  tls: boolean,
  end: number,
): Promise<void> {
  const left = end - Date.now();
  if (left > GREETING_TIMEOUT) s.deadline(GREETING_TIMEOUT);
  let got: string;
  try {
    got = await s.read();
  } catch (e) {
    if (e instanceof RelayError && e.code === "CLOSED") {
      throw noGreeting(s.where, tls, "CLOSED");
    }
    throw e;
  }
  if (left > GREETING_TIMEOUT) s.deadline(end - Date.now());
  const want = role === "server" ? Word.SERVER : Word.CLIENT;
  const other = role === "server" ? Word.CLIENT : Word.SERVER;
  const word = got.toUpperCase();
  if (word === want) return;
  if (word === other) throw wrongPort(s.where, role);
  if (!tls && isTlsRecord(got)) throw speaksTls(s.where);
  throw refusal(got, s.where, "");
}
