/**
 * The relay's config file (`relay.ts --config relay.toml`): TOML whose keys
 * are the flags' names, checked against the table of settings with errors
 * that name the key and its line; and its reload on SIGHUP or a change of the
 * file, which applies what can change live, logs what changed, and leaves
 * (and logs) what needs a restart.
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import { parse, TomlError } from "smol-toml";
import {
  configureSync,
  getConfig,
  getLogger,
  type LogLevel,
} from "@logtape/logtape";
import {
  LOG_LEVELS,
  type Setting,
  settingOf,
  SETTINGS,
  type SettingValue,
} from "../engine/_settings.ts";
import { setPath } from "../engine/_options.ts";
import { UsageError } from "./_common.ts";
import {
  fromConfig,
  settle,
  shown,
  toLibrary,
  type UserValues,
} from "./_relay.ts";
import type { Relay } from "../relay.ts";
import { applyTokenFile } from "../admin/_flags.ts";

const log = getLogger(["tcp-relay", "relay"]);

/** How long a change of the file may go on before it is read (ms). */
const DEBOUNCE = 200;

/** The first line of `text` where `key` is set (`key =`, `key.x =`, `[key]`). */
function lineOf(text: string, key: string): number | undefined {
  const k = key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const name = `(?:${k}|"${k}"|'${k}')`;
  const re = new RegExp(
    `^[ \\t]*(?:${name}[ \\t]*[=.]|\\[\\[?[ \\t]*${name}[ \\t]*[\\].])`,
    "m",
  );
  const m = re.exec(text);
  return m ? text.slice(0, m.index).split("\n").length : undefined;
}

/**
 * The settings of the TOML file at `path`, by flag, in the user's units;
 * file and folder names are taken relative to the file's folder. A bad file
 * is a UsageError naming the file, the line and the key.
 */
export async function readConfig(
  path: string,
): Promise<{ values: UserValues; text: string }> {
  const text = await readText(path);
  return { values: parseConfig(text, path), text };
}

async function readText(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new UsageError(
      `--config: cannot read ${path}: ${(e as Error).message}`,
    );
  }
}

/** The settings of `text`, the TOML of the file at `path`: see {@linkcode readConfig}. */
export function parseConfig(text: string, path: string): UserValues {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text);
  } catch (e) {
    if (!(e instanceof TomlError)) throw e;
    const why = e.message.split("\n")[0].replace(
      /^Invalid TOML document: /,
      "",
    );
    throw new UsageError(`${path}:${e.line}:${e.column}: ${why}`);
  }
  const values: UserValues = {};
  for (const [key, raw] of Object.entries(doc)) {
    const line = lineOf(text, key);
    const where = line === undefined ? path : `${path}:${line}`;
    const s = settingOf(key);
    if (!s) {
      throw new UsageError(
        `${where}: unknown key ${key} (the keys are the flags of --help)`,
      );
    }
    const value = fromConfig(s, raw, where);
    values[key] = s.type === "file" || s.type === "dir"
      ? resolve(dirname(path), value as string)
      : value;
  }
  return values;
}

/** One setting's change on a reload. */
export interface Change {
  setting: Setting;
  from: SettingValue | undefined;
  to: SettingValue | undefined;
}

function listed(changes: Change[]): string {
  return changes.map((c) =>
    `${c.setting.flag} ${shown(c.from)} -> ${shown(c.to)}`
  ).join(", ");
}

/** `text` as a LogTape message template with no placeholders. */
function literal(text: string): string {
  return text.replace(/[{}]/g, (c) => c + c);
}

/** Sets the lowest level of the relay's logs, live. */
function setLogLevel(level: LogLevel): void {
  const config = getConfig();
  if (!config) return;
  configureSync({
    ...config,
    reset: true,
    loggers: config.loggers.map((l) =>
      l.category === "tcp-relay" ||
        (Array.isArray(l.category) && l.category.join() === "tcp-relay")
        ? { ...l, lowestLevel: level }
        : l
    ),
  });
}

/**
 * How each live setting of the executable's own (not a `serveRelay`
 * option) is applied; the others go to `Relay.reconfigure`.
 */
export const CLI_LIVE: Record<string, (value: SettingValue) => void> = {
  "log-level": (v) => setLogLevel(v as LogLevel),
  "admin-token-file": applyTokenFile,
};

/** Applies live `changes` to `relay` and to the process. */
export function applyLive(relay: Relay, changes: Change[]): void {
  const partial: Record<string, unknown> = {};
  for (const { setting: s, to } of changes) {
    if (!s.library) CLI_LIVE[s.flag]?.(to!);
    else setPath(partial, s.key, toLibrary(s, to!));
  }
  if (Object.keys(partial).length) relay.reconfigure(partial);
}

/** Whether `changes` make the logs less verbose. */
function quieter(changes: Change[]): boolean {
  const c = changes.find((c) => c.setting.flag === "log-level");
  const rank = (v: unknown) => LOG_LEVELS.indexOf(v as LogLevel);
  return !!c && rank(c.to) > rank(c.from);
}

/** What a {@linkcode ConfigReloader} starts from. */
export interface ReloaderOptions {
  /** The config file. */
  path: string;
  /** The settings given as flags: they win over the file's, on reloads too. */
  flags: UserValues;
  /** The file's settings as last read. */
  file: UserValues;
  /** The file's text as last read, if known. */
  text?: string;
  /** The settings in force; updated in place by each reload. */
  running: UserValues;
  /** Applies live changes (to the relay, to the logs). */
  apply(changes: Change[]): void;
}

/**
 * Reloads the config file on SIGHUP and when it changes on disk (watched
 * through its folder, debounced), one reload at a time.
 */
export class ConfigReloader implements Disposable {
  #o: ReloaderOptions;
  #queue: Promise<void> = Promise.resolve();
  #watcher?: Deno.FsWatcher;
  #timer?: ReturnType<typeof setTimeout>;

  constructor(options: ReloaderOptions) {
    this.#o = options;
  }

  /**
   * Reads the file again and applies it; a bad file is logged and changes
   * nothing. Unless `always`, a file whose text is as last read is left.
   */
  reload(always = true): Promise<void> {
    return this.#queue = this.#queue.then(() => this.#reload(always)).catch(
      (e) => log.error("Reload failed: {error}", { error: String(e) }),
    );
  }

  async #reload(always: boolean): Promise<void> {
    const { path, flags, running } = this.#o;
    let file: UserValues, next: UserValues;
    try {
      const text = await readText(path);
      if (!always && text === this.#o.text) return;
      this.#o.text = text;
      file = parseConfig(text, path);
      next = settle(file, flags);
    } catch (e) {
      const error = (e as Error).message;
      return log.error(
        literal(`Cannot reload ${path}, kept the running settings: ${error}`),
        { path, error },
      );
    }
    const live: Change[] = [], restart: Change[] = [];
    for (const s of SETTINGS) {
      const from = running[s.flag], to = next[s.flag];
      if (from === to) continue;
      (s.live ? live : restart).push({ setting: s, from, to });
    }
    const overridden = SETTINGS.filter((s) =>
      flags[s.flag] !== undefined && file[s.flag] !== this.#o.file[s.flag]
    );
    this.#o.file = file;
    const report = () => {
      log.info(
        literal(
          `Reloaded ${path}: ${live.length ? listed(live) : "no change"}`,
        ),
        { path, changes: live.map((c) => [c.setting.flag, c.from, c.to]) },
      );
    };
    if (quieter(live)) report();
    this.#o.apply(live);
    for (const c of live) running[c.setting.flag] = c.to;
    if (!quieter(live)) report();
    if (restart.length) {
      log.warn(
        literal(
          `Not applied from ${path}, needs a restart: ${listed(restart)}`,
        ),
        { path, changes: restart.map((c) => [c.setting.flag, c.from, c.to]) },
      );
    }
    for (const s of overridden) {
      log.info(
        literal(
          `${path}: ${s.flag} is given as --${s.flag} ${
            shown(flags[s.flag])
          }, which wins over the file's ${shown(file[s.flag])}`,
        ),
      );
    }
  }

  #hup = () => this.reload();

  /**
   * Starts reloading on SIGHUP, and when the file's text changes: any change
   * in its folder (an edit in place, a rename over it, a symbolic link
   * swapped as Kubernetes does) has it read again.
   */
  watch(): this {
    Deno.addSignalListener("SIGHUP", this.#hup);
    const watcher = this.#watcher = Deno.watchFs(dirname(this.#o.path), {
      recursive: false,
    });
    (async () => {
      for await (const _ of watcher) {
        clearTimeout(this.#timer);
        this.#timer = setTimeout(() => this.reload(false), DEBOUNCE);
      }
    })().catch(() => {}); // only when closed
    return this;
  }

  /** Stops watching. */
  [Symbol.dispose](): void {
    Deno.removeSignalListener("SIGHUP", this.#hup);
    clearTimeout(this.#timer);
    this.#watcher?.close();
  }
}
