/**
 * The relay's side of both handshakes, v1 (the seed's) and v2 (ours), up to
 * the request (what is asked for, under which name, with which proof) and
 * under a deadline; its last words to a peer it refuses, at admission too.
 * What the relay decides lives in `_rendezvous.ts`.
 *
 * v2 is negotiated by the peer: its first line is `HELLO 2`, which a v1
 * relay answers with `UNKNOWN COMMAND` (server port) or `NOEXIST` (client
 * port), so a v2 helper knows to fall back. A v2 relay answers
 * `HELLO 2 <nonce>`, and the request follows on one line. A v2 server may
 * also ask to `WATCH` a name (on-demand parking: see `_demand.ts`); a v1
 * server sending it hears `UNKNOWN COMMAND`, as in the seed.
 *
 * @module
 */

import { newNonce } from "../protocol/_auth.ts";
import { RelayError } from "../protocol/_errors.ts";
import {
  type ByteStream,
  HELLO_V2,
  line,
  LineReader,
  nameProblem,
  type RefusalCode,
  Word,
  writeAll,
} from "../protocol/_wire.ts";

/** A handshake the relay turns down: the line to answer (if any) and why. */
export class Refusal extends Error {
  /** The protocol line sent before closing, if any. */
  readonly reply?: string;
  /** The name asked for, when known. */
  readonly subject?: string;

  constructor(reply: string | undefined, reason: string, subject?: string) {
    super(reason);
    this.reply = reply;
    this.subject = subject;
  }
}

/** What a v2 peer negotiated: the relay's nonce and the peer's proof. */
export interface V2 {
  nonce: string;
  proof?: string;
}

/** A server's request (`WATCH`: v2 only, a control connection). */
export interface ServerRequest {
  command: "RESERVE" | "RELEASE" | "CONNECT" | "WATCH";
  name: string;
  /** Set for protocol v2. */
  v2?: V2;
  /** Bytes read past the request (application data a server sent early). */
  rest: Uint8Array;
}

/** A client's request. */
export interface ClientRequest {
  name: string;
  v2?: V2;
  rest: Uint8Array;
}

/** What a handshake learned so far (read by the relay's timeout). */
export interface HandshakeState {
  v2: boolean;
}

const COMMANDS = new Set<string>([Word.RESERVE, Word.RELEASE, Word.CONNECT]);
/** v2 knows one more: `WATCH`, for on-demand parking (see `_demand.ts`). */
const V2_COMMANDS = new Set<string>([...COMMANDS, Word.WATCH]);

/** A connection as the relay closes it: a stream, maybe TLS. */
type Closable = ByteStream & { close(): void };

/** Closes `conn`, which may be closed already. */
export function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch {
    // closed already
  }
}

/** How {@linkcode underDeadline} tells the relay how a handshake ended. */
export interface HandshakeEnd {
  /** The handshake is refused: why, the line to answer, the name asked for. */
  refuse(
    reason: string,
    reply?: string,
    name?: string,
    code?: RefusalCode,
  ): void;
  /** The peer ended the handshake (`STOP`, or closed): close it. */
  drop(): void;
}

/**
 * Runs a handshake (`read`, after TLS's own) on `conn` under a deadline of
 * `ms`: the request, or `undefined` if it was refused or ended (told to
 * `end`). At the deadline the peer hears `timeoutReply` (none if its TLS
 * handshake never finished).
 */
export async function underDeadline<T>(
  conn: Closable,
  ms: number,
  timeoutReply: (v2: boolean) => string,
  read: (state: HandshakeState) => Promise<T | null>,
  end: HandshakeEnd,
): Promise<T | undefined> {
  const state: HandshakeState = { v2: false };
  let timedOut = false, tlsPending = "handshake" in conn;
  const timer = setTimeout(() => {
    timedOut = true;
    // no line for a peer that never finished its TLS handshake
    const reply = tlsPending ? undefined : timeoutReply(state.v2);
    end.refuse("handshake timed out", reply, undefined, "TIMEOUT");
  }, ms);
  try {
    if (tlsPending) {
      await (conn as unknown as Deno.TlsConn).handshake();
      tlsPending = false;
    }
    const request = await read(state);
    if (timedOut) return; // refused at the deadline as the request came
    if (request === null) end.drop();
    return request ?? undefined;
  } catch (e) {
    if (timedOut) return;
    if (e instanceof Refusal) end.refuse(e.message, e.reply, e.subject);
    else end.refuse((e as Error).message);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Sends a last line and closes; a peer that does not take even that within
 * a second (a full window, a TLS handshake never made) is closed anyway.
 */
export function answerAndClose(conn: Closable, text: string): void {
  const timer = setTimeout(() => closeQuietly(conn), 1000);
  writeAll(conn, line(text)).catch(() => {}).finally(() => {
    clearTimeout(timer);
    closeQuietly(conn);
  });
}

/** Reads a line; a too long one is refused with an ERROR line. */
async function readLine(reader: LineReader): Promise<string | null> {
  try {
    return await reader.readLine();
  } catch (e) {
    if (!(e instanceof RelayError)) throw e;
    throw new Refusal(`ERROR PROTOCOL ${e.message}`, e.message);
  }
}

async function negotiate(
  conn: ByteStream,
  reader: LineReader,
  state: HandshakeState,
): Promise<{ v2: V2; words: string[] } | null> {
  state.v2 = true;
  const v2: V2 = { nonce: newNonce() };
  await writeAll(conn, line(`${HELLO_V2} ${v2.nonce}`));
  const request = await readLine(reader);
  if (request === null) return null;
  const words = request.split(" ");
  if (words.length > 3) {
    throw new Refusal("ERROR PROTOCOL too many words", "too many words");
  }
  return { v2, words };
}

function checkName(name: string, v2: boolean, v1Reply?: string): string {
  const problem = nameProblem(name);
  if (problem) {
    throw new Refusal(v2 ? `ERROR NAME ${problem}` : v1Reply, problem);
  }
  return name;
}

/**
 * Greets a server and reads its request; `null` for `STOP` or an early end.
 * Throws a {@linkcode Refusal} for what the protocol does not allow.
 */
export async function readServerRequest(
  conn: ByteStream,
  state: HandshakeState,
): Promise<ServerRequest | null> {
  const reader = new LineReader(conn);
  await writeAll(conn, line(Word.SERVER));
  const first = await readLine(reader);
  if (first === null) return null;
  let command = first.toUpperCase(), v2: V2 | undefined;
  let name: string | null | undefined;
  if (command === HELLO_V2) {
    const got = await negotiate(conn, reader, state);
    if (!got) return null;
    command = got.words[0].toUpperCase();
    name = got.words[1] ?? "";
    v2 = { ...got.v2, proof: got.words[2] };
  }
  if (command === Word.STOP) return null;
  if (!(v2 ? V2_COMMANDS : COMMANDS).has(command)) {
    throw new Refusal(
      v2 ? "ERROR UNKNOWN unknown command" : Word.UNKNOWN_COMMAND,
      `unknown command ${JSON.stringify(command.slice(0, 40))}`,
    );
  }
  name ??= await readLine(reader); // v1: the name on a line of its own
  if (name === null) return null;
  checkName(name, !!v2, "ERROR NAME bad name");
  return {
    command: command as ServerRequest["command"],
    name,
    v2,
    rest: reader.rest(),
  };
}

/**
 * Greets a client and reads the name it asks for; `null` at an early end.
 * Throws a {@linkcode Refusal} (`NOEXIST` for v1, `ERROR` lines for v2).
 */
export async function readClientRequest(
  conn: ByteStream,
  state: HandshakeState,
): Promise<ClientRequest | null> {
  const reader = new LineReader(conn);
  await writeAll(conn, line(Word.CLIENT));
  const first = await readLine(reader).catch((e) => {
    throw e instanceof Refusal ? new Refusal(Word.NOEXIST, e.message) : e;
  });
  if (first === null) return null;
  if (first.toUpperCase() !== HELLO_V2) {
    return {
      name: checkName(first, false, Word.NOEXIST),
      rest: reader.rest(),
    };
  }
  const got = await negotiate(conn, reader, state);
  if (!got) return null;
  if (got.words.length > 2) {
    throw new Refusal("ERROR PROTOCOL too many words", "too many words");
  }
  got.v2.proof = got.words[1];
  return {
    name: checkName(got.words[0], true),
    v2: got.v2,
    rest: reader.rest(),
  };
}

/**
 * Turns down a connection at admission (a limit) in words its peer's
 * version knows, although the relay does not know the version yet: greets
 * it (`greeting`, `SERVER` or `CLIENT`) and reads its first line; a v2 peer
 * (`HELLO 2`) hears `HELLO 2 <nonce>` and `reply` (an `ERROR` line), a v1
 * client `NOEXIST`, a v1 server nothing. Then it closes, within `ms` in all.
 * Never rejects.
 */
export async function turnDown(
  conn: Closable,
  greeting: string,
  reply: string,
  ms: number,
): Promise<void> {
  const close = () => closeQuietly(conn);
  const timer = setTimeout(close, ms);
  try {
    if ("handshake" in conn) await (conn as Deno.TlsConn).handshake();
    await writeAll(conn, line(greeting));
    const first = await new LineReader(conn).readLine().catch(() => "");
    if (first === null) return;
    const answer = first.toUpperCase() === HELLO_V2
      ? `${HELLO_V2} ${newNonce()}\n${reply}`
      : greeting === Word.CLIENT
      ? Word.NOEXIST
      : undefined;
    if (answer) await writeAll(conn, line(answer));
  } catch {
    // gone already
  } finally {
    clearTimeout(timer);
    close();
  }
}

/**
 * The connections being turned down at admission ({@linkcode turnDown}, a
 * second each at most), a few at a time: past that, or once closed, a
 * connection is closed at once.
 */
export class TurnDowns {
  #ends = new Map<Closable, Promise<void>>();
  #closed = false;

  /** How many are being turned down. */
  get size(): number {
    return this.#ends.size;
  }

  /** Turns `conn` down, greeted with `greeting`; a v2 peer hears `reply`. */
  add(conn: Closable, greeting: string, reply: string): void {
    if (this.#closed || this.#ends.size >= 64) return closeQuietly(conn);
    const end = turnDown(conn, greeting, reply, 1000);
    this.#ends.set(conn, end.finally(() => this.#ends.delete(conn)));
  }

  /** Closes them all; resolves once each is done. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const conn of this.#ends.keys()) closeQuietly(conn);
    await Promise.all(this.#ends.values());
  }
}
