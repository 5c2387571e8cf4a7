/**
 * Warm links: for every other live node, a few links dialled and
 * authenticated ahead of need (`cluster/_link.ts`), so that forwarding a
 * client costs one line and one answer on an open connection.
 *
 * - Each node in the registry's members gets {@linkcode MIN_POOL} idle links;
 *   each link taken is replaced in the background 10 ms later (after its
 *   pairing, whose bytes it would delay).
 * - A forward that finds none idle takes the next one dialled and grows that
 *   node's pool by one (up to {@linkcode MAX_POOL}), so that a burst finds
 *   links ready; an idle link older than `LINK_IDLE` (15 s) is closed and
 *   the pool shrinks by one, down to {@linkcode MIN_POOL}.
 * - Links to a node that left the members (its lease lapsed) are closed; a
 *   link the far node closed is dropped and replaced; a node whose peer port
 *   cannot be reached is dialled in the background again only after 1 s.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { Member } from "./_registry.ts";
import { forward, type Link, type LinkResult, openLink } from "./_dial.ts";
import { LINK_IDLE, type LinkTls } from "./_link.ts";

const log = getLogger(["tcp-relay", "cluster"]);

/** Idle links kept per other node. */
export const MIN_POOL = 2;
/** The most idle links kept per other node. */
export const MAX_POOL = 32;
/**
 * How long after a link is taken it is replaced (ms): once its pair is under
 * way, not in its way (the dial and handshake cost both nodes CPU).
 */
const REFILL_DELAY = 10;
/** How long a node whose peer port failed is left alone by the refill (ms). */
const RETRY = 1_000;

interface Peer {
  node: string;
  addr: string;
  idle: Link[];
  /** Forwards waiting for the next link dialled. */
  waiters: PromiseWithResolvers<Link>[];
  dialing: number;
  target: number;
  /** Until when the refill leaves this node alone (its port failed). */
  retryAt: number;
  closed: boolean;
}

/** This node's warm links to the other nodes. */
export class LinkPool {
  #options: { node: string; secret: string; tls?: LinkTls };
  #peers = new Map<string, Peer>();
  #timer: ReturnType<typeof setInterval>;
  #closed = false;
  /** Dials in flight, for close() to wait on. */
  #dials = new Set<Promise<void>>();
  #refill = new Set<Peer>();
  #refillTimer?: ReturnType<typeof setTimeout>;

  constructor(options: { node: string; secret: string; tls?: LinkTls }) {
    this.#options = options;
    this.#timer = setInterval(() => this.#sweep(), 1_000);
  }

  /** Keeps links to exactly these nodes (the registry's live members). */
  sync(members: Member[]): void {
    if (this.#closed) return;
    const live = new Map(members.map((m) => [m.node, m.addr]));
    for (const [node, p] of this.#peers) {
      if (live.get(node) !== p.addr) this.#drop(p, `node ${node} left`);
    }
    for (const [node, addr] of live) {
      if (this.#peers.has(node)) continue;
      const p: Peer = {
        node,
        addr,
        idle: [],
        waiters: [],
        dialing: 0,
        target: MIN_POOL,
        retryAt: 0,
        closed: false,
      };
      this.#peers.set(node, p);
      this.#fill(p);
    }
  }

  /** Idle links to `node` now. */
  idle(node: string): number {
    return this.#peers.get(node)?.idle.length ?? 0;
  }

  /**
   * Forwards a request for `name` to `to` on a warm link (a new one if the
   * node is not pooled): the far node's answer.
   */
  async forward(to: Member, name: string): Promise<LinkResult> {
    const p = this.#peers.get(to.node);
    if (!p || p.addr !== to.addr || this.#closed) {
      return await forward({
        ...this.#options,
        addr: to.addr,
        to: to.node,
        name,
      });
    }
    for (let tries = 1;; tries++) {
      let link: Link;
      try {
        link = await this.#take(p);
      } catch (e) {
        return {
          paired: false,
          reason: (e as Error).message,
          unreachable: true,
        };
      }
      const got = await link.forward(name);
      this.#refillSoon(p);
      if (got.paired || !got.stale) return got;
      // closed under us (the node went away, or drains): another, or give up
      if (tries >= 3) return { ...got, unreachable: true };
    }
  }

  /** Replaces taken links once the pairs are under way, not in their way. */
  #refillSoon(p: Peer): void {
    this.#refill.add(p);
    this.#refillTimer ??= setTimeout(() => {
      this.#refillTimer = undefined;
      for (const q of this.#refill) this.#fill(q);
      this.#refill.clear();
    }, REFILL_DELAY);
  }

  #take(p: Peer): Promise<Link> {
    for (let link; (link = p.idle.shift());) {
      if (link.idle) return Promise.resolve(link);
    }
    p.target = Math.min(MAX_POOL, p.target + 1);
    const waiter = Promise.withResolvers<Link>();
    p.waiters.push(waiter);
    this.#fill(p, false); // the waiter's link now, the rest later
    return waiter.promise;
  }

  /** Dials what the pool lacks: the waiters' links, and the idle target. */
  #fill(p: Peer, idle = true): void {
    if (p.closed) return;
    const target = idle && Date.now() >= p.retryAt ? p.target : 0;
    const need = p.waiters.length + target - p.idle.length - p.dialing;
    for (let i = 0; i < need; i++) this.#dial(p);
  }

  #dial(p: Peer): void {
    p.dialing++;
    const dial = openLink({ ...this.#options, addr: p.addr, to: p.node });
    const done = dial.then((link) => {
      p.dialing--;
      if (p.closed) return link.close();
      if (p.retryAt) {
        log.info("Links to node {node} up again", { node: p.node });
        p.retryAt = 0;
      }
      const waiter = p.waiters.shift();
      if (waiter) return waiter.resolve(link);
      link.onClose = () => {
        const i = p.idle.indexOf(link);
        if (i >= 0) p.idle.splice(i, 1);
        // closed at once by the far node: do not dial it in a loop
        if (Date.now() - link.since < RETRY) p.retryAt = Date.now() + RETRY;
        this.#fill(p);
      };
      p.idle.push(link);
    }, (e) => {
      p.dialing--;
      if (!p.retryAt) {
        log.info("Cannot open a link to node {node}: {reason}", {
          node: p.node,
          reason: (e as Error).message,
        });
      }
      p.retryAt = Date.now() + RETRY;
      p.waiters.shift()?.reject(e);
    }).finally(() => this.#dials.delete(done));
    this.#dials.add(done);
  }

  /** Closes idle links past their age (the pool shrinks) and refills. */
  #sweep(): void {
    const old = Date.now() - LINK_IDLE;
    for (const p of this.#peers.values()) {
      const aged = p.idle.filter((l) => l.since <= old);
      for (const l of aged) l.close();
      p.idle = p.idle.filter((l) => l.idle);
      p.target = Math.max(MIN_POOL, p.target - aged.length);
      this.#fill(p);
    }
  }

  #drop(p: Peer, reason: string): void {
    p.closed = true;
    this.#peers.delete(p.node);
    for (const l of p.idle) l.close();
    p.idle = [];
    for (const w of p.waiters.splice(0)) w.reject(new Error(reason));
  }

  /** Closes every idle link, and those being dialled once they arrive. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#refillTimer);
    for (const p of [...this.#peers.values()]) this.#drop(p, "closing");
    await Promise.all(this.#dials);
  }
}
