/**
 * What a helper tells its user when a dial goes wrong in a way they can mend:
 * TLS on one side only, a certificate not trusted, the servers' and the
 * clients' ports swapped. The hints name the library's options, or the
 * executables' flags once {@linkcode useFlagHints} was called. Failures that
 * retrying cannot mend are marked permanent.
 *
 * @module
 */

import { RelayError, type RelayErrorCode } from "../protocol/_errors.ts";
import {
  DEFAULT_CLIENT_PORT,
  DEFAULT_SERVER_PORT,
  Word,
} from "../protocol/_wire.ts";

/** How each hint names the remedy: the library's words, or the flags'. */
const WORDS = {
  library: {
    ca: "pass caCerts",
    dropTls: "leave tls off",
    addTls: "set tls: true",
  },
  flags: { ca: "pass --ca", dropTls: "drop --tls", addTls: "add --tls" },
};
let words = WORDS.library;

/** Hints name the flags (`--ca`, `--tls`) instead of the options: for the executables. */
export function useFlagHints(): void {
  words = WORDS.flags;
}

/** Errors that retrying cannot mend besides those known by their code. */
const permanent = new WeakSet<RelayError>();

/** Marks `e` as permanent and returns it. */
function forever(e: RelayError): RelayError {
  permanent.add(e);
  return e;
}

/**
 * Whether retrying cannot mend `e`: the relay refuses what is asked (`AUTH`,
 * `PROTOCOL`, `UNKNOWN_COMMAND`), or the TLS settings do not fit the relay
 * (its certificate is not trusted, or one side speaks TLS and the other not).
 */
export function isPermanent(e: unknown): boolean {
  return e instanceof RelayError &&
    (e.code === "UNKNOWN_COMMAND" || e.code === "PROTOCOL" ||
      e.code === "AUTH" || permanent.has(e));
}

/** The error for a TLS handshake with the relay at `where` that failed. */
export function tlsFailure(e: unknown, where: string): RelayError {
  const message = String((e as Error)?.message ?? e);
  const fail = (hint?: string) =>
    new RelayError(
      "UNREACHABLE",
      `TLS with relay at ${where} failed: ${message}${
        hint ? ` (${hint})` : ""
      }`,
      { cause: e },
    );
  if (/invalid peer certificate/i.test(message)) {
    if (/CaUsedAsEndEntity/.test(message)) {
      return forever(fail(
        "the relay's certificate is a CA certificate, not a server's: make it with basicConstraints=critical,CA:FALSE as the README shows",
      ));
    }
    if (/not valid for name/i.test(message)) {
      const host = where.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
      return forever(fail(
        `the relay's certificate does not name ${host}: reach it by a name the certificate has, or add ${host} to its subjectAltName`,
      ));
    }
    if (/Expired|NotValidYet/i.test(message)) {
      return forever(fail("the relay's certificate is out of date"));
    }
    return forever(fail(`certificate not trusted: ${words.ca}`));
  }
  if (/corrupt message|InvalidContentType|wrong version/i.test(message)) {
    return forever(fail(`the relay does not speak TLS: ${words.dropTls}`));
  }
  return fail();
}

/** Whether a plain connection heard TLS bytes (a TLS record header: an alert or a handshake). */
export function isTlsRecord(text: string): boolean {
  const type = text.charCodeAt(0);
  return (type === 0x15 || type === 0x16) && text.charCodeAt(1) === 0x03;
}

/** The error for a relay that answered a plain connection in TLS. */
export function speaksTls(where: string): RelayError {
  return forever(
    new RelayError(
      "PROTOCOL",
      `Relay ${where} answered in TLS (the relay speaks TLS: ${words.addTls})`,
    ),
  );
}

/**
 * The error for a relay that closed, or sent nothing, before its greeting:
 * over plain TCP, a TLS relay does either.
 */
export function noGreeting(
  where: string,
  tls: boolean,
  code: "CLOSED" | "TIMEOUT",
  cause?: unknown,
): RelayError {
  const what = code === "CLOSED"
    ? "closed the connection before its greeting"
    : "sent no greeting in time";
  return new RelayError(
    code,
    `Relay ${where} ${what}${
      tls ? "" : ` (is the relay TLS? ${words.addTls})`
    }`,
    { cause },
  );
}

/** The error for a greeting of the other port: a server at the clients' port, or the reverse. */
export function wrongPort(
  where: string,
  role: "server" | "client",
): RelayError {
  return new RelayError(
    "PROTOCOL",
    role === "client"
      ? `Relay ${where} is the servers' port; clients use the clients' port (default ${DEFAULT_CLIENT_PORT})`
      : `Relay ${where} is the clients' port; servers use the servers' port (default ${DEFAULT_SERVER_PORT})`,
  );
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
