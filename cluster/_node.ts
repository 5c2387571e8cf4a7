/**
 * One relay as a node of a cluster: what the engine calls when a client asks
 * for a name with no server parked here (route it one hop to a node that has
 * one), the peer port where other nodes' requests land (paired here, never
 * forwarded again), and this node's entries in Redis kept equal to what it
 * holds.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { Cluster, EngineHandle } from "../engine/_cluster.ts";
import type { Waiter } from "../engine/_table.ts";
import { Source } from "../datapath/_source.ts";
import { line, Word, writeAll } from "../protocol/_wire.ts";
import { DEFAULT_PEER_PORT, LinkListener } from "./_link.ts";
import { LinkPool } from "./_pool.ts";
import { type Holders, LEASE, nodeNameProblem, Registry } from "./_registry.ts";
import { RedisOwners } from "./_owners.ts";
import { type ClusterStatus, ClusterView } from "./_status.ts";

const log = getLogger(["tcp-relay", "cluster"]);

/** How often a client waiting for a name held elsewhere looks again (ms). */
const POLL = 100;
/** How long a name unknown everywhere gets to appear before NOEXIST (ms). */
const SETTLE = 25;
/** How long a move between two positive counts may wait to be told (ms). */
const COALESCE = 100;

/** How a relay joins a cluster (see README, "Cluster"). */
export interface ClusterOptions {
  /** The Redis holding the cluster's state: `redis://HOST:PORT[/DB]`. */
  redis: string;
  /** This node's name, unique in the cluster: 1 to 64 of `A-Z a-z 0-9 . _ -`. */
  node: string;
  /** The secret every node of the cluster shares (16 characters or more). */
  secret: string;
  /** Port for other nodes' links; `0` picks a free one. Default `7010`. */
  peerPort?: number;
  /** Where other nodes reach the peer port, `HOST:PORT`. Default: the relay's hostname (or this host's name) and the peer port. */
  advertise?: string;
  /**
   * TLS for the links: this node's certificate and key (PEM), and the
   * certificates to trust for other nodes' peer ports. Default: plain TCP.
   */
  tls?: { cert: string; key: string; caCerts?: string[] };
}

/** Live counts of a node. */
export interface ClusterStats {
  node: string;
  /** Whether Redis answered the last lease refresh. */
  registered: boolean;
  /** The other nodes with a live lease. */
  nodes: string[];
  /** Clients of this node paired with a server on another node. */
  forwardedOut: number;
  /** Clients of other nodes paired with a server here. */
  forwardedIn: number;
}

/** Checks {@linkcode ClusterOptions}; throws TypeError/RangeError. */
export function checkClusterOptions(o: ClusterOptions): void {
  if (!/^rediss?:\/\//.test(o.redis)) {
    throw new TypeError(
      `cluster.redis must be redis://HOST:PORT[/DB], not "${o.redis}"`,
    );
  }
  const problem = nodeNameProblem(o.node ?? "");
  if (problem) throw new TypeError(`cluster.node: ${problem}`);
  if (typeof o.secret !== "string" || o.secret.trim().length < 16) {
    throw new RangeError("cluster.secret must be 16 characters or more");
  }
}

/** A relay's membership of a cluster: implements the engine's {@linkcode Cluster}. */
export class ClusterNode implements Cluster {
  readonly owners: RedisOwners;
  readonly peerAddr: Deno.NetAddr;
  #options: ClusterOptions;
  #wait: number;
  #engine?: EngineHandle;
  #registry: Registry;
  #links: LinkListener;
  #pool: LinkPool;
  #published = new Map<string, number>();
  #events?: Disposable;
  /** Names whose count changed since Redis was told. */
  #changed = new Set<string>();
  #soon?: ReturnType<typeof setTimeout>;
  #later?: ReturnType<typeof setTimeout>;
  /** Nodes whose peer port failed, until when they are skipped. */
  #down = new Map<string, number>();
  #closed = false;
  #out = 0;
  #in = 0;
  /** Forwarded requests not paired yet: the client's peer → when it came. */
  #incoming = new Map<string, number>();
  #view: ClusterView;

  constructor(options: ClusterOptions, hostname: string, wait: number) {
    checkClusterOptions(options);
    this.#options = options;
    this.#wait = wait;
    this.#links = new LinkListener({
      hostname,
      port: options.peerPort ?? DEFAULT_PEER_PORT,
      node: options.node,
      secret: options.secret,
      tls: options.tls,
    }, (req) => {
      if (!this.#engine || this.#closed) return req.conn.close();
      const peer = `${req.peer} (node ${req.from})`;
      this.#expect(peer);
      this.#engine.serveForwarded(req.name, {
        conn: req.conn,
        source: new Source(req.conn, req.rest),
        peer,
        dead: false,
        via: req.from,
      });
    });
    this.peerAddr = this.#links.addr;
    const host = hostname === "0.0.0.0" || hostname === "::"
      ? Deno.hostname()
      : hostname;
    const addr = options.advertise ?? `${host}:${this.peerAddr.port}`;
    this.owners = new RedisOwners(options.redis, options.node);
    this.#pool = new LinkPool({
      node: options.node,
      secret: options.secret,
      tls: options.tls,
    });
    this.#registry = new Registry({
      url: options.redis,
      node: options.node,
      addr,
      snapshot: () => {
        this.#published = new Map(Object.entries(this.#engine?.counts() ?? {}));
        return this.#published;
      },
      onRefresh: (version) => {
        this.owners.sync(version);
        if (!this.#closed) this.#pool.sync(this.#registry.members());
      },
    });
    this.#view = new ClusterView({
      node: options.node,
      addr,
      redis: this.#registry.redis,
      registered: () => this.#registry.up,
      members: () => this.#registry.members(),
      local: () => this.#engine?.counts() ?? {},
      forwarded: () => ({ in: this.#in, out: this.#out }),
    });
  }

  attach(engine: EngineHandle): void {
    this.#engine = engine;
    this.#events = engine.events.on((e) => {
      switch (e.type) {
        case "parked":
        case "unparked":
        case "reserved":
        case "released":
          return this.#change(e.name);
        case "paired":
          // a forwarded request counts once paired (it may be refused)
          if (this.#incoming.delete(e.pair.client)) this.#in++;
          return this.#change(e.pair.name);
        case "refused":
          this.#incoming.delete(e.peer);
      }
    });
  }

  /** Notes a forwarded request from `peer`, forgetting any a minute old. */
  #expect(peer: string): void {
    const old = Date.now() - 60_000;
    for (const [p, at] of this.#incoming) {
      if (at > old) break;
      this.#incoming.delete(p);
    }
    this.#incoming.set(peer, Date.now());
  }

  /**
   * Tells Redis of `name`'s parked count: at once (with other changes of
   * this turn) if the name appears or goes or its count goes to or from 0;
   * within {@linkcode COALESCE} ms if it only moves between two positive
   * counts (a pool of servers being taken and refilled), so that most such
   * moves cancel out before they cost a write and a message.
   */
  #change(name: string): void {
    const count = this.#engine!.parked(name), was = this.#published.get(name);
    this.#changed.add(name);
    if (count === undefined || was === undefined || !count !== !was) {
      this.#soon ??= setTimeout(() => this.#publish(), 0);
    } else {
      this.#later ??= setTimeout(() => this.#publish(), COALESCE);
    }
  }

  #publish(): void {
    clearTimeout(this.#soon);
    clearTimeout(this.#later);
    this.#soon = this.#later = undefined;
    const engine = this.#engine!;
    for (const name of this.#changed) {
      const count = engine.parked(name);
      if (this.#published.get(name) === count) continue;
      if (count === undefined) this.#published.delete(name);
      else this.#published.set(name, count);
      this.#registry.publish(name, count);
    }
    this.#changed.clear();
  }

  stats(): ClusterStats {
    return {
      node: this.#options.node,
      registered: this.#registry.up,
      nodes: this.#registry.members().map((m) => m.node),
      forwardedOut: this.#out,
      forwardedIn: this.#in,
    };
  }

  /**
   * The cluster as this node sees it: every node with its lease and parked
   * counts (read from Redis at most once a second, bounded by a second)
   * and the forwarded pairings.
   */
  status(): Promise<ClusterStatus> {
    return this.#view.status();
  }

  async route(
    name: string,
    client: Waiter,
    reserved: boolean,
  ): Promise<boolean> {
    const engine = this.#engine!;
    const deadline = Date.now() + this.#wait;
    const refuse = (reason: string, reply: string) => {
      engine.refuse(client, reason, reply, name);
      return true;
    };
    let known = reserved, looks = 0, hinted = true;
    for (;;) {
      if (this.#closed) return refuse("relay shutting down", Word.OFFLINE);
      if (engine.parked(name)) return false; // a server parked here meanwhile
      // first what this node knows without asking Redis (parked elsewhere
      // as the nodes' messages told), then Redis itself
      let holders: Holders = {
        known: false, // the copy decides no NOEXIST: Redis does
        nodes: hinted ? this.#registry.hint(name) : [],
      };
      const fromHint = holders.nodes.length > 0;
      hinted = false;
      if (!fromHint) {
        try {
          holders = await this.#registry.find(name);
        } catch {
          // Redis away: pair what this node holds; the rest cannot be found
          if (reserved || engine.parked(name) !== undefined) return false;
          return refuse("cluster registry unreachable", Word.OFFLINE);
        }
      }
      known ||= holders.known || engine.parked(name) !== undefined;
      if (!known && !fromHint) {
        // a server may have parked elsewhere a moment ago: its count reaches
        // Redis within a few ms, so look once more before saying NOEXIST
        if (looks++ > 0) return refuse("no such name", Word.NOEXIST);
        await new Promise((r) => setTimeout(r, SETTLE));
        continue;
      }
      for (const holder of holders.nodes) {
        if ((this.#down.get(holder.node) ?? 0) > Date.now()) continue;
        const got = await this.#pool.forward(holder, name);
        if (!got.paired) {
          log.info("Cannot forward {name} to node {to}: {reason}", {
            name,
            to: holder.node,
            reason: got.reason,
          });
          if (got.unreachable) this.#down.set(holder.node, Date.now() + LEASE);
          continue;
        }
        try {
          await writeAll(client.conn, line(Word.CONNECTED));
        } catch {
          got.conn.close();
          engine.refuse(client, "client gone", "", name);
          return true;
        }
        this.#out++;
        engine.relay(name, {
          conn: got.conn,
          source: new Source(got.conn, got.rest),
          peer: `node ${holder.node}`,
          dead: false,
        }, client);
        return true;
      }
      if (fromHint) continue; // the copy was behind: ask Redis at once
      if (reserved) return false; // wait here, as a single relay does
      const left = deadline - Date.now();
      if (left <= 0) return refuse("no server waiting", Word.OFFLINE);
      await new Promise((r) => setTimeout(r, Math.min(POLL, left)));
    }
  }

  /** Withdraws this node's entries from Redis (draining), and stops the peer port. */
  async withdraw(): Promise<void> {
    this.#closed = true;
    this.#events?.[Symbol.dispose]();
    clearTimeout(this.#soon);
    clearTimeout(this.#later);
    this.#links.close();
    const closing = this.#pool.close();
    await this.#registry.withdraw();
    await closing;
  }

  /** Withdraws (if not done) and closes every connection to Redis. */
  async close(): Promise<void> {
    if (!this.#closed) await this.withdraw();
    await this.#registry.close();
    await this.owners.close();
  }
}
