/**
 * The relay executable's admin server: its settings `--admin [HOST:]PORT`
 * and `--admin-token-file FILE` (or `TCP_RELAY_ADMIN_TOKEN`), checked as
 * usage errors (exit 2); starting it beside the relay; and reading the token
 * again on SIGHUP or when a config reload names another file. This module
 * loads nothing heavy: the server itself is imported only with `--admin`.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { parseHostPort } from "../protocol/_wire.ts";
import { UsageError } from "../cli/_common.ts";
import type { AdminServer } from "./_server.ts";
import type { AdminNames } from "./_api.ts";
import type { Relay } from "../relay.ts";

/** Whether `hostname` is a loopback address (or `localhost`). */
export function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  return h === "localhost" || h === "::1" || /^127(\.\d{1,3}){3}$/.test(h) ||
    /^::ffff:127(\.\d{1,3}){3}$/.test(h);
}

/** The variable the admin token may come from. */
export const ADMIN_TOKEN_ENV = "TCP_RELAY_ADMIN_TOKEN";

const log = getLogger(["tcp-relay", "admin"]);

/** What the settings ask for: where the admin server listens, and its token. */
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

/** The token from `file`, or else from the environment. */
function token(file: string | undefined): string | undefined {
  return file !== undefined ? readTokenFile(file) : tokenFromEnv();
}

/**
 * `--admin` and its token from the settings in force (by flag); `undefined`
 * without `--admin`.
 */
export function parseAdminFlags(
  v: Record<string, unknown>,
): AdminFlags | undefined {
  const admin = v.admin as string | undefined;
  const tokenFile = v["admin-token-file"] as string | undefined;
  if (admin === undefined) {
    if (tokenFile !== undefined) {
      throw new UsageError("--admin-token-file goes with --admin");
    }
    return undefined;
  }
  let where: { hostname: string; port: number };
  try {
    where = /^\d+$/.test(admin)
      ? { hostname: "127.0.0.1", port: Number(admin) }
      : parseHostPort(admin);
  } catch {
    where = { hostname: "", port: NaN };
  }
  if (!(where.port >= 0 && where.port <= 65535)) {
    throw new UsageError(
      `--admin takes [HOST:]PORT (a port from 0 to 65535), not "${admin}"`,
    );
  }
  const t = token(tokenFile);
  if (!t && !isLoopback(where.hostname)) {
    throw new UsageError(
      `--admin ${admin}: ${where.hostname} is not a loopback address, so the admin server needs a token (--admin-token-file FILE or ${ADMIN_TOKEN_ENV})`,
    );
  }
  return { ...where, token: t, tokenFile };
}

/** The executable's admin server, and where its token is read from. */
let running: { admin: AdminServer; file?: string } | undefined;

/** Reads the token again (its file, or the environment) and hands it over. */
function reread(why: string): void {
  if (!running) return;
  try {
    running.admin.setToken(token(running.file));
    log.info(`Admin token read again (${why}) from {source}`, {
      source: running.file ?? ADMIN_TOKEN_ENV,
    });
  } catch (e) {
    log.error("Kept the admin token: {error}", { error: (e as Error).message });
  }
}

/**
 * The applier of a config reload that changes `admin-token-file`
 * (`CLI_LIVE`): the token is read from the new file (or, without one, from
 * the environment).
 */
export function applyTokenFile(file: unknown): void {
  if (!running) return;
  running.file = file === undefined ? undefined : String(file);
  reread("config reloaded");
}

/**
 * Prepares the admin server the settings `v` ask for (the flags checked,
 * the server's module loaded), or `undefined` without `--admin`. Call it
 * before `serveRelay`, then `start` right after it, so that the metrics see
 * every event from the first connection on.
 */
export async function adminFromSettings(v: Record<string, unknown>): Promise<
  | {
    start(relay: Relay, names?: AdminNames): Promise<AsyncDisposable>;
  }
  | undefined
> {
  const flags = parseAdminFlags(v);
  if (!flags) return undefined;
  const { startAdmin } = await import("./_server.ts");
  return {
    async start(relay, names) {
      let admin: AdminServer;
      try {
        admin = startAdmin(relay, { ...flags, names });
      } catch (e) {
        await relay.shutdown();
        throw e;
      }
      log.info("Admin server on {url}", {
        url: admin.url,
        token: !!flags.token,
      });
      running = { admin, file: flags.tokenFile };
      // the file's text may have changed (its name, only by a config reload)
      const hup = () => running?.file !== undefined && reread("SIGHUP");
      Deno.addSignalListener("SIGHUP", hup);
      return {
        async [Symbol.asyncDispose]() {
          Deno.removeSignalListener("SIGHUP", hup);
          running = undefined;
          await admin.shutdown();
        },
      };
    },
  };
}
