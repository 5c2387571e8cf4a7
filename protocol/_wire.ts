/**
 * The one home of the wire protocol: default ports, limits, timeouts, message
 * words, and the readers and writers of handshake lines, for the relay and the
 * helpers alike.
 *
 * The bytes are the seed's (v1), kept byte for byte (see README, "Protocol"):
 *
 * ```text
 * server port:  relay> SERVER        client port:  relay> CLIENT
 *               server> CONNECT                    client> <name>
 *               server> <name>                     relay> CONNECTED | NOEXIST | OFFLINE
 *               relay> CONNECTED  (when paired; then application data)
 * ```
 *
 * Every message is one line of ASCII ending in `\n`; a trailing `\r` is
 * tolerated; commands are compared case-insensitively.
 *
 * @module
 */

import { RelayError } from "./_errors.ts";
import denoJson from "../deno.json" with { type: "json" };

/** The package version, from `deno.json`. */
export const VERSION: string = denoJson.version;

/** The relay's port for servers (machines that offer a name). */
export const DEFAULT_SERVER_PORT = 8010;
/** The relay's port for clients (who ask for a name). */
export const DEFAULT_CLIENT_PORT = 9010;
/** The port a cluster node's peers link to (`relay.ts --peer-port`). */
export const DEFAULT_PEER_PORT = 7010;
/** Longest handshake line, in bytes, `\n` included. */
export const MAX_LINE = 256;
/** How long the relay gives a connection to finish its handshake (ms). */
export const DEFAULT_HANDSHAKE_TIMEOUT = 10_000;
/** How long a client asking for a reserved name waits for a server (ms). */
export const DEFAULT_WAIT = 5_000;
/** How long active pairs may finish after a shutdown starts (ms). */
export const DEFAULT_DRAIN_TIMEOUT = 10_000;
/** How long a helper waits for the relay's answers (ms). */
export const DEFAULT_HELPER_TIMEOUT = 15_000;

/** The protocol's words, as sent on the wire (without `\n`). */
export const Word = {
  SERVER: "SERVER",
  CLIENT: "CLIENT",
  RESERVE: "RESERVE",
  RELEASE: "RELEASE",
  CONNECT: "CONNECT",
  STOP: "STOP",
  OK: "OK",
  USED: "USED",
  UNKNOWN_COMMAND: "UNKNOWN COMMAND",
  NOEXIST: "NOEXIST",
  OFFLINE: "OFFLINE",
  CONNECTED: "CONNECTED",
  // protocol v2
  PARKED: "PARKED",
  PING: "PING",
  PONG: "PONG",
  ERROR: "ERROR",
  // protocol v2, on-demand parking (a server's control connection)
  WATCH: "WATCH",
  WATCHING: "WATCHING",
  NEED: "NEED",
} as const;

/**
 * Why the relay refused a connection: the word after `ERROR` in a v2 answer
 * (`ERROR LIMIT too many connections`), and the label of the refusal
 * metrics. `NOEXIST`, `OFFLINE`, `USED` and `UNKNOWN` stand for the v1 words
 * of the same meaning; `CLOSED` is a connection closed without an answer.
 */
export type RefusalCode =
  | "LIMIT"
  | "RATE"
  | "AUTH"
  | "NAME"
  | "PROTOCOL"
  | "UNKNOWN"
  | "TIMEOUT"
  | "NOEXIST"
  | "OFFLINE"
  | "USED"
  | "CLOSED";

/** Every {@linkcode RefusalCode}, in a fixed order. */
export const REFUSAL_CODES: readonly RefusalCode[] = [
  "LIMIT",
  "RATE",
  "AUTH",
  "NAME",
  "PROTOCOL",
  "UNKNOWN",
  "TIMEOUT",
  "NOEXIST",
  "OFFLINE",
  "USED",
  "CLOSED",
];

/** `ERROR <code> <text>`, the v2 refusal line (without `\n`). */
export function errorLine(code: RefusalCode, text: string): string {
  return `${Word.ERROR} ${code} ${text}`;
}

/** The code and text of an `ERROR` line, or `undefined` for another line. */
export function parseErrorLine(
  text: string,
): { code: string; text: string } | undefined {
  const m = /^ERROR (\S+) ?(.*)$/i.exec(text);
  return m ? { code: m[1].toUpperCase(), text: m[2] } : undefined;
}

/**
 * The refusal code of a `reply` line the relay sends before closing (an
 * `ERROR` line or a v1 word), or `CLOSED` when it sends none.
 */
export function replyCode(reply: string | undefined): RefusalCode {
  if (reply === undefined) return "CLOSED";
  const code = parseErrorLine(reply)?.code ??
    (reply === Word.UNKNOWN_COMMAND ? "UNKNOWN" : reply);
  return (REFUSAL_CODES as readonly string[]).includes(code)
    ? code as RefusalCode
    : "PROTOCOL";
}

/** The first line of a v2 peer, and the start of the relay's answer. */
export const HELLO_V2 = "HELLO 2";
/** How often the relay probes parked v2 connections (ms). */
export const DEFAULT_HEARTBEAT = 15_000;

/**
 * On-demand parking: the shortest time between two `NEED` lines for one name
 * (ms). The first change is sent at once; later ones at most this often, the
 * last always.
 */
export const NEED_INTERVAL = 5;

/**
 * `COMMAND <name> [<proof>]`: a v2 server's request line. Without a proof it
 * needs no nonce, so it may go in the same write as `HELLO 2`.
 */
export function requestLine(
  command: string,
  name: string,
  proof?: string,
): string {
  return proof ? `${command} ${name} ${proof}` : `${command} ${name}`;
}

/** `WATCHING <heartbeat s>`: the relay's acknowledgement of a `WATCH`. */
export function watchingLine(heartbeatMs: number): string {
  return `${Word.WATCHING} ${heartbeatMs / 1000}`;
}

/** The heartbeat (ms) of a `WATCHING` line, or `undefined` for another line. */
export function parseWatching(text: string): number | undefined {
  const m = /^WATCHING(?: (\d+(?:\.\d+)?))?$/i.exec(text);
  if (!m) return undefined;
  return (Number(m[1]) || DEFAULT_HEARTBEAT / 1000) * 1000;
}

/** `NEED <n>`: `n` clients wait for the name beyond its parked connections. */
export function needLine(n: number): string {
  return `${Word.NEED} ${n}`;
}

/** The count of a `NEED` line, or `undefined` for another line. */
export function parseNeed(text: string): number | undefined {
  const m = /^NEED (\d{1,9})$/i.exec(text);
  return m ? Number(m[1]) : undefined;
}

const encoder = new TextEncoder();
const wordLines = new Map<string, Uint8Array>(
  Object.values(Word).map((w) => [w, encoder.encode(w + "\n")]),
);

/** The bytes of `text` as one protocol line (`\n` added); words are cached. */
export function line(text: string): Uint8Array {
  return wordLines.get(text) ?? encoder.encode(text + "\n");
}

/**
 * Why a name is not acceptable, or `undefined` if it is: 1 to 200 visible
 * ASCII characters (`!` to `~`: no spaces, so that v2 requests are one line).
 */
export function nameProblem(name: string): string | undefined {
  if (name.length === 0) return "empty name";
  if (name.length > 200) return "name longer than 200 characters";
  if (!/^[\x21-\x7e]+$/.test(name)) {
    return "name with spaces or non-printable characters";
  }
}

/** A value that can be written to and read from, as `Deno.Conn` and the stdio streams. */
export interface ByteStream {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
}

/** Writes all of `bytes` (a `write` may take only part of it). */
export async function writeAll(
  w: Pick<ByteStream, "write">,
  bytes: Uint8Array,
): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await w.write(bytes.subarray(off));
}

function decodeLine(bytes: Uint8Array, end: number): string {
  if (end > 0 && bytes[end - 1] === 13) end--; // tolerate "\r\n"
  let s = "";
  for (let i = 0; i < end; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

function tooLong(): RelayError {
  return new RelayError("PROTOCOL", `Line longer than ${MAX_LINE} bytes`);
}

/**
 * Reads handshake lines on the relay's side: it reads ahead in chunks, and
 * what it read past the last line is handed on with {@linkcode rest} so that
 * no byte of application data is lost.
 */
export class LineReader {
  #conn: ByteStream;
  #buf = new Uint8Array(2 * MAX_LINE);
  #start = 0;
  #end = 0;

  constructor(conn: ByteStream) {
    this.#conn = conn;
  }

  /** The next line without its ending, or `null` at end of stream. */
  async readLine(): Promise<string | null> {
    for (;;) {
      const nl = this.#buf.subarray(this.#start, this.#end).indexOf(10);
      if (nl >= 0) {
        const text = decodeLine(this.#buf.subarray(this.#start), nl);
        this.#start += nl + 1;
        return text;
      }
      if (this.#end - this.#start >= MAX_LINE) throw tooLong();
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const n = await this.#conn.read(this.#buf.subarray(this.#end));
      if (n === null) return null;
      this.#end += n;
    }
  }

  /** The bytes read past the last line (a copy; empty if none). */
  rest(): Uint8Array {
    return this.#buf.slice(this.#start, this.#end);
  }
}

/**
 * Reads one line on a helper's side, one byte at a time, so that not a byte
 * past the `\n` is consumed: the connection is handed to the user afterwards.
 * Returns `null` at end of stream.
 */
export async function readLineExact(conn: ByteStream): Promise<string | null> {
  const buf = new Uint8Array(MAX_LINE);
  let len = 0;
  for (;;) {
    const n = await conn.read(buf.subarray(len, len + 1));
    if (n === null) return len === 0 ? null : decodeLine(buf, len);
    if (buf[len] === 10) return decodeLine(buf, len);
    if (++len >= MAX_LINE) throw tooLong();
  }
}

/** Parses `HOST[:PORT]` (IPv6 as `[::1]:PORT`), with `port` as default. */
export function parseHostPort(
  text: string,
  port?: number,
): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\[\]]*))(?::(\d{1,5}))?$/.exec(text);
  const hostname = m?.[1] ?? m?.[2];
  const p = m?.[3] !== undefined ? Number(m[3]) : port;
  if (!m || p === undefined || p > 65535) {
    throw new TypeError(
      `Cannot parse address "${text}": expected HOST${
        port === undefined ? ":PORT" : "[:PORT]"
      }`,
    );
  }
  return { hostname: hostname || "127.0.0.1", port: p };
}

/** `host:port` of an address, for messages and logs. */
export function formatAddr(addr: Deno.Addr): string {
  if (!("hostname" in addr)) return addr.transport;
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}
