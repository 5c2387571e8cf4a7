/**
 * What the three executables share: flag parsing with clear errors (exit 2),
 * logging set up with LogTape, and stopping on SIGINT/SIGTERM.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import {
  configure,
  jsonLinesFormatter,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";
import { parseHostPort, VERSION } from "../protocol/_wire.ts";

/** A bad command line: the message is printed and the process exits 2. */
export class UsageError extends Error {}

const encoder = new TextEncoder();
/** The levels `--log-level` takes, least severe first. */
export const LOG_LEVELS = [
  "trace",
  "debug",
  "info",
  "warning",
  "error",
  "fatal",
];
/** The levels for a `--help` text: "trace, debug, info, warning, error, fatal". */
export const LOG_LEVELS_TEXT = LOG_LEVELS.join(", ");

/** The options every executable takes besides its own. */
export const COMMON_OPTIONS = {
  "log-level": { type: "string", default: "info" },
  "log-format": { type: "string", default: "text" },
  help: { type: "boolean", short: "h", default: false },
  version: { type: "boolean", short: "V", default: false },
} as const satisfies ParseArgsConfig["options"];

/** The flags of server.ts and client.ts for reaching the relay over TLS. */
export const TLS_OPTIONS = {
  tls: { type: "boolean", default: false },
  ca: { type: "string" },
} as const satisfies ParseArgsConfig["options"];

/** `tls` and `caCerts` helper options from `--tls` and `--ca FILE`. */
export function tlsOptions(
  v: Record<string, unknown>,
): { tls?: boolean; caCerts?: string[] } {
  if (v.ca === undefined) return v.tls ? { tls: true } : {};
  if (!v.tls) throw new UsageError("--ca goes with --tls");
  try {
    return { tls: true, caCerts: [Deno.readTextFileSync(v.ca as string)] };
  } catch (e) {
    throw new UsageError(`--ca: cannot read ${v.ca}: ${(e as Error).message}`);
  }
}

/**
 * Parses `args` strictly; unknown flags, stray words and a flag given twice
 * (`--name a --name b`, `--tls --no-tls`) are {@linkcode UsageError}s, except
 * for options declared `multiple`.
 */
export function parseFlags<O extends NonNullable<ParseArgsConfig["options"]>>(
  args: string[],
  options: O,
) {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options,
      strict: true,
      allowPositionals: false,
      allowNegative: true,
      tokens: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\.$/, ""));
  }
  const seen = new Set<string>();
  for (const token of parsed.tokens) {
    if (token.kind !== "option") continue;
    const name = !(token.name in options) && token.name.startsWith("no-")
      ? token.name.slice(3)
      : token.name;
    if ((options[name] as { multiple?: boolean })?.multiple) continue;
    if (seen.has(name)) {
      throw new UsageError(`--${name} is given more than once`);
    }
    seen.add(name);
  }
  return parsed.values;
}

/**
 * `HOST:PORT` (or `[HOST:]PORT` with `hostOptional`, host 127.0.0.1) from a
 * flag, with a port from 1 to 65535; `defaultPort` makes the port optional
 * (`HOST[:PORT]`). A bad value is a {@linkcode UsageError} showing the form.
 */
export function address(
  flag: string,
  value: string,
  form: { defaultPort?: number; hostOptional?: boolean } = {},
): { hostname: string; port: number } {
  const shape = form.hostOptional
    ? "[HOST:]PORT"
    : form.defaultPort !== undefined
    ? "HOST[:PORT]"
    : "HOST:PORT";
  const m = /^(?:(?:\[([^\]]+)\]|([^:\[\]]*)):)?(\d{1,5})$/.exec(value);
  const bad = () =>
    new UsageError(
      `--${flag} takes ${shape} with a port from 1 to 65535, not "${value}"`,
    );
  if (form.hostOptional) {
    if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) throw bad();
    return { hostname: m[1] ?? (m[2] || "127.0.0.1"), port: Number(m[3]) };
  }
  let addr;
  try {
    addr = parseHostPort(value, form.defaultPort);
  } catch {
    throw bad();
  }
  if (addr.port < 1 || !/[^\s]/.test(value) || value.includes("[]")) {
    throw bad();
  }
  return addr;
}

/** What an error says, without Deno's " (os error N)". */
export function reason(e: unknown): string {
  return String((e as Error)?.message ?? e).replace(/ \(os error \d+\)$/, "");
}

/** A number of seconds from a flag, in milliseconds. */
export function seconds(flag: string, value: string | undefined): number {
  const n = Number(value);
  if (value === undefined || value.trim() === "" || !(n >= 0) || n > 1e7) {
    throw new UsageError(`--${flag} takes a number of seconds, not "${value}"`);
  }
  return n * 1000;
}

/** A whole number from a flag, within `[min, max]`. */
export function integer(
  flag: string,
  value: string | undefined,
  min: number,
  max: number,
): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max || value?.trim() === "") {
    throw new UsageError(
      `--${flag} takes a whole number from ${min} to ${max}, not "${value}"`,
    );
  }
  return n;
}

const LEVEL_TAGS: Record<string, string> = {
  trace: "TRC",
  debug: "DBG",
  info: "INF",
  warning: "WRN",
  error: "ERR",
  fatal: "FTL",
};
/** Strings Deno.inspect shows in plain double quotes: printable ASCII, no quotes, no backslash. */
const PLAIN = /^[\x20\x21\x23-\x26\x28-\x5b\x5d-\x5f\x61-\x7e]*$/;
let stampSecond = -1, stampText = "", stampZone = "";

/** `2026-11-24 21:23:02.432 +00:00`, the date part cached per second. */
function stamp(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== stampSecond) {
    const d = new Date(ms), off = -d.getTimezoneOffset();
    const pad = (n: number, w = 2) => String(n).padStart(w, "0");
    stampSecond = second;
    stampText = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${
      pad(d.getDate())
    } ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.`;
    stampZone = ` ${off < 0 ? "-" : "+"}${
      pad(Math.floor(Math.abs(off) / 60))
    }:${pad(Math.abs(off) % 60)}`;
  }
  return stampText + String(ms - second * 1000).padStart(3, "0") + stampZone;
}

/**
 * One text line per record, as LogTape's text formatter writes it, at a
 * fraction of its cost (a log line per pairing is on the relay's hot path).
 */
export function textLine(record: LogRecord): string {
  let text = "";
  for (let i = 0; i < record.message.length; i++) {
    const part = record.message[i];
    // a plain string is quoted as Deno.inspect would, without its cost
    text += i % 2 === 0
      ? part
      : typeof part === "string" && PLAIN.test(part)
      ? `"${part}"`
      : typeof part === "number" && !Object.is(part, -0)
      ? String(part)
      : Deno.inspect(part);
  }
  return `${stamp(record.timestamp)} [${LEVEL_TAGS[record.level]}] ${
    record.category.join("·")
  }: ${text}\n`;
}

/** Sets up LogTape on stderr: text lines, or JSON lines for `json`. */
export async function setupLogging(
  level: string | undefined,
  format: string | undefined,
): Promise<void> {
  if (!LOG_LEVELS.includes(level ?? "")) {
    throw new UsageError(
      `--log-level takes one of ${LOG_LEVELS_TEXT}, not "${level}"`,
    );
  }
  if (format !== "text" && format !== "json") {
    throw new UsageError(`--log-format takes text or json, not "${format}"`);
  }
  const formatter = format === "json" ? jsonLinesFormatter : textLine;
  await configure({
    sinks: {
      // Synchronous writes to stderr: stdout may carry data (client --stdio),
      // and no line is lost at exit.
      stderr: (record: LogRecord) => {
        Deno.stderr.writeSync(encoder.encode(formatter(record)));
      },
    },
    loggers: [
      {
        category: "tcp-relay",
        lowestLevel: level as LogLevel,
        sinks: ["stderr"],
      },
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["stderr"],
      },
    ],
  });
}

/**
 * Runs an executable's `main`: prints `--help`/`--version`, turns usage errors
 * into exit 2 and other failures into exit 1 with the message on stderr.
 */
export async function runMain(
  usage: string,
  parse: () => Record<string, unknown>,
  main: (values: Record<string, unknown>) => Promise<number | void>,
): Promise<never> {
  let code = 0;
  try {
    const values = parse();
    if (values.help) console.log(usage);
    else if (values.version) console.log(VERSION);
    else code = (await main(values)) ?? 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message}\n\n${usage}`);
      code = 2;
    } else {
      console.error(`error: ${e instanceof Error ? e.message : e}`);
      code = 1;
    }
  }
  Deno.exit(code);
}

/** An AbortSignal that aborts on the first SIGINT or SIGTERM. */
export function stopSignal(): AbortSignal {
  const ac = new AbortController();
  const stop = () => {
    ac.abort();
    for (const s of ["SIGINT", "SIGTERM"] as const) {
      Deno.removeSignalListener(s, stop);
    }
  };
  for (const s of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(s, stop);
  }
  return ac.signal;
}
