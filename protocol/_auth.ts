/**
 * Proofs of protocol v2: HMAC-SHA256 over a fresh relay nonce, so that a
 * secret never crosses the wire and a recorded proof cannot be replayed (the
 * next connection gets another nonce).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** A new secret for a name's owner or its clients: 32 random bytes, hex. */
export function newSecret(): string {
  return randomBytes(32).toString("hex");
}

/** A new nonce for one connection: 16 random bytes, hex. */
export function newNonce(): string {
  return randomBytes(16).toString("hex");
}

/**
 * The proof that the holder of `secret` sends for `command` (`CONNECT`,
 * `RESERVE`, `RELEASE`, or `CLIENT` for a private name's client) on `name`
 * under the relay's `nonce`: hex HMAC-SHA256 of `tcp-relay/2 nonce command name`.
 */
export function proof(
  secret: string,
  nonce: string,
  command: string,
  name: string,
): string {
  return createHmac("sha256", secret)
    .update(`tcp-relay/2 ${nonce} ${command} ${name}`)
    .digest("hex");
}

/** Whether `given` is the right proof, compared in constant time. */
export function verify(
  secret: string,
  nonce: string,
  command: string,
  name: string,
  given: string | undefined,
): boolean {
  if (!given || !/^[0-9a-f]{64}$/.test(given)) return false;
  const want = Buffer.from(proof(secret, nonce, command, name), "hex");
  return timingSafeEqual(want, Buffer.from(given, "hex"));
}
