/**
 * The relay's side of both handshakes, v1 (the seed's) and v2 (ours), up to
 * the request: what is asked for, under which name, with which proof. What
 * the relay then decides lives in `_rendezvous.ts`.
 *
 * v2 is negotiated by the peer: its first line is `HELLO 2`, which a v1
 * relay answers with `UNKNOWN COMMAND` (server port) or `NOEXIST` (client
 * port), so a v2 helper knows to fall back. A v2 relay answers
 * `HELLO 2 <nonce>`, and the request follows on one line.
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

/** A server's request. */
export interface ServerRequest {
  command: "RESERVE" | "RELEASE" | "CONNECT";
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
  if (!COMMANDS.has(command)) {
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
