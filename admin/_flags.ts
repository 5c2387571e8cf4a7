/**
 * The relay executable's admin flags: `--admin [HOST:]PORT` and
 * `--admin-token-file FILE` (or `TCP_RELAY_ADMIN_TOKEN`), checked as usage
 * errors (exit 2). Kept apart from the settings so that this module loads
 * nothing heavy: the admin server itself is imported only when asked for.
 *
 * @module
 */

import type { ParseArgsConfig } from "node:util";
import { parseHostPort } from "../protocol/_wire.ts";
import { UsageError } from "../cli/_common.ts";
import { isLoopback } from "./_auth.ts";

/** The variable the admin token may come from. */
export const ADMIN_TOKEN_ENV = "TCP_RELAY_ADMIN_TOKEN";

/** The flags, for `parseArgs`. */
export const ADMIN_OPTIONS = {
  admin: { type: "string" },
  "admin-token-file": { type: "string" },
} as const satisfies ParseArgsConfig["options"];

/** Their lines in `--help`. */
export const ADMIN_USAGE =
  `  --admin [HOST:]PORT         serve /metrics, /healthz, /readyz, a live status
                              page (/) and the admin API (/api/) on HOST
                              (default 127.0.0.1); off by default
  --admin-token-file FILE     the admin token (or ${ADMIN_TOKEN_ENV}): every
                              admin request but /healthz must carry it as
                              "Authorization: Bearer TOKEN"; needed off loopback`;

/** What the flags ask for: where the admin server listens, and its token. */
export interface AdminFlags {
  hostname: string;
  port: number;
  token?: string;
  /** Where the token came from, to read it again on SIGHUP. */
  tokenFile?: string;
}

/** The admin token in `path`, without surrounding white space. */
export function readTokenFile(path: string): string {
  let token: string;
  try {
    token = Deno.readTextFileSync(path).trim();
  } catch (e) {
    throw new UsageError(
      `--admin-token-file: cannot read ${path}: ${(e as Error).message}`,
    );
  }
  if (!token) throw new UsageError(`--admin-token-file: ${path} is empty`);
  if (/\s/.test(token)) {
    throw new UsageError(
      `--admin-token-file: ${path} holds white space inside the token`,
    );
  }
  return token;
}

function tokenFromEnv(): string | undefined {
  const query = { name: "env", variable: ADMIN_TOKEN_ENV } as const;
  if (Deno.permissions.querySync(query).state !== "granted") return undefined;
  const token = Deno.env.get(ADMIN_TOKEN_ENV)?.trim();
  if (token !== undefined && /\s/.test(token)) {
    throw new UsageError(`${ADMIN_TOKEN_ENV} holds white space`);
  }
  return token || undefined;
}

/** `--admin` and its token from parsed flags; `undefined` without `--admin`. */
export function parseAdminFlags(
  v: { admin?: string; "admin-token-file"?: string },
): AdminFlags | undefined {
  const tokenFile = v["admin-token-file"];
  if (v.admin === undefined) {
    if (tokenFile !== undefined) {
      throw new UsageError("--admin-token-file goes with --admin");
    }
    return undefined;
  }
  let where: { hostname: string; port: number };
  try {
    where = /^\d+$/.test(v.admin)
      ? { hostname: "127.0.0.1", port: Number(v.admin) }
      : parseHostPort(v.admin);
  } catch {
    where = { hostname: "", port: NaN };
  }
  if (!(where.port >= 0 && where.port <= 65535)) {
    throw new UsageError(
      `--admin takes [HOST:]PORT (a port from 0 to 65535), not "${v.admin}"`,
    );
  }
  const token = tokenFile !== undefined
    ? readTokenFile(tokenFile)
    : tokenFromEnv();
  if (!token && !isLoopback(where.hostname)) {
    throw new UsageError(
      `--admin ${v.admin}: ${where.hostname} is not a loopback address, so the admin server needs a token (--admin-token-file FILE or ${ADMIN_TOKEN_ENV})`,
    );
  }
  return { ...where, token, tokenFile };
}
