/**
 * What the config files of the server's and the client's executables share
 * (`server.ts --config services.toml`, `client.ts --config forwards.toml`):
 * TOML read with smol-toml, the line of each key found for messages
 * (`services.toml:7: pool takes a whole number from 1 to 1000, not 0`), the
 * values checked into helper options, secrets and certificates read from
 * files named relative to the config file, and a warning for a secret
 * written inline in a file that every user may read.
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import { parse, TomlError } from "smol-toml";
import { LOG_LEVELS, LOG_LEVELS_TEXT, UsageError } from "./_common.ts";
import { relayList } from "./_peer.ts";

/** One table of an array of tables: the `index`th `[[name]]` (from 0). */
export interface Table {
  name: string;
  index: number;
}

/** A value as a message shows it: strings quoted, tables and arrays by kind. */
function shown(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "an array";
  if (value instanceof Date) return value.toISOString();
  if (typeof value === "object" && value !== null) return "a table";
  return String(value);
}

/** `key`, `"key"` or `'key'` as a regular expression. */
function keyPattern(key: string): string {
  const k = key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return `(?:${k}|"${k}"|'${k}')`;
}

/** A TOML config file: its path, its document, and where each key is. */
export class ConfigFile {
  /** The path given. */
  readonly path: string;
  /** The parsed document. */
  readonly doc: Record<string, unknown>;
  #lines: string[];

  /** Reads and parses the file at `path`; a UsageError if it cannot. */
  static async read(path: string): Promise<ConfigFile> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      throw new UsageError(
        `--config: cannot read ${path}: ${(e as Error).message}`,
      );
    }
    return new ConfigFile(path, text);
  }

  /** Parses `text`, the file at `path`; a UsageError with the line and column if it does not. */
  constructor(path: string, text: string) {
    this.path = path;
    this.#lines = text.split("\n");
    try {
      this.doc = parse(text);
    } catch (e) {
      if (!(e instanceof TomlError)) throw e;
      const why = e.message.split("\n")[0]
        .replace(/^Invalid TOML document: /, "");
      throw new UsageError(`${path}:${e.line}:${e.column}: ${why}`);
    }
  }

  /** A file named in the config file: relative to the config file's folder. */
  resolve(file: string): string {
    return resolve(dirname(this.path), file);
  }

  /**
   * The line of `key` at the top level, or in `table`; with no `key` (or
   * one not found in a table), the table's header.
   */
  line(key?: string, table?: Table): number | undefined {
    const header = /^\s*\[\[\s*("[^"]*"|'[^']*'|[^\]\s]+)\s*\]\]/;
    const keyLine = key === undefined
      ? undefined
      : new RegExp(`^\\s*${keyPattern(key)}\\s*[=.]`);
    const tableLine = key === undefined
      ? undefined
      : new RegExp(`^\\s*\\[\\[?\\s*${keyPattern(key)}\\s*[\\].]`);
    const seen = new Map<string, number>();
    let scope: Table | undefined, headerLine: number | undefined;
    for (const [i, text] of this.#lines.entries()) {
      const m = header.exec(text);
      if (m) {
        const name = m[1].replace(/^["']|["']$/g, "");
        const index = seen.get(name) ?? 0;
        seen.set(name, index + 1);
        scope = { name, index };
      } else if (/^\s*\[/.test(text)) scope = { name: "", index: -1 };
      const here = table
        ? scope?.name === table.name && scope.index === table.index
        : scope === undefined;
      if (m && here) headerLine = i + 1;
      if (!table && tableLine?.test(text)) return i + 1;
      if (here && keyLine?.test(text)) return i + 1;
    }
    return headerLine;
  }

  /** `path:line: ` of `key` (see {@linkcode ConfigFile.line}), or `path: `. */
  where(key?: string, table?: Table): string {
    const line = this.line(key, table);
    return line === undefined ? this.path : `${this.path}:${line}`;
  }

  /**
   * The tables of the array of tables `name` (`[[name]]`), each with the
   * keys to check it by; a UsageError if `name` is not such an array.
   */
  tables(name: string): Keys[] {
    const raw = this.doc[name];
    if (raw === undefined) return [];
    if (
      !Array.isArray(raw) ||
      !raw.every((t) => typeof t === "object" && t && !Array.isArray(t))
    ) {
      throw new UsageError(
        `${this.where(name)}: ${name} takes tables, each one [[${name}]]`,
      );
    }
    return raw.map((t, index) =>
      new Keys(this, t as Record<string, unknown>, { name, index })
    );
  }

  /** Whether every user may read the file (never on a system without modes). */
  async worldReadable(file = this.path): Promise<boolean> {
    try {
      return (((await Deno.stat(file)).mode ?? 0) & 0o004) !== 0;
    } catch {
      return false;
    }
  }
}

/** A secret read from a config file. */
export interface Secret {
  /** The secret. */
  value: string;
  /** The key it came from: `secret`, or `secret_file`. */
  key: string;
  /** The file it was read from, for `*_file`. */
  file?: string;
}

/** The keys of the top level of a config file or of one of its tables, checked one by one. */
export class Keys {
  /** The file. */
  readonly file: ConfigFile;
  /** The table's values (or the top level's). */
  readonly values: Record<string, unknown>;
  /** Which table, or `undefined` for the top level. */
  readonly table?: Table;

  /** Keys of `values`, the top level of `file` or its `table`. */
  constructor(
    file: ConfigFile,
    values: Record<string, unknown>,
    table?: Table,
  ) {
    this.file = file;
    this.values = values;
    this.table = table;
  }

  /** `path:line` of `key` in this table (its header without a key). */
  where(key?: string): string {
    return this.file.where(key, this.table);
  }

  /** A UsageError at `key`'s line: `path:line: text`. */
  error(key: string | undefined, text: string): UsageError {
    return new UsageError(`${this.where(key)}: ${text}`);
  }

  /** Fails at the first key not in `allowed`. */
  only(allowed: readonly string[]): void {
    for (const key of Object.keys(this.values)) {
      if (allowed.includes(key)) continue;
      const inTable = this.table ? ` in a [[${this.table.name}]]` : "";
      throw this.error(
        key,
        `unknown key ${key}${inTable} (the keys: ${allowed.join(", ")})`,
      );
    }
  }

  /** A value of `key` that is not what it takes. */
  bad(key: string, takes: string): UsageError {
    return this.error(
      key,
      `${key} takes ${takes}, not ${shown(this.values[key])}`,
    );
  }

  /** Fails unless `key` is given. */
  required(key: string, what: string): void {
    if (this.values[key] !== undefined) return;
    throw this.error(
      undefined,
      `[[${this.table?.name}]] has no ${key} (${what})`,
    );
  }

  /** A string that is not empty. */
  text(key: string): string | undefined {
    const v = this.values[key];
    if (v === undefined) return undefined;
    if (typeof v !== "string" || v.trim() === "") {
      throw this.bad(key, "a string");
    }
    return v;
  }

  /** `true` or `false`. */
  flag(key: string): boolean | undefined {
    const v = this.values[key];
    if (v === undefined || typeof v === "boolean") return v;
    throw this.bad(key, "true or false");
  }

  /** A whole number from `min` to `max`. */
  whole(key: string, min: number, max: number): number | undefined {
    const v = this.values[key];
    if (v === undefined) return undefined;
    if (typeof v === "number" && Number.isInteger(v) && v >= min && v <= max) {
      return v;
    }
    throw this.bad(key, `a whole number from ${min} to ${max}`);
  }

  /** A number of seconds (above 0 with `positive`), in ms. */
  seconds(key: string, positive = false): number | undefined {
    const v = this.values[key];
    if (v === undefined) return undefined;
    if (typeof v === "number" && (positive ? v > 0 : v >= 0) && v <= 1e7) {
      return v * 1000;
    }
    throw this.bad(
      key,
      `a number of seconds ${positive ? "above 0" : "from 0"} to 10000000`,
    );
  }

  /** One of `LOG_LEVELS`. */
  logLevel(key: string): string | undefined {
    const v = this.values[key];
    if (v === undefined || LOG_LEVELS.includes(v as string)) {
      return v as string | undefined;
    }
    throw this.bad(key, `one of ${LOG_LEVELS_TEXT}`);
  }

  /** `"text"` or `"json"`. */
  logFormat(key: string): string | undefined {
    const v = this.values[key];
    if (v === undefined || v === "text" || v === "json") {
      return v as string | undefined;
    }
    throw this.bad(key, "text or json");
  }

  /**
   * Relays: `"HOST[:PORT]"`, a comma-separated list in one string, or an
   * array of such strings; the port defaults to `role`'s.
   */
  relays(
    key: string,
    role: "server" | "client",
  ): { hostname: string; port: number }[] | undefined {
    const v = this.values[key];
    if (v === undefined) return undefined;
    const list = Array.isArray(v) ? v : [v];
    if (
      list.length === 0 || !list.every((r) => typeof r === "string")
    ) {
      throw this.bad(key, `"HOST[:PORT]" or a list of them`);
    }
    try {
      return relayList(key, list.join(","), role);
    } catch (e) {
      throw this.error(key, (e as Error).message.replace(/^--/, ""));
    }
  }

  /** A value checked by one of `_common.ts`'s flag checks, its message moved to `key`'s line. */
  checked<T>(key: string, check: (value: string) => T): T | undefined {
    const v = this.values[key];
    if (v === undefined) return undefined;
    try {
      return check(typeof v === "number" ? String(v) : this.text(key)!);
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
      throw this.error(key, e.message.replace(/^--/, ""));
    }
  }

  /**
   * A secret given inline as `key` or in the file `key_file` (its text,
   * without the line end); a UsageError if both are given, or the file
   * cannot be read or is empty.
   */
  async secret(key: string): Promise<Secret | undefined> {
    const inline = this.text(key), fileKey = `${key}_file`;
    const named = this.text(fileKey);
    if (inline !== undefined && named !== undefined) {
      throw this.error(fileKey, `give ${key} or ${fileKey}, not both`);
    }
    if (inline !== undefined) return { value: inline.trim(), key };
    if (named === undefined) return undefined;
    const file = this.file.resolve(named);
    let value: string;
    try {
      value = (await Deno.readTextFile(file)).trim();
    } catch (e) {
      throw this.error(
        fileKey,
        `${fileKey}: cannot read ${file}: ${(e as Error).message}`,
      );
    }
    if (!value) throw this.error(fileKey, `${fileKey}: ${file} is empty`);
    return { value, key: fileKey, file };
  }

  /**
   * TLS settings: `tls`, and a certificate to trust as `ca` (PEM text) or
   * `ca_file`; this table's own over `shared` (the top level's). A `ca`
   * without `tls = true` is a UsageError.
   */
  async tlsSettings(
    shared?: { tls?: boolean; ca?: string },
  ): Promise<{ tls?: boolean; ca?: string }> {
    const tls = this.flag("tls") ?? shared?.tls;
    const own = await this.ca();
    if (own !== undefined && !tls) {
      const key = this.values.ca === undefined ? "ca_file" : "ca";
      throw this.error(key, `${key} goes with tls = true`);
    }
    return { tls, ca: own ?? shared?.ca };
  }

  /** A certificate as PEM text: inline as `ca`, or in the file `ca_file`. */
  async ca(): Promise<string | undefined> {
    const ca = await this.secret("ca");
    if (ca && !ca.value.includes("-----BEGIN")) {
      throw this.error(
        ca.key,
        ca.file
          ? `ca_file: ${ca.file} holds no PEM certificate`
          : "ca takes a certificate's PEM text (for a file, ca_file)",
      );
    }
    return ca?.value;
  }
}

/**
 * A warning for a secret (`what`: `secret of "x"`) of `keys` written inline
 * in a config file that every user may read, or kept in such a file;
 * `undefined` if neither.
 */
export async function exposed(
  keys: Keys,
  secret: Secret | undefined,
  what: string,
): Promise<string | undefined> {
  if (!secret) return undefined;
  const { file } = keys;
  if (secret.file) {
    if (!await file.worldReadable(secret.file)) return undefined;
    return `${secret.file} (the ${what}) is readable by every user: chmod o-r ${secret.file}`;
  }
  if (!await file.worldReadable()) return undefined;
  return `${
    keys.where(secret.key)
  }: the ${what} is written inline in a file every user can read: move it to ${secret.key}_file, or chmod o-r ${file.path}`;
}
