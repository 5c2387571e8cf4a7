/**
 * The cluster's shared state in Redis: node membership under leases, and
 * per node the names it holds with how many servers are parked for each.
 *
 * Keys (every one written only by the node it names; see README, "Cluster"):
 *
 * | key                            | type   | value                                    | TTL                         |
 * | ------------------------------ | ------ | ---------------------------------------- | --------------------------- |
 * | `tcp-relay:node:<node>:lease`  | string | JSON `{ addr, instance, started }`       | 3 s, refreshed every second |
 * | `tcp-relay:node:<node>:parked` | hash   | name → servers parked there (0: reserved) | 3 s, refreshed with the lease |
 *
 * A node that stops refreshing (killed, cut off) loses both keys together
 * within 3 s: no ghost node is left. After Redis comes back (or the lease
 * lapsed) a node writes its whole state again. Each change of a node's
 * parked hash is also published on the channel `tcp-relay:parked` in the
 * same transaction, so that the other nodes keep a copy of it
 * (`cluster/_parked.ts`) and route without a lookup per client.
 *
 * @module
 */

import type { Redis } from "ioredis";
import { getLogger } from "@logtape/logtape";
import { changeMessage, ParkedView } from "./_parked.ts";

const log = getLogger(["tcp-relay", "cluster"]);

/** The prefix of every key the cluster writes. */
export const PREFIX = "tcp-relay:";
/** The channel of parked-count changes (`cluster/_parked.ts`). */
export const CHANNEL = `${PREFIX}parked`;
/** How long a node's entries live without a refresh (ms). */
export const LEASE = 3_000;
/** How often a node refreshes its lease (ms). */
export const REFRESH = 1_000;
/** How long a command to Redis may take before it counts as failed (ms). */
const COMMAND_TIMEOUT = 1_000;

/** The key of a node's lease. */
export function leaseKey(node: string): string {
  return `${PREFIX}node:${node}:lease`;
}

/** The key of a node's parked counts. */
export function parkedKey(node: string): string {
  return `${PREFIX}node:${node}:parked`;
}

/** Why a node name is not acceptable, or `undefined`. */
export function nodeNameProblem(node: string): string | undefined {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(node)) {
    return "a node name is 1 to 64 letters, digits, '.', '_' or '-'";
  }
}

/** The Redis client's module, loaded by the first node: a relay that is no node never loads it. */
export async function loadRedis(): Promise<
  { Redis: typeof import("ioredis").Redis }
> {
  const { Redis } = await import("ioredis");
  return { Redis };
}

/**
 * A Redis connection that fails fast while Redis is away (no queue of
 * commands) and reconnects by itself with exponential backoff and jitter.
 *
 * It is handed out at once while the client library loads: until then it
 * takes `on()` and `disconnect()` (they apply once loaded) and answers no
 * command, which is fine for callers that wait for `"ready"` before their
 * first one.
 */
export function connectRedis(url: string, name: string): Redis {
  let real: Redis | undefined;
  const early: ((redis: Redis) => void)[] = [];
  const handle: Redis = new Proxy({} as Redis, {
    get(_, key) {
      if (real) {
        const value = Reflect.get(real, key);
        return typeof value === "function" ? value.bind(real) : value;
      }
      if (key === "on") {
        return (event: string, fn: (...args: unknown[]) => void) => {
          early.push((r) => r.on(event, fn));
          return handle;
        };
      }
      if (key === "disconnect") return () => early.push((r) => r.disconnect());
      if (key === "status") return "wait";
      return () => {
        throw new Error("Redis unreachable");
      };
    },
  });
  loadRedis().then(
    ({ Redis }) => {
      real = open(Redis, url, name);
      for (const apply of early.splice(0)) apply(real);
    },
    (e) =>
      log.error("Cannot load the Redis client: {error}", { error: String(e) }),
  );
  return handle;
}

function open(
  Redis: typeof import("ioredis").Redis,
  url: string,
  name: string,
): Redis {
  const redis = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: COMMAND_TIMEOUT,
    connectTimeout: 2_000,
    connectionName: name,
    // a disconnect while reconnecting leaves no 2 s timer behind (ioredis
    // waits that long for a stream already closed)
    disconnectTimeout: 0,
    retryStrategy: (times: number) =>
      Math.round(Math.min(2_000, 50 * 2 ** times) * (0.5 + Math.random() / 2)),
  });
  let reported = false;
  redis.on("error", (e: Error) => {
    if (reported) return;
    reported = true;
    log.warn("Redis at {url} unreachable: {error}", {
      url: redact(url),
      error: e.message,
    });
  });
  redis.on("ready", () => reported = false);
  redis.connect().catch(() => {}); // retried by itself
  return redis;
}

/** `url` without its password, for logs. */
export function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@");
}

/** A node of the cluster as another node sees it. */
export interface Member {
  node: string;
  /** Where its peer port is reached, `host:port`. */
  addr: string;
}

/** Where a name is held in the cluster, from {@linkcode Registry.find}. */
export interface Holders {
  /** Some node (not this one) holds the name, parked servers or not. */
  known: boolean;
  /** The nodes with servers parked for it, most first. */
  nodes: (Member & { parked: number })[];
}

/** Options of {@linkcode Registry}. */
export interface RegistryOptions {
  /** `redis://HOST:PORT[/DB]`. */
  url: string;
  /** This node's name. */
  node: string;
  /** Where other nodes reach this node's peer port. */
  addr: string;
  /** Every name this node holds with its parked count (written after a lapse). */
  snapshot(): Map<string, number>;
  /** Called after each refresh with the owned-names version read. */
  onRefresh?(namesVersion: string | null): void;
}

/** This node's entries in Redis and what it reads of the others'. */
export class Registry {
  readonly redis: Redis;
  #options: RegistryOptions;
  #lease: string;
  #timer?: ReturnType<typeof setInterval>;
  #members = new Map<string, string>();
  /** The whole state must be written again (a lapse, a failed write). */
  #dirty = true;
  #up = false;
  #closed = false;
  #refreshing = false;
  #view: ParkedView;

  constructor(options: RegistryOptions) {
    this.#options = options;
    this.#lease = JSON.stringify({
      addr: options.addr,
      instance: crypto.randomUUID(),
      started: Date.now(),
    });
    this.redis = connectRedis(options.url, `tcp-relay-${options.node}`);
    this.redis.on("ready", () => {
      this.#dirty = true;
      this.refresh();
    });
    this.redis.on("close", () => this.#up = false);
    this.#view = new ParkedView(
      options.url,
      options.node,
      this.redis,
      () => this.members(),
    );
    this.#timer = setInterval(() => this.refresh(), REFRESH);
  }

  /** Whether Redis answered the last refresh and this node's lease is held. */
  get up(): boolean {
    return this.#up;
  }

  /** The other nodes whose lease was live at the last refresh. */
  members(): Member[] {
    return [...this.#members].map(([node, addr]) => ({ node, addr }));
  }

  /** Renews the lease (and writes everything after a lapse); reads the members. */
  async refresh(): Promise<void> {
    if (this.#closed || this.#refreshing) return;
    this.#refreshing = true;
    const { node } = this.#options;
    try {
      const multi = this.redis.multi()
        .set(leaseKey(node), this.#lease, "PX", LEASE)
        .pexpire(parkedKey(node), LEASE)
        .get(`${PREFIX}names:version`);
      const dirty = this.#dirty;
      if (dirty) this.#writeAll(multi);
      const results = await multi.exec();
      if (!results || results.some(([e]) => e)) {
        throw new Error("refresh failed");
      }
      this.#dirty = false;
      if (!dirty && results[1][1] === 0 && this.#options.snapshot().size) {
        this.#dirty = true; // the counts lapsed: write them next time
        log.warn("Lease of node {node} had lapsed: registering again", {
          node,
        });
      }
      await this.#readMembers();
      this.#view.sync();
      if (!this.#up) {
        log.info("Node {node} registered in the cluster", { node });
      }
      this.#up = true;
      this.#options.onRefresh?.(results[2][1] as string | null);
    } catch {
      this.#up = false;
      this.#dirty = true;
    } finally {
      this.#refreshing = false;
    }
  }

  #writeAll(multi: ReturnType<Redis["multi"]>): void {
    const { node } = this.#options;
    const key = parkedKey(node);
    multi.del(key);
    const counts = this.#options.snapshot();
    if (counts.size) {
      multi.hset(key, Object.fromEntries(counts)).pexpire(key, LEASE);
    }
    multi.publish(CHANNEL, changeMessage(node, "*"));
  }

  async #readMembers(): Promise<void> {
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [next, found] = await this.redis.scan(
        cursor,
        "MATCH",
        `${PREFIX}node:*:lease`,
        "COUNT",
        1000,
      );
      cursor = next;
      keys.push(...found);
    } while (cursor !== "0");
    const values = keys.length ? await this.redis.mget(...keys) : [];
    const members = new Map<string, string>();
    keys.forEach((key, i) => {
      const node = key.slice(`${PREFIX}node:`.length, -":lease".length);
      if (node === this.#options.node || !values[i]) return;
      try {
        const addr = JSON.parse(values[i]!).addr;
        if (typeof addr === "string") members.set(node, addr);
      } catch {
        // not one of ours
      }
    });
    this.#members = members;
  }

  /**
   * Publishes that this node now has `count` servers parked for `name`
   * (`0`: reserved, none parked; `undefined`: not held any more).
   */
  publish(name: string, count: number | undefined): void {
    if (this.#closed || this.#dirty) return; // the next refresh writes all
    const { node } = this.#options;
    const key = parkedKey(node);
    const multi = this.redis.multi();
    if (count === undefined) multi.hdel(key, name);
    else multi.hset(key, name, count).pexpire(key, LEASE);
    multi.publish(CHANNEL, changeMessage(node, { name, count }));
    multi.exec().then(
      (r) => r?.some(([e]) => e) && (this.#dirty = true),
      () => this.#dirty = true,
    );
  }

  /**
   * The other nodes with servers parked for `name` as far as this node knows
   * without asking Redis (the copy of `cluster/_parked.ts`), most first;
   * none while Redis is away or the copy is not complete.
   */
  hint(name: string): Holders["nodes"] {
    return this.#up ? this.#view.holders(name, this.members()) : [];
  }

  /** The other nodes that hold `name`, from Redis; rejects while Redis is away. */
  async find(name: string): Promise<Holders> {
    const members = this.members();
    if (!this.#up) throw new Error("Redis unreachable");
    if (!members.length) return { known: false, nodes: [] };
    const pipeline = this.redis.pipeline();
    for (const m of members) pipeline.hget(parkedKey(m.node), name);
    const since = this.#view.seq;
    const results = await pipeline.exec();
    if (!results) throw new Error("Redis unreachable");
    let known = false;
    const nodes: Holders["nodes"] = [];
    results.forEach(([e, v], i) => {
      if (e) throw e;
      const count = v === null || v === undefined ? undefined : Number(v);
      this.#view.learn(members[i].node, name, count, since);
      if (count === undefined) return;
      known = true;
      if (count > 0) nodes.push({ ...members[i], parked: count });
    });
    nodes.sort((a, b) => b.parked - a.parked || Math.random() - 0.5);
    return { known, nodes };
  }

  /** Withdraws this node's entries (draining): no request is routed here after. */
  async withdraw(): Promise<void> {
    clearInterval(this.#timer);
    this.#closed = true;
    const { node } = this.#options;
    try {
      await this.redis.multi().del(leaseKey(node), parkedKey(node))
        .publish(CHANNEL, changeMessage(node, "!")).exec();
      log.info("Node {node} withdrew from the cluster", { node });
    } catch {
      // Redis away: the lease lapses by itself
    }
  }

  /** Withdraws (if not done) and closes the connection. */
  async close(): Promise<void> {
    if (!this.#closed) await this.withdraw();
    this.#view.close();
    this.redis.disconnect();
    await new Promise((r) => setTimeout(r, 0));
  }
}
