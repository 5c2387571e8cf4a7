/**
 * `client.ts --config forwards.toml`: one process forwarding several local
 * ports, each a `[[forward]]` table, the top level holding what they share.
 * Every forward runs on its own: one that cannot listen (its port is in
 * use) is logged with its name and the others keep working; the process
 * runs while any forward does and exits 1 if none could start.
 *
 * ```toml
 * relay = "relay.example.com"
 *
 * [[forward]]
 * name = "home-ssh"
 * listen = 2222                 # [HOST:]PORT, host 127.0.0.1
 *
 * [[forward]]
 * name = "nas"
 * listen = "127.0.0.1:8443"
 * key_file = "nas.key"          # relative to this file
 * ```
 *
 * @module
 */

import type { ParseArgsConfig } from "node:util";
import { getLogger } from "@logtape/logtape";
import type { ClientOptions } from "../client.ts";
import { formatAddr, nameProblem } from "../protocol/_wire.ts";
import { address, stopSignal, UsageError } from "./_common.ts";
import { ConfigFile, exposed, Keys } from "./_file.ts";
import { relaysText, startFromConfig } from "./_peer.ts";
import { DEFAULT_LINGER, forward } from "./_client.ts";

const log = getLogger(["tcp-relay", "client"]);

/** The keys of a `[[forward]]`. */
export const FORWARD_KEYS = [
  "name",
  "listen",
  "key",
  "key_file",
  "relay",
  "tls",
  "ca",
  "ca_file",
  "linger",
] as const;

/** The keys of the top level: what the forwards share (a forward's own key wins). */
export const SHARED_KEYS = [
  "relay",
  "tls",
  "ca",
  "ca_file",
  "linger",
  "log-level",
  "log-format",
] as const;

/** The flags `--config` may be given with: they win over the file's keys. */

/** One forward of the file, checked. */
export interface Forward {
  /** The local address listened on. */
  at: { hostname: string; port: number };
  /** The relays, for messages. */
  where: string;
  /** ms the server may stay silent after our end, through a seed relay. */
  linger: number;
  /** What `connect()` is given (without the signal). */
  options: ClientOptions;
}

/** What a forwards file says. */
export interface ForwardsFile {
  forwards: Forward[];
  "log-level"?: string;
  "log-format"?: string;
  /** Warnings to log once logging is set up. */
  warnings: string[];
}

/** Reads and checks a forwards file; a UsageError names the file, the line and the key. */
export async function readForwards(path: string): Promise<ForwardsFile> {
  const file = await ConfigFile.read(path);
  const top = new Keys(file, file.doc);
  top.only([...SHARED_KEYS, "forward"]);
  const shared = {
    relay: top.relays("relay", "client"),
    ...await top.tlsSettings(),
    linger: top.seconds("linger"),
  };
  const tables = file.tables("forward");
  if (tables.length === 0) {
    throw new UsageError(`${path}: no [[forward]] to run`);
  }
  const warnings: string[] = [];
  const forwards: Forward[] = [];
  const listening = new Map<string, string>();
  for (const keys of tables) {
    keys.only(FORWARD_KEYS);
    keys.required("name", "the name of the server");
    const name = keys.text("name")!;
    const bad = nameProblem(name);
    if (bad) throw keys.error("name", `name: ${bad}`);
    keys.required("listen", "[HOST:]PORT to forward");
    const at = keys.checked(
      "listen",
      (v) => address("listen", v, { hostOptional: true }),
    )!;
    const local = formatAddr({ transport: "tcp", ...at });
    const twice = listening.get(local);
    if (twice) {
      throw keys.error("listen", `listen ${local} is given twice (${twice})`);
    }
    listening.set(local, `line ${keys.file.line("listen", keys.table)}`);
    const relay = keys.relays("relay", "client") ?? shared.relay;
    if (!relay) {
      throw keys.error(
        undefined,
        `[[forward]] "${name}" has no relay, and the file has no relay at the top`,
      );
    }
    const { tls, ca } = await keys.tlsSettings(shared);
    const key = await keys.secret("key");
    const warning = await exposed(keys, key, `key of "${name}"`);
    if (warning) warnings.push(warning);
    forwards.push({
      at,
      where: relaysText(relay),
      linger: keys.seconds("linger") ?? shared.linger ?? DEFAULT_LINGER * 1000,
      options: {
        relay,
        name,
        key: key?.value,
        ...(tls ? { tls, caCerts: ca ? [ca] : undefined } : {}),
      },
    });
  }
  return {
    forwards,
    "log-level": top.logLevel("log-level"),
    "log-format": top.logFormat("log-format"),
    warnings,
  };
}

/**
 * `client.ts --config FILE` with the flags `v` (parsed from `args` with
 * `options`): runs every forward of the file; exits 0 on SIGINT/SIGTERM, 1
 * if no forward could listen.
 */
export async function runForwards(
  v: Record<string, unknown>,
  args: string[],
  options: NonNullable<ParseArgsConfig["options"]>,
): Promise<number> {
  const path = v.config as string;
  const file = await startFromConfig(v, args, options, readForwards, log);
  const signal = stopSignal();
  const { forwards } = file;
  let failed = 0;
  await Promise.all(forwards.map(async (f) => {
    try {
      await forward(f.options, f.where, f.at, f.linger, signal);
    } catch (e) {
      failed++;
      log.error("Forward {name} stopped: {error}", {
        name: f.options.name,
        error: (e as Error).message,
      });
    }
  }));
  if (failed === forwards.length) {
    throw new Error(`no forward of ${path} could start (see above)`);
  }
  log.info("Stopped");
  return 0;
}
