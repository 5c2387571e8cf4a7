/**
 * Who may use the admin server: the bearer token (also taken as the
 * password of HTTP Basic, so that a browser can ask for it), compared in
 * constant time; loopback addresses; and the checks against other sites
 * (DNS rebinding, cross-site requests) that keep a browser on the operator's
 * machine from being used against it.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { isLoopback } from "./_flags.ts";

function digest(text: string): Uint8Array {
  return createHash("sha256").update(text, "utf8").digest();
}

/** The token, if any, and the check of a request's credentials against it. */
export class TokenCheck {
  #digest?: Uint8Array;

  constructor(token?: string) {
    this.set(token);
  }

  /** Whether a token is set. */
  get required(): boolean {
    return this.#digest !== undefined;
  }

  /** Sets (or, with `undefined`, drops) the token. */
  set(token: string | undefined): void {
    if (token !== undefined && (typeof token !== "string" || token === "")) {
      throw new TypeError("The admin token must be a non-empty string");
    }
    this.#digest = token === undefined ? undefined : digest(token);
  }

  /**
   * `undefined` if `authorization` (the request's header) carries the token,
   * or no token is set; otherwise why not: `"no token"` or `"wrong token"`.
   */
  refuse(authorization: string | null): string | undefined {
    if (!this.#digest) return undefined;
    const presented = credential(authorization);
    if (presented === undefined) return "no token";
    // Both sides are SHA-256 digests: equal lengths, compared in constant time.
    return timingSafeEqual(digest(presented), this.#digest)
      ? undefined
      : "wrong token";
  }
}

/** The token in `Bearer TOKEN`, or the password in `Basic base64(user:password)`. */
function credential(header: string | null): string | undefined {
  const m = /^(Bearer|Basic)[ \t]+(\S+)[ \t]*$/i.exec(header ?? "");
  if (!m) return undefined;
  if (m[1].toLowerCase() === "bearer") return m[2];
  try {
    const pair = new TextDecoder("utf-8", { fatal: true }).decode(
      Uint8Array.from(atob(m[2]), (c) => c.charCodeAt(0)),
    );
    const colon = pair.indexOf(":");
    return colon < 0 ? undefined : pair.slice(colon + 1);
  } catch {
    return undefined;
  }
}

/**
 * Why a request that a browser may have sent on another site's behalf is
 * refused, or `undefined` if it is not: without a token the server answers
 * only to a loopback `Host` (a DNS-rebinding page has its own host name);
 * a request that changes something must not come from another origin.
 */
export function crossSite(req: Request, tokenSet: boolean): string | undefined {
  const host = req.headers.get("host") ?? "";
  if (!tokenSet && !isLoopback(host.replace(/:\d+$/, ""))) {
    return `Host ${JSON.stringify(host.slice(0, 100))} is not a loopback name`;
  }
  if (req.method === "GET" || req.method === "HEAD") return undefined;
  if (req.headers.get("sec-fetch-site") === "cross-site") {
    return "cross-site request";
  }
  const origin = req.headers.get("origin");
  if (origin === null) return undefined;
  try {
    if (new URL(origin).host === host) return undefined;
  } catch {
    // "null" or garbage: not this origin
  }
  return `request from origin ${JSON.stringify(origin.slice(0, 100))}`;
}
