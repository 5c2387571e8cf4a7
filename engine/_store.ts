/**
 * The relay's embedded credentials store for owned names: `DIR/names.json`,
 * `{ "version": 1, "names": { "<name>": { "secret", "clientKey"?, "created" } } }`,
 * shared by the running relay and an operator's `relay.ts names` commands.
 *
 * Every change is a read-modify-write under a lock (an OS lock on `names.lock`,
 * which the system drops when its holder dies, so a `kill -9` leaves no lock
 * to wait for), written to a temporary file that is synced and renamed over
 * `names.json`, then the directory synced: a crash leaves the old file or the
 * new one, and a change whose promise resolved is on disk.
 *
 * @module
 */

import { basename, join } from "node:path";
import { getLogger } from "@logtape/logtape";
import { newSecret } from "../protocol/_auth.ts";
import { nameProblem } from "../protocol/_wire.ts";

/** What the relay knows of an owned name. */
export interface NameRecord {
  /** The owner's secret. */
  secret: string;
  /** The clients' secret, for a private name only. */
  clientKey?: string;
  /** When the name was added, as an ISO date. */
  created: string;
}

type Names = Map<string, NameRecord>;

const log = getLogger(["tcp-relay", "store"]);
const FILE = "names.json";
/** How long a change waits for another process's lock (ms). */
const LOCK_WAIT = 5_000;
/** How long watch() waits for the changes on disk to settle (ms). */
const DEBOUNCE = 100;
const NEW = { write: true, createNew: true, mode: 0o600 } as const;
const LOCK_FILE = {
  read: true,
  write: true,
  create: true,
  mode: 0o600,
} as const;
/** Whether a file may be removed while open (and has inode numbers). */
const posix = Deno.build.os !== "windows";
const encoder = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The names, secrets and client keys of owned names, kept in `DIR/names.json`. */
export class NameStore {
  /** The store's file, `DIR/names.json`. */
  readonly path: string;
  readonly #dir: string;
  #names: Names;
  /** Counts the changes written here, so that a slower reload() cannot undo one. */
  #generation = 0;
  /** This instance's changes, one at a time (the lock file serializes processes). */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(dir: string, names: Names) {
    this.#dir = dir;
    this.path = join(dir, FILE);
    this.#names = names;
  }

  /** Opens (creating DIR with mode 0o700 if missing) the store in DIR: file DIR/names.json, mode 0o600. */
  static async open(dir: string): Promise<NameStore> {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 }); // umask can only narrow it
    return new NameStore(dir, await read(join(dir, FILE)));
  }

  /** The record of `name`, or `undefined` if it is not owned. */
  get(name: string): NameRecord | undefined {
    return this.#names.get(name);
  }

  /** The owned names, sorted. */
  names(): string[] {
    return [...this.#names.keys()].sort();
  }

  /** Adds `name` with a new secret (and a new clientKey if `private`); resolves once it is durably on disk. Throws RangeError("Name X exists") if present, unless `replace`. */
  add(
    name: string,
    options: { private?: boolean; replace?: boolean } = {},
  ): Promise<NameRecord> {
    checkName(name);
    return this.#change((names) => {
      if (names.has(name) && !options.replace) {
        throw new RangeError(`Name ${name} exists`);
      }
      const clientKey = options.private ? newSecret() : undefined;
      const record = toRecord(newSecret(), new Date().toISOString(), clientKey);
      names.set(name, record);
      return [record, true];
    });
  }

  /** Removes `name`; resolves true if it was there, once durably on disk. */
  remove(name: string): Promise<boolean> {
    checkName(name);
    return this.#change((names) => {
      const had = names.delete(name);
      return [had, had];
    });
  }

  /** Re-reads the file (another process may have written it); keeps the old content and throws if the file is corrupt. */
  async reload(): Promise<void> {
    const generation = this.#generation;
    const names = await read(this.path);
    if (generation === this.#generation) this.#names = names;
  }

  /**
   * Calls `onChange()` after the file changes on disk (Deno.watchFs on DIR,
   * debounced ~100 ms, after reload() succeeded), this instance's own writes
   * included; a corrupt file is logged and keeps the old content. The returned
   * Disposable stops watching.
   */
  watch(onChange: () => void): Disposable {
    const watcher = Deno.watchFs(this.#dir, { recursive: false });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let closed = false;
    const changed = async () => {
      timer = undefined;
      try {
        await this.reload();
      } catch (e) {
        return log.warn("Kept the old names: {error}", { error: String(e) });
      }
      if (!closed) onChange();
    };
    (async () => {
      for await (const event of watcher) {
        if (!event.paths.some((p) => basename(p) === FILE)) continue;
        clearTimeout(timer);
        timer = setTimeout(changed, DEBOUNCE);
      }
    })().catch(() => {}); // only when closed
    return {
      [Symbol.dispose]() {
        closed = true;
        clearTimeout(timer);
        watcher.close();
      },
    };
  }

  /** Applies `apply` to the file's names under the lock; writes them if it says so. */
  #change<T>(apply: (names: Names) => [T, boolean]): Promise<T> {
    const run = async () => {
      const unlock = await lock(join(this.#dir, "names.lock"));
      try {
        const names = await read(this.path);
        const [result, write] = apply(names);
        if (write) await save(this.#dir, this.path, names);
        this.#names = names;
        this.#generation++;
        return result;
      } finally {
        await unlock();
      }
    };
    const done = this.#queue.then(run);
    this.#queue = done.catch(() => {});
    return done;
  }
}

function checkName(name: string): void {
  const problem = nameProblem(name);
  if (problem) {
    throw new RangeError(
      `Invalid name ${JSON.stringify(name.slice(0, 200))}: ${problem}`,
    );
  }
}

/** `promise`'s value, or `fallback` if it failed with NotFound. */
async function unlessMissing<T, F>(promise: Promise<T>, fallback: F) {
  try {
    return await promise;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return fallback;
    throw e;
  }
}

function toRecord(secret: string, created: string, clientKey?: string) {
  const key = clientKey === undefined ? {} : { clientKey };
  return Object.freeze<NameRecord>({ secret, ...key, created });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The names in the file at `path` (none if it is missing); throws if it is corrupt. */
async function read(path: string): Promise<Names> {
  const text = await unlessMissing(Deno.readTextFile(path), null);
  if (text === null) return new Map();
  const corrupt = (why: string, cause?: unknown) =>
    new Error(`Corrupt name store ${path}: ${why}`, { cause });
  if (!text.trim()) {
    throw corrupt(
      `the file is empty (an empty store is {"version": 1, "names": {}})`,
    );
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw corrupt(`not JSON: ${(e as Error).message}`, e);
  }
  if (!isObject(data)) throw corrupt("not a JSON object");
  if (data.version !== 1) {
    throw corrupt(
      "version" in data
        ? `version ${JSON.stringify(data.version)}, this relay reads version 1`
        : `no "version": 1`,
    );
  }
  if (!isObject(data.names)) throw corrupt(`"names" is not an object`);
  const names: Names = new Map();
  for (const [name, r] of Object.entries(data.names)) {
    const problem = nameProblem(name);
    if (problem) {
      throw corrupt(
        `invalid name ${JSON.stringify(name.slice(0, 200))}: ${problem}`,
      );
    }
    const at = `the record of ${name}`;
    if (!isObject(r)) throw corrupt(`${at} is not an object`);
    const { secret, created, clientKey } = r;
    if (typeof secret !== "string" || !secret) {
      throw corrupt(`${at} has no "secret" (a non-empty string)`);
    }
    if (typeof created !== "string") {
      throw corrupt(`${at} has no "created" (a date string)`);
    }
    if (
      clientKey !== undefined && (typeof clientKey !== "string" || !clientKey)
    ) {
      throw corrupt(`${at} has a "clientKey" that is not a non-empty string`);
    }
    names.set(name, toRecord(secret, created, clientKey));
  }
  return names;
}

/** Writes `names` to `path` atomically and durably; the caller holds the lock. */
async function save(dir: string, path: string, names: Names): Promise<void> {
  for await (const entry of Deno.readDir(dir)) { // a crashed writer's leftovers
    if (entry.name.startsWith(`${FILE}.tmp-`)) {
      await Deno.remove(join(dir, entry.name)).catch(() => {});
    }
  }
  const sorted = [...names].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
  const data = { version: 1, names: Object.fromEntries(sorted) };
  const bytes = encoder.encode(JSON.stringify(data, null, 2) + "\n");
  const tmp = `${path}.tmp-${newSecret().slice(0, 16)}`;
  try {
    using file = await Deno.open(tmp, NEW);
    for (let n = 0; n < bytes.length;) n += await file.write(bytes.subarray(n));
    await file.sync();
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  try {
    using d = await Deno.open(dir, { read: true });
    await d.sync();
  } catch { /* not supported here (Windows) */ }
}

/**
 * Takes the lock at `path`: an exclusive OS lock (flock) on the file, which the
 * system drops when its holder exits in any way, `kill -9` included, so that a
 * lock file left behind by a dead process is taken over at once, and one held by
 * a live process (in any pid namespace, or on another host where the
 * filesystem shares locks) is waited for. Resolves to its release, which removes
 * the file while still holding it.
 */
async function lock(path: string): Promise<() => Promise<void>> {
  const end = Date.now() + LOCK_WAIT;
  for (;;) {
    const file = await Deno.open(path, LOCK_FILE);
    let held = false;
    try {
      if (await tryLock(file, path)) {
        // The holder before us may have removed the file as it let go: then
        // this lock is on a file nobody else will open.
        if (!await isAt(file, path)) continue;
        held = true;
        await note(file);
        return async () => {
          try {
            if (posix) await unlessMissing(Deno.remove(path), undefined);
          } finally {
            file.close(); // unlocks
          }
        };
      }
    } finally {
      if (!held) file.close();
    }
    if (Date.now() > end) {
      const pid = /^\d+/.exec(await Deno.readTextFile(path).catch(() => ""));
      throw new Error(
        `Timed out after ${LOCK_WAIT / 1000} s waiting for the lock ${path}: ${
          pid ? `process ${pid[0]}` : "another process"
        } holds it`,
      );
    }
    await sleep(5 + Math.random() * 20);
  }
}

/** Whether this process now holds the OS lock on `file`, the lock file at `path`. */
async function tryLock(file: Deno.FsFile, path: string): Promise<boolean> {
  try {
    return await file.tryLock(true);
  } catch (e) {
    throw new Error(`Cannot lock ${path}: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

/** Whether the open `file` is the one now at `path`. */
async function isAt(file: Deno.FsFile, path: string): Promise<boolean> {
  const [open, named] = await Promise.all([
    file.stat(),
    unlessMissing(Deno.stat(path), null),
  ]);
  if (!named) return false;
  return open.ino === null ||
    (open.ino === named.ino && open.dev === named.dev);
}

/** Writes who holds the lock into its file: only a hint, for a timeout's message. */
async function note(file: Deno.FsFile): Promise<void> {
  try {
    await file.truncate(0);
    await file.write(
      encoder.encode(`${Deno.pid} ${new Date().toISOString()}\n`),
    );
  } catch { /* only a hint */ }
}
