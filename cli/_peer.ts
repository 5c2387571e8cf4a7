/**
 * What the server's and the client's executables share: `--relay` (one
 * relay or a comma-separated list), `--name`, `--tls`/`--ca`, the logging
 * flags, checked into helper options (every bad value a usage error), hints
 * that name the flags, and which flags may go with `--config`.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import type { Logger } from "@logtape/logtape";
import { useFlagHints } from "../helpers/_hints.ts";
import {
  DEFAULT_CLIENT_PORT,
  DEFAULT_SERVER_PORT,
  formatAddr,
  nameProblem,
} from "../protocol/_wire.ts";
import {
  address,
  COMMON_OPTIONS,
  LOG_LEVELS_TEXT,
  setupLogging,
  TLS_OPTIONS,
  tlsOptions,
  UsageError,
} from "./_common.ts";

/** The flags of both executables. */
export const PEER_OPTIONS = {
  ...COMMON_OPTIONS,
  relay: { type: "string" },
  name: { type: "string" },
  ...TLS_OPTIONS,
} as const;

/** The `--help` lines of the flags both take after their own, aligned at `width`. */
export function peerUsage(width: number): string {
  const row = (flag: string, text: string) =>
    `  ${flag.padEnd(width - 2)}${text}`;
  return [
    row("--tls", "reach the relay over TLS"),
    row("--ca FILE", "trust this certificate (PEM) for TLS, as for a"),
    row("", "self-signed one (see the README's openssl recipe)"),
    row("--log-level LEVEL", `${LOG_LEVELS_TEXT}`),
    row("", "(default info)"),
    row("--log-format FORMAT", "text or json (default text)"),
    row("-h, --help", "show this help"),
    row("-V, --version", "show the version"),
  ].join("\n");
}

/** Fails with a usage error unless every flag of `flags` was given. */
export function required(v: Record<string, unknown>, ...flags: string[]) {
  for (const flag of flags) {
    if (typeof v[flag] !== "string") {
      throw new UsageError(`--${flag} is required`);
    }
  }
}

/** The helper options of `--relay`, `--name`, `--tls`, `--ca`, and the relays' `host:port`s. */
export interface PeerOptions {
  relay: { hostname: string; port: number }[];
  name: string;
  tls?: boolean;
  caCerts?: string[];
}

/**
 * The relays of `value`, `HOST[:PORT]` or a comma-separated list of them
 * (`a,b:8011,[::1]`), for `role`; a bad or repeated one is a usage error
 * naming `--flag`.
 */
export function relayList(
  flag: string,
  value: string,
  role: "server" | "client",
): { hostname: string; port: number }[] {
  const defaultPort = role === "server"
    ? DEFAULT_SERVER_PORT
    : DEFAULT_CLIENT_PORT;
  const items = value.split(",").map((s) => s.trim());
  if (items.length > 1 && items.some((s) => s === "")) {
    throw new UsageError(
      `--${flag} takes HOST[:PORT] or a list HOST[:PORT],HOST[:PORT],..., not "${value}"`,
    );
  }
  const seen = new Set<string>();
  return items.map((item) => {
    const addr = address(flag, item, { defaultPort });
    const where = formatAddr({ transport: "tcp", ...addr });
    if (seen.has(where)) {
      throw new UsageError(`--${flag} lists ${where} twice`);
    }
    seen.add(where);
    return addr;
  });
}

/** `host:port, host:port` of `relays`, for messages. */
export function relaysText(
  relays: { hostname: string; port: number }[],
): string {
  return relays.map((r) => formatAddr({ transport: "tcp", ...r })).join(", ");
}

/** Checks the shared flags of `role`'s executable; every bad value is a usage error. */
export function peerOptions(
  v: Record<string, unknown>,
  role: "server" | "client",
): PeerOptions & { where: string } {
  required(v, "relay", "name");
  const relay = relayList("relay", v.relay as string, role);
  const name = v.name as string;
  const bad = nameProblem(name);
  if (bad) throw new UsageError(`--name: ${bad}`);
  return { relay, where: relaysText(relay), name, ...tlsOptions(v) };
}

/** Sets up logging from the flags (a bad level or format is a usage error); hints name the flags. */
export async function startLogging(v: Record<string, unknown>): Promise<void> {
  await setupLogging(v["log-level"] as string, v["log-format"] as string);
  useFlagHints();
}

/**
 * The flags given on the command line `args` (their names), as opposed to
 * those that have their default; `args` parsed with `options` already.
 */
export function givenFlags(
  args: string[],
  options: NonNullable<ParseArgsConfig["options"]>,
): Set<string> {
  const { tokens } = parseArgs({
    args,
    options,
    strict: true,
    allowPositionals: false,
    allowNegative: true,
    tokens: true,
  });
  return new Set(
    tokens.flatMap((t) =>
      t.kind !== "option" ? [] : [
        !(t.name in options) && t.name.startsWith("no-")
          ? t.name.slice(3)
          : t.name,
      ]
    ),
  );
}

/**
 * Fails unless the flags given with `--config` are among `allowed` (the
 * file gives the rest).
 */
export function onlyWithConfig(given: Set<string>, allowed: string[]): void {
  for (const flag of given) {
    if (flag === "config" || allowed.includes(flag)) continue;
    throw new UsageError(
      `--${flag} cannot be given with --config, which gives it in the file (besides --config: ${
        allowed.map((f) => `--${f}`).join(", ")
      })`,
    );
  }
}

/** The flags a `--config` file may be given with: they win over its keys. */
const WITH_CONFIG = ["log-level", "log-format"];

/**
 * The start of `server.ts --config` and `client.ts --config`: checks that
 * only the logging flags come with `--config`, reads the file with `read`,
 * starts logging (a flag wins over the file's key), logs the file's warnings
 * with `log` and returns it.
 */
export async function startFromConfig<
  F extends { warnings: string[]; "log-level"?: string; "log-format"?: string },
>(
  v: Record<string, unknown>,
  args: string[],
  options: NonNullable<ParseArgsConfig["options"]>,
  read: (path: string) => Promise<F>,
  log: Logger,
): Promise<F> {
  const given = givenFlags(args, options);
  onlyWithConfig(given, WITH_CONFIG);
  const file = await read(v.config as string);
  const logging: Record<string, unknown> = {};
  for (const flag of WITH_CONFIG) {
    logging[flag] = given.has(flag)
      ? v[flag]
      : file[flag as "log-level"] ?? v[flag];
  }
  await startLogging(logging);
  for (const w of file.warnings) log.warn(w.replace(/[{}]/g, (c) => c + c));
  return file;
}
