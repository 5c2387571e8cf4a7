/**
 * The helpers' side of a handshake: dial the relay, read its lines one byte
 * at a time (so the connection handed to the user holds every byte of
 * application data), bounded by a timeout and an AbortSignal.
 *
 * @module
 */

import { RelayError, type RelayErrorCode } from "./_errors.ts";
import {
  DEFAULT_CLIENT_PORT,
  DEFAULT_HELPER_TIMEOUT,
  DEFAULT_SERVER_PORT,
  line,
  nameProblem,
  parseHostPort,
  readLineExact,
  Word,
  writeAll,
} from "./_protocol.ts";

/** Options every helper takes. */
export interface HelperOptions {
  /**
   * The relay, as `HOST` or `HOST:PORT` (`[::1]:PORT` for IPv6). The port
   * defaults to 8010 for servers and 9010 for clients.
   */
  relay: string;
  /** The name offered or asked for: 1 to 200 printable ASCII characters. */
  name: string;
  /** Aborting it closes the connection and rejects with `signal.reason`. */
  signal?: AbortSignal;
  /**
   * How long the relay may take to answer, in ms (a server waiting to be
   * paired waits without limit). Default `15000`.
   */
  timeout?: number;
}

/** One handshake: the connection and the means to read and write lines. */
export interface Session {
  conn: Deno.TcpConn;
  /** Reads the next line; the end of the stream is a `CLOSED` error. */
  read(): Promise<string>;
  /** Writes lines, all in one write. */
  write(...words: string[]): Promise<void>;
  /** Reads the greeting word (`SERVER` or `CLIENT`), or fails. */
  expect(word: string): Promise<void>;
  /** Stops the timeout (while a server waits to be paired). */
  untimed(): void;
}

const CODES: Record<string, RelayErrorCode> = {
  [Word.NOEXIST]: "NOEXIST",
  [Word.OFFLINE]: "OFFLINE",
  [Word.USED]: "USED",
  [Word.UNKNOWN_COMMAND]: "UNKNOWN_COMMAND",
};

/** The error for an unexpected `reply` from the relay at `where`. */
export function refusal(
  reply: string,
  where: string,
  name: string,
): RelayError {
  const word = reply.toUpperCase();
  const code = CODES[word] ?? "PROTOCOL";
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

/**
 * Dials the relay's server or client port and runs `body` on the connection
 * (which stays open unless `body` closes it). On failure the connection is
 * closed and the error becomes a {@linkcode RelayError}, or `signal.reason`
 * on abort.
 */
export async function withRelay<T>(
  options: HelperOptions,
  role: "server" | "client",
  body: (session: Session) => Promise<T>,
): Promise<T> {
  checkOptions(options);
  const { signal } = options;
  signal?.throwIfAborted();
  const addr = parseHostPort(
    options.relay,
    role === "server" ? DEFAULT_SERVER_PORT : DEFAULT_CLIENT_PORT,
  );
  const where = `${addr.hostname}:${addr.port}`;
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ ...addr, signal });
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
  let timer: ReturnType<typeof setTimeout> | undefined = setTimeout(() => {
    timedOut = true;
    close();
  }, options.timeout ?? DEFAULT_HELPER_TIMEOUT);
  signal?.addEventListener("abort", close);
  const session: Session = {
    conn,
    async read() {
      const text = await readLineExact(conn);
      if (text === null) {
        throw new RelayError("CLOSED", `Relay ${where} closed the connection`);
      }
      return text;
    },
    async write(...words) {
      await writeAll(conn, line(words.join("\n")));
    },
    async expect(word) {
      const got = await session.read();
      if (got.toUpperCase() !== word) throw refusal(got, where, options.name);
    },
    untimed() {
      clearTimeout(timer);
      timer = undefined;
    },
  };
  try {
    return await body(session);
  } catch (e) {
    close();
    signal?.throwIfAborted();
    if (timedOut) {
      throw new RelayError("TIMEOUT", `Relay ${where} did not answer in time`);
    }
    if (e instanceof RelayError) throw e;
    throw new RelayError(
      "CLOSED",
      `Connection to relay ${where} failed: ${e}`,
      {
        cause: e,
      },
    );
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", close);
  }
}
