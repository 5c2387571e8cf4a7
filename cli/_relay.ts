/**
 * The relay executable's command line, built from the table of settings
 * (`engine/_settings.ts`): its flags and `--help`, values in the user's units
 * (seconds, file names) checked with errors that name the flag, the relay's
 * options from them, stopping on signals with a drain; and the `names`
 * subcommand that manages the credentials store.
 *
 * @module
 */

import type { ParseArgsConfig } from "node:util";
import { getLogger } from "@logtape/logtape";
import {
  type Setting,
  SETTINGS,
  type SettingValue,
} from "../engine/_settings.ts";
import { conflict, expects, problem, setPath } from "../engine/_options.ts";
import { COMMON_OPTIONS, parseFlags, UsageError } from "./_common.ts";
import type { Relay, RelayOptions } from "../relay.ts";

/** Settings by flag name, in the user's units (seconds, file names). */
export type UserValues = Record<string, SettingValue | undefined>;

const WIDTH = 80, INDENT = 30;

/** `left` and `text` as `--help` lines: `text` wrapped in its column. */
function helpLines(left: string, text: string): string {
  const lines: string[] = [];
  let current = left.length + 1 > INDENT ? left : left.padEnd(INDENT);
  if (current === left) {
    lines.push(left);
    current = " ".repeat(INDENT);
  }
  let empty = true;
  for (const word of text.split(" ")) {
    if (!empty && current.length + 1 + word.length > WIDTH) {
      lines.push(current);
      current = " ".repeat(INDENT);
      empty = true;
    }
    current += (empty ? "" : " ") + word;
    empty = false;
  }
  lines.push(current);
  return lines.join("\n");
}

/** `value` of `s` in the library's unit, in the user's. */
function toUser(s: Setting, value: SettingValue): SettingValue {
  return s.type === "seconds" ? (value as number) / 1000 : value;
}

/** `value` of `s` in the user's unit, in the library's (ms for seconds). */
export function toLibrary(s: Setting, value: SettingValue): SettingValue {
  return s.type === "seconds"
    ? Math.round((value as number) * 1e6) / 1e3
    : value;
}

/** The executable's default of every setting, in the user's units. */
export function defaults(): UserValues {
  const out: UserValues = {};
  for (const s of SETTINGS) {
    const v = s.cliDefault ?? s.default;
    out[s.flag] = v === undefined ? undefined : toUser(s, v);
  }
  return out;
}

/** A value for messages: strings as is, nothing as "(none)". */
export function shown(value: unknown): string {
  if (value === undefined) return "(none)";
  if (Array.isArray(value)) return "an array";
  if (value instanceof Date) return value.toISOString();
  if (typeof value === "object" && value !== null) return "a table";
  return String(value);
}

function valid(s: Setting, value: unknown): boolean {
  return problem(s, typeof value === "number" ? toLibrary(s, value) : value) ===
    undefined;
}

/**
 * `value` of `s` from a config file (a TOML value), or a UsageError that
 * starts with `where` ("relay.toml:3").
 */
export function fromConfig(
  s: Setting,
  value: unknown,
  where: string,
): SettingValue {
  if (valid(s, value)) return value as SettingValue;
  const v = typeof value === "string" ? JSON.stringify(value) : shown(value);
  throw new UsageError(
    `${where}: ${s.flag} takes ${expects(s, "user")}, not ${v}`,
  );
}

/** `raw` text (or a boolean) of `s` from its flag, or a UsageError naming the flag. */
function fromFlag(s: Setting, raw: string | boolean): SettingValue {
  const numeric = s.type === "whole" || s.type === "seconds";
  const value = numeric && typeof raw === "string"
    ? (raw.trim() === "" ? NaN : Number(raw))
    : raw;
  if (valid(s, value)) return value;
  throw new UsageError(
    `--${s.flag} takes ${expects(s, "user")}, not ${JSON.stringify(raw)}`,
  );
}

const FLAGS = {
  ...COMMON_OPTIONS,
  config: { type: "string" },
  ...Object.fromEntries(
    SETTINGS.map((s) => [s.flag, {
      type: s.type === "boolean" ? "boolean" : "string",
    }]),
  ),
} as NonNullable<ParseArgsConfig["options"]>;

/** What the relay's command line says. */
export interface RelayCommandLine {
  help?: boolean;
  version?: boolean;
  /** `--config FILE`. */
  config?: string;
  /** The settings given as flags (and only those), by flag, checked. */
  flags: UserValues;
}

/** The relay's command line, checked: a UsageError names the flag. */
export function parseRelayFlags(args: string[]): RelayCommandLine {
  const v = parseFlags(args, FLAGS) as Record<
    string,
    string | boolean | undefined
  >;
  const flags: UserValues = {};
  if (v.help || v.version) {
    return { help: !!v.help, version: !!v.version, flags };
  }
  for (const s of SETTINGS) {
    const raw = v[s.flag];
    if (raw !== undefined) flags[s.flag] = fromFlag(s, raw);
  }
  if (v.config === "") throw new UsageError("--config takes a file name");
  return { config: v.config as string | undefined, flags };
}

/**
 * The settings in force: the defaults, then the config file's, then the
 * flags'; a UsageError if they do not go together.
 */
export function settle(file: UserValues, flags: UserValues): UserValues {
  const values = { ...defaults() };
  for (const [flag, v] of [...Object.entries(file), ...Object.entries(flags)]) {
    if (v !== undefined) values[flag] = v;
  }
  const bad = conflict((flag) => values[flag], (s) => `--${s.flag}`);
  if (bad) throw new UsageError(bad.message);
  return values;
}

/** The text of the file a flag names; a UsageError if it cannot be read. */
export function readFlagFile(flag: string, path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    throw new UsageError(
      `--${flag}: cannot read ${path}: ${(e as Error).message}`,
    );
  }
}

/**
 * `serveRelay`'s options from the settings in force (files read), and the
 * executable's own settings by key (`data`, `logLevel`, `logFormat`).
 */
export function relayOptions(
  values: UserValues,
): { options: RelayOptions; cli: Record<string, SettingValue | undefined> } {
  const options: Record<string, unknown> = {};
  const cli: Record<string, SettingValue | undefined> = {};
  for (const s of SETTINGS) {
    const v = values[s.flag];
    if (v === undefined) continue;
    if (!s.library) cli[s.key] = v;
    else if (s.type === "file") {
      setPath(options, s.key, readFlagFile(s.flag, v as string));
    } else setPath(options, s.key, toLibrary(s, v));
  }
  return { options: options as RelayOptions, cli };
}

function defaultText(s: Setting): string {
  const d = s.cliDefault ?? s.default;
  const parts = [];
  if (s.defaultText) parts.push(`default: ${s.defaultText}`);
  else if (s.type === "boolean") parts.push(d ? "default on" : "");
  else if (d !== undefined) parts.push(`default ${toUser(s, d)}`);
  if (s.live) parts.push("live");
  const text = parts.filter(Boolean).join("; ");
  return text ? ` (${text})` : "";
}

/** The relay's `--help`, from the table of settings. */
export const RELAY_USAGE = [
  `tcp-relay: pairs servers behind NAT with their clients

Usage: deno run -A jsr:@x/tcp-relay/relay [options]
       deno run -A jsr:@x/tcp-relay/relay names (add NAME [--private] | remove NAME | list) --data DIR

Options:`,
  helpLines(
    "  --config FILE",
    "settings from a TOML file: each setting below is a key of the flag's " +
      "name (max-per-ip = 10); a flag given here wins over the file. " +
      "Reloaded on SIGHUP and when the file changes",
  ),
  ...SETTINGS.map((s) => {
    const name = s.type === "boolean"
      ? `${(s.cliDefault ?? s.default) ? "--[no-]" : "--"}${s.flag}`
      : `--${s.flag} ${s.arg ?? "VALUE"}`;
    return helpLines(`  ${name}`, s.help + defaultText(s));
  }),
  helpLines("  -h, --help", "show this help"),
  helpLines("  -V, --version", "show the version"),
  `
Settings marked "live" change while the relay runs, without dropping a pair,
when the --config file is reloaded; the others need a restart.`,
].join("\n");

/**
 * Shuts `relay` down on SIGINT or SIGTERM, letting active pairs drain for
 * `drainSeconds()` (and saying so); a second signal stops the process at
 * once (exit 130). Disposing of it removes the signal listeners.
 */
export function stopOnSignals(
  relay: Relay,
  drainSeconds: () => number,
): Disposable {
  const log = getLogger(["tcp-relay", "relay"]);
  let stopping = false;
  const signals = ["SIGINT", "SIGTERM"] as const;
  const stop = () => {
    const count = relay.stats().activePairs;
    if (stopping) {
      log.warn("Stopping now: {count} pairs cut", { count });
      Deno.exit(130);
    }
    stopping = true;
    if (count > 0) {
      log.info(
        `Draining {count} ${
          count === 1 ? "pair" : "pairs"
        } for up to {seconds} s; Ctrl-C again to stop now`,
        { count, seconds: drainSeconds() },
      );
    }
    relay.shutdown();
  };
  for (const s of signals) Deno.addSignalListener(s, stop);
  return {
    [Symbol.dispose]() {
      for (const s of signals) Deno.removeSignalListener(s, stop);
    },
  };
}
