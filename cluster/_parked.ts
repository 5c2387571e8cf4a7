/**
 * What a node knows of the other nodes' parked counts without asking Redis
 * for each client: a copy of their `tcp-relay:node:<node>:parked` hashes,
 * kept by the messages every node publishes on the channel
 * `tcp-relay:parked` in the same transaction as each change of its hash.
 *
 * | message              | meaning                                        |
 * | -------------------- | ---------------------------------------------- |
 * | `<node> <n> <name>`  | `<node>` has `n` servers parked for `<name>` (`0`: reserved) |
 * | `<node> - <name>`    | `<node>` holds `<name>` no more                |
 * | `<node> *`           | `<node>` wrote its whole hash again: read it    |
 * | `<node> !`           | `<node>` withdrew (draining)                   |
 *
 * A node reads every member's hash when it (re)subscribes and when a member
 * appears, then applies the messages; a message applied while a read was on
 * its way wins over that read, so the copy ends equal to the hashes. The
 * copy is a hint: the holder's answer to a forward decides, and a name the
 * copy has nowhere is looked up in Redis all the same.
 *
 * @module
 */

import type { Redis } from "ioredis";
import { CHANNEL, connectRedis, type Member, parkedKey } from "./_registry.ts";

/** The message telling a change of `node`'s hash (see the table above). */
export function changeMessage(
  node: string,
  change: { name: string; count: number | undefined } | "*" | "!",
): string {
  if (typeof change === "string") return `${node} ${change}`;
  return `${node} ${change.count ?? "-"} ${change.name}`;
}

interface Entry {
  /** Servers parked; `undefined`: not held (kept a while for the reads). */
  count: number | undefined;
  /** When it was last set: a message's number, or the read's start. */
  seq: number;
}

/** The copy of the other nodes' parked counts. */
export class ParkedView {
  #node: string;
  #redis: Redis;
  #sub: Redis;
  #members: () => Member[];
  #nodes = new Map<string, Map<string, Entry>>();
  /** Nodes whose hash was read since the subscription started. */
  #read = new Set<string>();
  #seq = 0;
  #reads = 0;
  #subscribed = false;
  #live = false;

  /**
   * Subscribes at `url` (its own connection); reads hashes on `redis` for
   * the nodes `members()` lists.
   */
  constructor(
    url: string,
    node: string,
    redis: Redis,
    members: () => Member[],
  ) {
    this.#node = node;
    this.#redis = redis;
    this.#members = members;
    this.#sub = connectRedis(url, `tcp-relay-${node}-parked`);
    this.#sub.on(
      "message",
      (_: string, message: string) => this.#apply(message),
    );
    this.#sub.on("close", () => {
      this.#subscribed = this.#live = false;
      this.#read.clear();
    });
    this.#sub.on("ready", () => {
      this.#sub.subscribe(CHANNEL).then(() => {
        this.#subscribed = true;
        this.sync();
      }, () => {});
    });
  }

  /** The number to compare a read with: take it before sending the read. */
  get seq(): number {
    return this.#seq;
  }

  /**
   * Nodes among `members` with servers parked for `name`, most first (none
   * while the copy is not complete).
   */
  holders(name: string, members: Member[]): (Member & { parked: number })[] {
    if (!this.#live) return [];
    const found: (Member & { parked: number })[] = [];
    for (const m of members) {
      const parked = this.#nodes.get(m.node)?.get(name)?.count;
      if (parked) found.push({ ...m, parked });
    }
    return found.sort((a, b) => b.parked - a.parked || Math.random() - 0.5);
  }

  /** Whether the copy is complete (subscribed, every member read). */
  get live(): boolean {
    return this.#live;
  }

  /** What a lookup sent after `since` read of `node`'s count of `name`. */
  learn(node: string, name: string, count: number | undefined, since: number) {
    const names = this.#nodes.get(node);
    if (!names) return;
    const e = names.get(name);
    if (!e || e.seq <= since) names.set(name, { count, seq: since });
  }

  /** Forgets nodes that left, reads those not read yet. */
  sync(): void {
    if (!this.#subscribed) return;
    const members = new Set(this.#members().map((m) => m.node));
    for (const node of this.#nodes.keys()) {
      if (!members.has(node)) {
        this.#nodes.delete(node);
        this.#read.delete(node);
      }
    }
    if (!this.#reads) {
      for (const names of this.#nodes.values()) {
        for (const [name, e] of names) {
          if (e.count === undefined) names.delete(name);
        }
      }
    }
    const unread = [...members].filter((n) => !this.#read.has(n));
    if (unread.length) this.#readNodes(unread);
    else this.#live = true;
  }

  #apply(message: string): void {
    const [node, what, name, ...extra] = message.split(" ");
    if (node === this.#node || extra.length) return;
    if (what === "*") return this.#readNodes([node]);
    if (what === "!") {
      this.#nodes.delete(node);
      this.#read.delete(node);
      return;
    }
    const count = what === "-" ? undefined : Number(what);
    if (!name || (count !== undefined && !Number.isInteger(count))) return;
    let names = this.#nodes.get(node);
    if (!names) this.#nodes.set(node, names = new Map());
    names.set(name, { count, seq: ++this.#seq });
  }

  #readNodes(nodes: string[]): void {
    const since = this.#seq;
    const pipeline = this.#redis.pipeline();
    for (const node of nodes) pipeline.hgetall(parkedKey(node));
    this.#reads++;
    pipeline.exec().then((results) => {
      if (!results || !this.#subscribed) return;
      results.forEach(([e, all], i) => {
        if (e) return;
        const node = nodes[i];
        let names = this.#nodes.get(node);
        if (!names) this.#nodes.set(node, names = new Map());
        const hash = all as Record<string, string>;
        for (const [name, entry] of names) {
          if (!(name in hash) && entry.seq <= since) names.delete(name);
        }
        for (const [name, value] of Object.entries(hash)) {
          const entry = names.get(name);
          if (!entry || entry.seq <= since) {
            names.set(name, { count: Number(value), seq: since });
          }
        }
        this.#read.add(node);
      });
      if (this.#members().every((m) => this.#read.has(m.node))) {
        this.#live = true;
      }
    }, () => {}).finally(() => this.#reads--);
  }

  /** Closes the subscription. */
  close(): void {
    this.#live = this.#subscribed = false;
    this.#sub.disconnect();
  }
}
