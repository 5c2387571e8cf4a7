/**
 * The helpers' side of a handshake: dial the relay (TCP or TLS), negotiate
 * protocol v2 or fall back to v1 for a seed relay, and read the relay's lines
 * one byte at a time (so the connection handed to the user holds every byte
 * of application data), bounded by a timeout and an AbortSignal.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { RelayError, type RelayErrorCode } from "../protocol/_errors.ts";
import {
  DEFAULT_CLIENT_PORT,
  DEFAULT_HELPER_TIMEOUT,
  DEFAULT_SERVER_PORT,
  HELLO_V2,
  line,
  nameProblem,
  parseHostPort,
  readLineExact,
  Word,
  writeAll,
} from "../protocol/_wire.ts";

const log = getLogger(["tcp-relay", "helper"]);

/** Options every helper takes. */
export interface HelperOptions {
  /**
   * The relay, as `HOST` or `HOST:PORT` (`[::1]:PORT` for IPv6). The port
   * defaults to 8010 for servers and 9010 for clients.
   */
  relay: string;
  /** The name offered or asked for: 1 to 200 visible ASCII characters, no spaces. */
  name: string;
  /** Connect to the relay over TLS. Default `false`. */
  tls?: boolean;
  /** Certificates (PEM) to trust for TLS besides the system's. */
  caCerts?: string[];
  /** Aborting it closes the connection and rejects with `signal.reason`. */
  signal?: AbortSignal;
  /**
   * How long the relay may take to answer, in ms (a server waiting to be
   * paired waits without limit, watched by heartbeats). Default `15000`.
   */
  timeout?: number;
}

/** A relay connection: plain TCP, or TLS. */
export type Conn = Deno.TcpConn | Deno.TlsConn;

/** The connection a helper resolves with: `Deno.TlsConn` with `tls: true`, else `Deno.TcpConn`. */
export type RelayConn<O extends { tls?: boolean }> = O extends { tls: true }
  ? Deno.TlsConn
  : Deno.TcpConn;

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

const CODES: Record<string, RelayErrorCode> = {
  [Word.NOEXIST]: "NOEXIST",
  [Word.OFFLINE]: "OFFLINE",
  [Word.USED]: "USED",
  [Word.UNKNOWN_COMMAND]: "UNKNOWN_COMMAND",
  AUTH: "AUTH",
  LIMIT: "LIMIT",
  RATE: "LIMIT",
  TIMEOUT: "TIMEOUT",
};

/** The error for an unexpected `reply` from the relay at `where`. */
export function refusal(
  reply: string,
  where: string,
  name: string,
): RelayError {
  const error = /^ERROR (\S+) ?(.*)$/i.exec(reply);
  if (error) {
    return new RelayError(
      CODES[error[1].toUpperCase()] ?? "PROTOCOL",
      `Relay ${where} refused: ${error[2] || error[1]}`,
    );
  }
  const code = CODES[reply.toUpperCase()] ?? "PROTOCOL";
  const what: Record<string, string> = {
    NOEXIST: `No name "${name}" at relay ${where}`,
    OFFLINE: `No server for "${name}" at relay ${where}`,
    USED: `Name "${name}" is already reserved at relay ${where}`,
    UNKNOWN_COMMAND: `Relay ${where} does not know the command`,
  };
  return new RelayError(
    code,
    what[code] ??
      `Unexpected answer from relay ${where}: ${
        JSON.stringify(reply.slice(0, 80))
      }`,
  );
}

/** Checks the options every helper takes; TypeError/RangeError when bad. */
export function checkOptions(options: HelperOptions): void {
  if (typeof options?.relay !== "string") {
    throw new TypeError("options.relay must be a string like host:port");
  }
  if (typeof options.name !== "string") {
    throw new TypeError("options.name must be a string");
  }
  const problem = nameProblem(options.name);
  if (problem) throw new RangeError(`Invalid name: ${problem}`);
  if (
    options.timeout !== undefined &&
    !(typeof options.timeout === "number" && options.timeout > 0)
  ) throw new RangeError("options.timeout must be a number of ms > 0");
}

/** Relays that answered `HELLO 2` as a v1 relay does, and when. */
const v1Relays = new Map<string, number>();
const V1_MEMORY = 5 * 60_000;

class FallBack extends Error {}

/**
 * Dials the relay's server or client port, reads its greeting, negotiates v2
 * (or, against a v1 relay, dials again and speaks v1), and runs `body` (the
 * connection stays open unless `body` closes it). On failure the connection
 * is closed and the error becomes a {@linkcode RelayError}, or
 * `signal.reason` on abort.
 */
export async function withRelay<T>(
  options: HelperOptions,
  role: "server" | "client",
  body: (session: Session) => Promise<T>,
): Promise<T> {
  checkOptions(options);
  const addr = parseHostPort(
    options.relay,
    role === "server" ? DEFAULT_SERVER_PORT : DEFAULT_CLIENT_PORT,
  );
  const where = `${addr.hostname}:${addr.port}`;
  const key = `${role} ${where} ${options.tls ? "tls" : "tcp"}`;
  const since = v1Relays.get(key);
  if (since === undefined || Date.now() - since > V1_MEMORY) {
    try {
      return await dial(options, addr, where, role, true, body);
    } catch (e) {
      if (!(e instanceof FallBack)) throw e;
      v1Relays.set(key, Date.now());
      log.info(
        "Relay {relay} speaks protocol v1 only: owned and private names are not available",
        {
          relay: where,
        },
      );
    }
  }
  return await dial(options, addr, where, role, false, body);
}

async function dial<T>(
  options: HelperOptions,
  addr: { hostname: string; port: number },
  where: string,
  role: "server" | "client",
  v2: boolean,
  body: (session: Session) => Promise<T>,
): Promise<T> {
  const { signal } = options;
  signal?.throwIfAborted();
  let conn: Conn;
  try {
    conn = options.tls
      ? await Deno.connectTls({ ...addr, caCerts: options.caCerts })
      : await Deno.connect({ ...addr, signal });
  } catch (e) {
    signal?.throwIfAborted();
    throw new RelayError("UNREACHABLE", `Cannot reach relay at ${where}`, {
      cause: e,
    });
  }
  let timedOut = false;
  const close = () => {
    try {
      conn.close();
    } catch {
      // closed already
    }
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const session: Session = {
    conn,
    where,
    async read() {
      const text = await readLineExact(conn);
      if (text === null) {
        throw new RelayError("CLOSED", `Relay ${where} closed the connection`);
      }
      return text;
    },
    async write(...lines) {
      await writeAll(conn, line(lines.join("\n")));
    },
    async expect(word) {
      const got = await session.read();
      if (got.toUpperCase() !== word) throw refusal(got, where, options.name);
    },
    deadline(ms) {
      clearTimeout(timer);
      timer = ms === undefined ? undefined : setTimeout(() => {
        timedOut = true;
        close();
      }, ms);
    },
  };
  session.deadline(options.timeout ?? DEFAULT_HELPER_TIMEOUT);
  signal?.addEventListener("abort", close);
  try {
    if (options.tls) {
      await (conn as Deno.TlsConn).handshake().catch((e) => {
        throw new RelayError(
          "UNREACHABLE",
          `TLS with relay at ${where} failed: ${e.message}`,
          { cause: e },
        );
      });
    }
    await session.expect(role === "server" ? Word.SERVER : Word.CLIENT);
    if (v2) {
      await session.write(HELLO_V2);
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
      throw new RelayError("TIMEOUT", `Relay ${where} did not answer in time`);
    }
    if (e instanceof RelayError) throw e;
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
