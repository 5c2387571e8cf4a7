/**
 * The cluster as one node sees it, for the admin server (`/metrics`, the
 * status page, `/api/status`): every node with its lease and where its
 * servers are parked, read from Redis at most once a second whatever the
 * number of scrapes, and bounded in time, so that a slow Redis never holds
 * a scrape.
 *
 * Read-only: it writes nothing to Redis and changes nothing in the node.
 *
 * @module
 */

import type { Redis } from "ioredis";
import { LEASE, leaseKey, type Member, parkedKey } from "./_registry.ts";

/** How long a read of the cluster is reused (ms). */
export const STATUS_TTL = 1_000;
/** How long a read of the cluster may take before it counts as failed (ms). */
export const STATUS_TIMEOUT = 1_000;
/** How long a node whose lease lapsed is still shown, as down (ms). */
export const FORGET = 10 * 60_000;

/** One node of the cluster, in {@linkcode ClusterStatus}. */
export interface ClusterNodeStatus {
  /** Its name (`--node`). */
  node: string;
  /** Where its peer port is reached, `host:port`. */
  addr: string;
  /** Whether it is the node that answered. */
  self: boolean;
  /**
   * Whether its lease is live, as this node read it: the nodes this node
   * routes to. While Redis is away every node but this one is down, since
   * this node routes to none of them then.
   */
  up: boolean;
  /** Milliseconds since it last renewed its lease (renewed every second, lapsing after 3 s); `null` while down. */
  leaseAgeMs: number | null;
  /**
   * The names it holds, with how many servers are parked there for each
   * (`0`: reserved, none parked). This node's own counts are its live
   * ones; the others' are what they published in Redis.
   */
  parked: Record<string, number>;
}

/** The cluster as a node sees it: from `relay.cluster.status()`. */
export interface ClusterStatus {
  /** This node's name. */
  node: string;
  /** Whether Redis answered this node's last lease renewal. */
  registered: boolean;
  /**
   * This node first, then the others by name: those with a live lease, and
   * those whose lease lapsed in the last 10 minutes (down).
   */
  nodes: ClusterNodeStatus[];
  /** Clients of this node paired with a server on another node, since start. */
  forwardedOut: number;
  /** Clients of other nodes paired with a server here, since start. */
  forwardedIn: number;
  /** When the other nodes were last read from Redis (ms since the epoch); `null` if never. */
  readAt: number | null;
}

/** What {@linkcode ClusterView} reads: the node's registry and counts. */
export interface ViewSource {
  node: string;
  /** This node's peer address, as it advertises it. */
  addr: string;
  /** The registry's connection to Redis. */
  redis: Redis;
  /** Whether this node's lease is held (Redis answered the last renewal). */
  registered(): boolean;
  /** The other nodes with a live lease at the last renewal. */
  members(): Member[];
  /** This node's parked counts per name it holds. */
  local(): Record<string, number>;
  /** The forwarded pairings so far. */
  forwarded(): { in: number; out: number };
}

type Seen = ClusterNodeStatus & { seen: number };

/** The cluster's status, read on demand and reused for {@linkcode STATUS_TTL}. */
export class ClusterView {
  #source: ViewSource;
  /** Other nodes by name: as last read, or down since `seen`. */
  #others = new Map<string, Seen>();
  #selfAge: number | null = null;
  #readAt: number | null = null;
  /** When the last read started: a failed one is not tried again sooner either. */
  #triedAt = -Infinity;
  #reading?: Promise<void>;

  constructor(source: ViewSource) {
    this.#source = source;
  }

  /** The status; reads Redis first if the last read is over a second old. */
  async status(): Promise<ClusterStatus> {
    if (this.#reading || Date.now() - this.#triedAt >= STATUS_TTL) {
      await (this.#reading ??= this.#read().finally(() =>
        this.#reading = undefined
      ));
    }
    const s = this.#source, registered = s.registered();
    const { in: forwardedIn, out: forwardedOut } = s.forwarded();
    const others = [...this.#others.values()]
      .sort((a, b) => a.node < b.node ? -1 : 1)
      .map(({ seen: _, ...n }) => registered ? n : down(n));
    return {
      node: s.node,
      registered,
      nodes: [{
        node: s.node,
        addr: s.addr,
        self: true,
        up: registered,
        leaseAgeMs: registered ? this.#selfAge : null,
        parked: s.local(),
      }, ...others],
      forwardedOut,
      forwardedIn,
      readAt: this.#readAt,
    };
  }

  async #read(): Promise<void> {
    const s = this.#source, now = Date.now();
    this.#triedAt = now;
    const members = s.registered() ? s.members() : [];
    let results: [Error | null, unknown][] | null = null;
    if (s.registered()) {
      try {
        const pipeline = s.redis.pipeline().pttl(leaseKey(s.node));
        for (const m of members) {
          pipeline.pttl(leaseKey(m.node)).hgetall(parkedKey(m.node));
        }
        results = await bounded(pipeline.exec(), STATUS_TIMEOUT);
      } catch {
        results = null; // Redis away or slow: shown as such
      }
    }
    if (!results || results.some(([e]) => e)) {
      this.#selfAge = null;
      for (const [name, n] of this.#others) this.#others.set(name, down(n));
      this.#forget(now);
      return;
    }
    this.#selfAge = age(results[0][1]);
    const live = new Set<string>();
    members.forEach((m, i) => {
      const leaseAgeMs = age(results![1 + 2 * i][1]);
      if (leaseAgeMs === null) return; // lapsed since the renewal
      live.add(m.node);
      this.#others.set(m.node, {
        node: m.node,
        addr: m.addr,
        self: false,
        up: true,
        leaseAgeMs,
        parked: counts(results![2 + 2 * i][1]),
        seen: now,
      });
    });
    for (const [name, n] of this.#others) {
      if (!live.has(name) && n.up) this.#others.set(name, down(n));
    }
    this.#forget(now);
    this.#readAt = now;
  }

  #forget(now: number): void {
    for (const [name, n] of this.#others) {
      if (now - n.seen > FORGET) this.#others.delete(name);
    }
  }
}

/** `n` shown as down: no lease, nothing routed to it. */
function down<T extends ClusterNodeStatus>(n: T): T {
  return { ...n, up: false, leaseAgeMs: null, parked: {} };
}

/** A lease's age from its PTTL; `null` if it is gone. */
function age(pttl: unknown): number | null {
  const ms = Number(pttl);
  if (ms === -2 || !Number.isFinite(ms)) return null;
  if (ms < 0) return 0; // no expiry: not one of ours, but live
  return Math.max(0, LEASE - ms);
}

function counts(hash: unknown): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, v] of Object.entries(hash ?? {})) {
    const n = Number(v);
    if (Number.isInteger(n) && n >= 0) out[name] = n;
  }
  return out;
}

/** `work`, or a rejection after `ms`. */
async function bounded<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new Error("timed out")), ms)
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
