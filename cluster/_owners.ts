/**
 * Owned names in cluster mode: the owners' secrets and clients' keys kept in
 * Redis, so that every node checks the same proofs and `relay.ts names ...
 * --cluster redis://…` manages them for the whole cluster.
 *
 * | key                       | type    | value                                          | TTL  |
 * | ------------------------- | ------- | ---------------------------------------------- | ---- |
 * | `tcp-relay:names`         | hash    | name → JSON `{ secret, clientKey?, created }`  | none |
 * | `tcp-relay:names:version` | integer | bumped by every change                         | none |
 *
 * Each node keeps a copy in memory (the engine asks synchronously) and reads
 * the hash again whenever the version it reads with its lease refresh
 * changed: a change reaches every node within about a second. Until its
 * first read, a node treats every name as owned by nobody it knows, so it
 * refuses them all rather than let anyone in; while Redis is away it keeps
 * the copy it has.
 *
 * @module
 */

import type { Redis } from "ioredis";
import { getLogger } from "@logtape/logtape";
import type { NameOwners } from "../engine/_owners.ts";
import type { NameRecord } from "../engine/_store.ts";
import { newSecret } from "../protocol/_auth.ts";
import { nameProblem } from "../protocol/_wire.ts";
import { connectRedis, loadRedis, PREFIX } from "./_registry.ts";

const log = getLogger(["tcp-relay", "cluster"]);

/** The hash of owned names. */
export const NAMES_KEY = `${PREFIX}names`;
/** The version of the owned names, bumped by every change. */
export const VERSION_KEY = `${PREFIX}names:version`;

function parse(all: Record<string, string>): Map<string, NameRecord> {
  const names = new Map<string, NameRecord>();
  for (const [name, json] of Object.entries(all)) {
    try {
      const r = JSON.parse(json);
      if (typeof r.secret !== "string" || nameProblem(name)) continue;
      names.set(
        name,
        Object.freeze({
          secret: r.secret,
          ...(typeof r.clientKey === "string"
            ? { clientKey: r.clientKey }
            : {}),
          created: String(r.created ?? ""),
        }),
      );
    } catch {
      log.warn("Ignored the unreadable record of {name} in Redis", { name });
    }
  }
  return names;
}

/** Nobody may use any name until the first read: a secret nobody knows. */
const UNKNOWN = Object.freeze({ secret: newSecret(), clientKey: newSecret() });

/** The owners a node checks, read from Redis: the engine's {@linkcode NameOwners}. */
export class RedisOwners implements NameOwners {
  #redis: Redis;
  #names?: Map<string, NameRecord>;
  #version?: string | null;
  #loading = false;
  #loaded = Promise.withResolvers<void>();

  constructor(url: string, node: string) {
    this.#redis = connectRedis(url, `tcp-relay-${node}-names`);
    this.#redis.on("ready", () => this.sync(undefined));
  }

  /** Settles after the first read of the names from Redis. */
  get loaded(): Promise<void> {
    return this.#loaded.promise;
  }

  get(name: string): { secret: string; clientKey?: string } | undefined {
    return this.#names ? this.#names.get(name) : UNKNOWN;
  }

  /** Reads the names again if `version` differs from the one read last. */
  sync(version: string | null | undefined): void {
    if (this.#loading || (this.#names && version === this.#version)) return;
    this.#loading = true;
    (async () => {
      const [[, v], [, all]] = (await this.#redis.multi().get(VERSION_KEY)
        .hgetall(NAMES_KEY).exec()) as [
          [unknown, string | null],
          [unknown, Record<string, string>],
        ];
      this.#names = parse(all ?? {});
      this.#version = v;
      this.#loaded.resolve();
    })().catch(() => {}).finally(() => this.#loading = false);
  }

  /** Open registration: makes the caller the owner of a name nobody owns. */
  async add(name: string): Promise<{ secret: string }> {
    const record = { secret: newSecret(), created: new Date().toISOString() };
    const [[, added]] = (await this.#redis.multi()
      .hsetnx(NAMES_KEY, name, JSON.stringify(record))
      .incr(VERSION_KEY).exec()) as [[unknown, number]];
    if (!added) throw new RangeError(`Name ${name} exists`);
    this.#names?.set(name, Object.freeze(record));
    return record;
  }

  /** Closes the connection to Redis. */
  async close(): Promise<void> {
    this.#redis.disconnect();
    await new Promise((r) => setTimeout(r, 0));
  }
}

/**
 * The owned names of a cluster as `relay.ts names ... --cluster` manages
 * them: the same calls as the credentials store (`engine/_store.ts`).
 */
export class ClusterNames implements AsyncDisposable {
  #redis: Redis;
  #names: Map<string, NameRecord>;

  private constructor(redis: Redis, names: Map<string, NameRecord>) {
    this.#redis = redis;
    this.#names = names;
  }

  /** Connects to the cluster's Redis at `url` and reads its names. */
  static async open(url: string): Promise<ClusterNames> {
    const { Redis } = await loadRedis();
    const redis = new Redis(url, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      connectTimeout: 5_000,
    });
    redis.on("error", () => {}); // the command's rejection tells
    try {
      await redis.connect();
      return new ClusterNames(redis, parse(await redis.hgetall(NAMES_KEY)));
    } catch (e) {
      redis.disconnect();
      throw new Error(
        `Cannot reach the cluster's Redis at ${url}: ${(e as Error).message}`,
      );
    }
  }

  /** Where the names are, for messages. */
  get path(): string {
    return `Redis ${this.#redis.options.host}:${this.#redis.options.port}`;
  }

  get(name: string): NameRecord | undefined {
    return this.#names.get(name);
  }

  names(): string[] {
    return [...this.#names.keys()].sort();
  }

  /** Adds `name` with a new secret (a clients' key too if `private`). */
  async add(
    name: string,
    options: { private?: boolean; replace?: boolean } = {},
  ): Promise<NameRecord> {
    const problem = nameProblem(name);
    if (problem) {
      throw new RangeError(`Invalid name ${JSON.stringify(name)}: ${problem}`);
    }
    const record: NameRecord = {
      secret: newSecret(),
      ...(options.private ? { clientKey: newSecret() } : {}),
      created: new Date().toISOString(),
    };
    const json = JSON.stringify(record);
    const multi = this.#redis.multi();
    if (options.replace) multi.hset(NAMES_KEY, name, json);
    else multi.hsetnx(NAMES_KEY, name, json);
    const [[, added]] = (await multi.incr(VERSION_KEY).exec()) as [
      [unknown, number],
    ];
    if (!added && !options.replace) throw new RangeError(`Name ${name} exists`);
    this.#names.set(name, record);
    return record;
  }

  /** Removes `name`; resolves true if it was there. */
  async remove(name: string): Promise<boolean> {
    const [[, n]] = (await this.#redis.multi().hdel(NAMES_KEY, name)
      .incr(VERSION_KEY).exec()) as [[unknown, number]];
    this.#names.delete(name);
    return n > 0;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#redis.quit().catch(() => this.#redis.disconnect());
  }
}
