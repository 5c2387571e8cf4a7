/**
 * `server.ts --config services.toml`: one process offering several
 * services, each a `[[service]]` table, the top level holding what they
 * share. Every service runs on its own: one refused for good (a wrong
 * secret) stops alone and is logged with its name, one whose `to` is dead
 * closes its own clients; the process runs while any service does and exits
 * 1 once every one has failed.
 *
 * ```toml
 * relay = ["a.example.com", "b.example.com"]   # shared; a service may name its own
 * log-level = "info"
 *
 * [[service]]
 * name = "home-ssh"
 * to = "127.0.0.1:22"
 * secret_file = "home-ssh.secret"   # relative to this file
 * pool = 2
 * max_pool = 64                     # opened on demand for a crowd
 * ```
 *
 * @module
 */

import type { ParseArgsConfig } from "node:util";
import { getLogger } from "@logtape/logtape";
import { listen, type ListenOptions } from "../server.ts";
import { formatAddr, nameProblem } from "../protocol/_wire.ts";
import { address, stopSignal, UsageError } from "./_common.ts";
import { ConfigFile, exposed, Keys } from "./_file.ts";
import { relaysText, startFromConfig } from "./_peer.ts";
import { probe, serve } from "./_server.ts";

const log = getLogger(["tcp-relay", "server"]);

/** The keys of a `[[service]]`. */
export const SERVICE_KEYS = [
  "name",
  "to",
  "pool",
  "max_pool",
  "secret",
  "secret_file",
  "relay",
  "tls",
  "ca",
  "ca_file",
  "max_backoff",
] as const;

/** The keys of the top level: what the services share (a service's own key wins). */
export const SHARED_KEYS = [
  "relay",
  "tls",
  "ca",
  "ca_file",
  "pool",
  "max_pool",
  "max_backoff",
  "log-level",
  "log-format",
] as const;

/** The flags `--config` may be given with: they win over the file's keys. */

/** One service of the file, checked. */
export interface Service {
  /** The name offered. */
  name: string;
  /** The local service. */
  to: { hostname: string; port: number };
  /** `host:port` of `to`. */
  at: string;
  /** The relays, for messages. */
  where: string;
  /** What `listen()` is given (without the signal). */
  options: ListenOptions;
}

/** What a services file says. */
export interface ServicesFile {
  services: Service[];
  "log-level"?: string;
  "log-format"?: string;
  /** Warnings to log once logging is set up. */
  warnings: string[];
}

/** Reads and checks a services file; a UsageError names the file, the line and the key. */
export async function readServices(path: string): Promise<ServicesFile> {
  const file = await ConfigFile.read(path);
  const top = new Keys(file, file.doc);
  top.only([...SHARED_KEYS, "service"]);
  const shared = {
    relay: top.relays("relay", "server"),
    ...await top.tlsSettings(),
    pool: top.whole("pool", 1, 1000),
    maxPool: top.whole("max_pool", 1, 1000),
    maxBackoff: top.seconds("max_backoff", true),
  };
  const tables = file.tables("service");
  if (tables.length === 0) {
    throw new UsageError(`${path}: no [[service]] to offer`);
  }
  const warnings: string[] = [];
  const services: Service[] = [];
  for (const keys of tables) {
    keys.only(SERVICE_KEYS);
    keys.required("name", "the name clients ask for");
    const name = keys.text("name")!;
    const bad = nameProblem(name);
    if (bad) throw keys.error("name", `name: ${bad}`);
    keys.required("to", "HOST:PORT of the local service");
    const to = keys.checked("to", (v) => address("to", v))!;
    const relay = keys.relays("relay", "server") ?? shared.relay;
    if (!relay) {
      throw keys.error(
        undefined,
        `[[service]] "${name}" has no relay, and the file has no relay at the top`,
      );
    }
    const { tls, ca } = await keys.tlsSettings(shared);
    const secret = await keys.secret("secret");
    const warning = await exposed(keys, secret, `secret of "${name}"`);
    if (warning) warnings.push(warning);
    const maxBackoff = keys.seconds("max_backoff", true) ?? shared.maxBackoff;
    const pool = keys.whole("pool", 1, 1000) ?? shared.pool ?? 2;
    const maxPool = keys.whole("max_pool", 1, 1000) ?? shared.maxPool;
    if (maxPool !== undefined && maxPool < pool) {
      throw keys.error(
        "max_pool",
        `max_pool (${maxPool}) is below pool (${pool})`,
      );
    }
    services.push({
      name,
      to,
      at: formatAddr({ transport: "tcp", ...to }),
      where: relaysText(relay),
      options: {
        relay,
        name,
        pool,
        ...(maxPool === undefined ? {} : { maxPool }),
        secret: secret?.value,
        ...(tls ? { tls, caCerts: ca ? [ca] : undefined } : {}),
        ...(maxBackoff === undefined
          ? {}
          : { maxBackoff, minBackoff: Math.min(100, maxBackoff) }),
      },
    });
  }
  return {
    services,
    "log-level": top.logLevel("log-level"),
    "log-format": top.logFormat("log-format"),
    warnings,
  };
}

/**
 * Offers one service until the signal or a failure for good; `true` if it
 * ran until the signal, `false` if it failed.
 */
async function run(s: Service, signal: AbortSignal): Promise<boolean> {
  await probe(s.to, s.at, s.name);
  try {
    const listener = listen({ ...s.options, signal });
    log.info("Offering {name} at {relay}, forwarding to {to}", {
      name: s.name,
      relay: s.where,
      to: s.at,
    });
    for await (const conn of listener) serve(conn, s.to, s.name);
    return true;
  } catch (e) {
    log.error("Service {name} stopped: {error}", {
      name: s.name,
      error: String((e as Error)?.message ?? e),
    });
    return false;
  }
}

/**
 * `server.ts --config FILE` with the flags `v` (parsed from `args` with
 * `options`): runs every service of the file; exits 0 on SIGINT/SIGTERM,
 * 1 once every service has failed for good.
 */
export async function runServices(
  v: Record<string, unknown>,
  args: string[],
  options: NonNullable<ParseArgsConfig["options"]>,
): Promise<number> {
  const path = v.config as string;
  const file = await startFromConfig(v, args, options, readServices, log);
  const signal = stopSignal();
  const { services } = file;
  let running = services.length;
  const results = await Promise.all(services.map(async (s) => {
    const ok = await run(s, signal);
    if (!ok && --running > 0 && !signal.aborted) {
      log.warn("{running} of {count} services still offered", {
        running,
        count: services.length,
      });
    }
    return ok;
  }));
  if (results.some(Boolean)) {
    log.info("Stopped");
    return 0;
  }
  throw new Error(`every service of ${path} failed (see above)`);
}
