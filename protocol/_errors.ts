/**
 * The one error that callers of @x/tcp-relay catch.
 *
 * @module
 */

/**
 * What went wrong, as a stable code:
 * - `UNREACHABLE`: the relay cannot be reached;
 * - `NOEXIST`: no such name is reserved at the relay;
 * - `OFFLINE`: the name is reserved but no server is waiting;
 * - `USED`: the name is already reserved;
 * - `UNKNOWN_COMMAND`: the relay does not know the command;
 * - `PROTOCOL`: the peer broke the protocol (an unexpected or too long line);
 * - `CLOSED`: the connection closed before the handshake finished;
 * - `TIMEOUT`: the handshake took too long, or a parked connection's relay
 *   went silent;
 * - `AUTH`: the relay wants a proof of the name's secret (protocol v2), or
 *   the proof was wrong;
 * - `LIMIT`: the relay's limits refuse the connection (too many connections,
 *   parked connections, or failed proofs).
 */
export type RelayErrorCode =
  | "UNREACHABLE"
  | "NOEXIST"
  | "OFFLINE"
  | "USED"
  | "UNKNOWN_COMMAND"
  | "PROTOCOL"
  | "CLOSED"
  | "TIMEOUT"
  | "AUTH"
  | "LIMIT";

/**
 * An error from the relay or its protocol, with a stable {@linkcode RelayError.code}.
 *
 * @example Telling a missing name from an absent server
 * ```ts
 * import { connect, RelayError } from "jsr:@x/tcp-relay";
 *
 * try {
 *   const conn = await connect({ relay: "relay.example.com", name: "home-ssh" });
 *   conn.close();
 * } catch (e) {
 *   if (e instanceof RelayError && e.code === "OFFLINE") console.log("try later");
 *   else throw e;
 * }
 * ```
 */
export class RelayError extends Error {
  /** What went wrong, as a stable code. */
  readonly code: RelayErrorCode;

  /** Makes an error with a code and a message (no trailing period). */
  constructor(code: RelayErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RelayError";
    this.code = code;
  }
}
