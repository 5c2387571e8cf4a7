/**
 * Values checked against the table of settings (`_settings.ts`): what each
 * setting takes, in the user's units or the library's, the checks of
 * settings that go together, `serveRelay`'s options with their defaults
 * filled in, and the changes `Relay.reconfigure` may make. Library errors
 * are TypeError/RangeError naming the option.
 *
 * @module
 */

import { type Setting, settingOf, SETTINGS } from "./_settings.ts";

/** The value at `path` ("limits.maxPerIp") of `obj`. */
export function getPath(obj: unknown, path: string): unknown {
  let v = obj;
  for (const part of path.split(".")) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

/** Sets the value at `path` of `obj`, making the objects on the way. */
export function setPath(
  obj: Record<string, unknown>,
  path: string,
  value: unknown,
): void {
  const parts = path.split(".");
  let o = obj;
  for (const part of parts.slice(0, -1)) {
    o = (o[part] ??= {}) as Record<string, unknown>;
  }
  o[parts.at(-1)!] = value;
}

function either(words: readonly string[]): string {
  return words.length === 2
    ? `${words[0]} or ${words[1]}`
    : `one of ${words.join(", ")}`;
}

/** What `s` takes, in the user's units (flags, config files) or the library's. */
export function expects(s: Setting, units: "user" | "library"): string {
  switch (s.type) {
    case "whole":
      return `a whole number from ${s.min} to ${s.max}`;
    case "seconds":
      return units === "user"
        ? `a number of seconds from ${s.min! / 1000} to ${s.max! / 1000}`
        : `a number of ms from ${s.min} to ${s.max}`;
    case "boolean":
      return units === "user" ? "true or false" : "a boolean";
    case "choice":
      return either(s.choices!);
    case "file":
      return units === "user" ? "a file name" : "PEM text";
    case "dir":
      return "a folder name";
    case "string":
      return "a non-empty string";
  }
}

/**
 * Why `value` (in the library's unit) is not a value of `s`: `"type"` (a
 * TypeError), `"range"` (a RangeError), or `undefined` if it is one.
 */
export function problem(
  s: Setting,
  value: unknown,
): "type" | "range" | undefined {
  switch (s.type) {
    case "whole":
    case "seconds":
      if (typeof value !== "number") return "type";
      if (s.type === "whole" && !Number.isInteger(value)) return "range";
      return value >= s.min! && value <= s.max! ? undefined : "range";
    case "boolean":
      return typeof value === "boolean" ? undefined : "type";
    case "choice":
      if (typeof value !== "string") return "type";
      return s.choices!.includes(value) ? undefined : "range";
    default:
      if (typeof value !== "string") return "type";
      return value.trim() === "" ? "range" : undefined;
  }
}

/** `value` (of the library) checked for the library: TypeError/RangeError naming the option. */
function checked(s: Setting, value: unknown): unknown {
  const why = problem(s, value);
  if (!why) return value;
  const shown = typeof value === "string"
    ? JSON.stringify(value)
    : String(value);
  const E = why === "type" ? TypeError : RangeError;
  throw new E(`${s.key} must be ${expects(s, "library")}, not ${shown}`);
}

/**
 * What is wrong with the settings together, given each one's value by
 * `get(flag)` and its name for the message by `name(setting)`; `undefined`
 * if nothing is.
 */
export function conflict(
  get: (flag: string) => unknown,
  name: (s: Setting) => string,
): { message: string; range: boolean } | undefined {
  const n = (flag: string) => name(settingOf(flag)!);
  if ((get("tls-cert") === undefined) !== (get("tls-key") === undefined)) {
    return {
      message: `${n("tls-cert")} and ${n("tls-key")} go together`,
      range: false,
    };
  }
  const server = get("server-port"), client = get("client-port");
  if (server === client && server !== 0) {
    return {
      message: `${n("server-port")} and ${n("client-port")} must differ ` +
        `(both ${server})`,
      range: true,
    };
  }
}

/**
 * The `serveRelay` options `options` with every setting checked (a
 * TypeError or RangeError naming the option) and the defaults filled in.
 */
export function resolveOptions(
  options: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    if (!s.library) continue;
    const v = getPath(options, s.key);
    const value = v === undefined ? s.default : checked(s, v);
    if (value !== undefined) setPath(out, s.key, value);
  }
  const bad = conflict(
    (flag) => getPath(out, settingOf(flag)!.key),
    (s) => s.key,
  );
  if (bad) throw new (bad.range ? RangeError : TypeError)(bad.message);
  return out;
}

/**
 * The live changes `changes` (`serveRelay` option paths) checked: a
 * TypeError for an option that is not a setting or cannot change while the
 * relay runs, a TypeError or RangeError for a bad value. Returns the options
 * given, as option paths and values.
 */
export function checkChanges(
  changes: Record<string, unknown>,
): [key: string, value: unknown][] {
  const restart = (key: string) =>
    new TypeError(`${key} cannot change while the relay runs: restart it`);
  const leaves: [string, unknown][] = [];
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) continue;
    const under = SETTINGS.filter((s) => s.key.startsWith(`${k}.`));
    if (!under.length) leaves.push([k, v]);
    else if (!under.some((s) => s.live)) throw restart(k);
    else if (v === null || typeof v !== "object") {
      throw new TypeError(`${k} must be an object, not ${v}`);
    } else {
      for (const [k2, v2] of Object.entries(v)) {
        if (v2 !== undefined) leaves.push([`${k}.${k2}`, v2]);
      }
    }
  }
  return leaves.map(([key, value]) => {
    const s = SETTINGS.find((s) => s.library && s.key === key);
    if (!s) throw new TypeError(`${key} is not an option of the relay`);
    if (!s.live) throw restart(key);
    return [key, checked(s, value)];
  });
}
