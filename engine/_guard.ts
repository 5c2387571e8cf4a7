/**
 * The relay's limits against a single host exhausting it: connections
 * overall, connections per source IP (handshaking, parked or waiting), and
 * failed proofs per source IP per minute; and who may use an owned name.
 *
 * @module
 */

import { verify } from "../protocol/_auth.ts";
import type { V2 } from "./_handshake.ts";
import { Word } from "../protocol/_wire.ts";

/**
 * Limits a public relay runs with; each is a flag of `relay.ts`. Peers on a
 * loopback address (a local proxy, a benchmark) are held only to
 * `maxConnections` unless `limitLoopback` is set.
 */
export interface Limits {
  /**
   * Open connections of every kind. Default: the process's open-file limit
   * less 100 (Linux), else `10000`.
   */
  maxConnections: number;
  /** Connections per source IP that are not (yet) paired. Default `256`. */
  maxPerIp: number;
  /** Parked connections per name. Default `64`. */
  maxParkedPerName: number;
  /** Failed proofs per source IP per minute before it is refused. Default `10`. */
  maxFailedProofs: number;
  /**
   * Names reserved at once that nobody owns (each costs memory); with open
   * registration, owned names count too. Default `100000`.
   */
  maxNames: number;
  /**
   * Names one source IP may register per hour by open registration (v2
   * `RESERVE` of a free name). Default `10`.
   */
  maxRegistrationsPerIp: number;
  /** Hold loopback peers to the per-IP and per-name limits too. Default `false`. */
  limitLoopback: boolean;
}

/** The soft open-file limit less 100 where /proc tells it, else 10000. */
function fileLimit(): number {
  try {
    const path = "/proc/self/limits";
    // no permission prompt for a library user without --allow-read
    if (
      Deno.permissions.querySync({ name: "read", path }).state !== "granted"
    ) {
      return 10_000;
    }
    const limits = Deno.readTextFileSync(path);
    const soft = Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1]);
    if (soft > 200) return soft - 100;
  } catch {
    // not Linux, or no read permission
  }
  return 10_000;
}

/** Whether `ip` is a loopback address. */
export function isLoopback(ip: string): boolean {
  return ip.startsWith("127.") || ip === "::1" || ip.startsWith("::ffff:127.");
}

/** The defaults of {@linkcode Limits}. */
export const DEFAULT_LIMITS: Limits = {
  maxConnections: fileLimit(),
  maxPerIp: 256,
  maxParkedPerName: 64,
  maxFailedProofs: 10,
  maxNames: 100_000,
  maxRegistrationsPerIp: 10,
  limitLoopback: false,
};

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/** Counts what the limits bound. */
export class Guard {
  #limits: Limits;
  #held = new Map<object, string>();
  #perIp = new Map<string, number>();
  #failed = new Map<string, { count: number; since: number }>();
  #registrations = new Map<string, { count: number; since: number }>();

  constructor(limits: Limits) {
    this.#limits = limits;
  }

  /**
   * Replaces the limits, live: they hold for what comes next (a connection
   * already admitted stays, even over a lowered limit).
   */
  setLimits(limits: Limits): void {
    this.#limits = limits;
  }

  /** Connections admitted and not released (handshaking, parked, waiting). */
  get held(): number {
    return this.#held.size;
  }

  /**
   * Admits `conn` from `ip` while `open` connections are open in all, or
   * says why not.
   */
  admit(conn: object, ip: string, open: number): string | undefined {
    if (open >= this.#limits.maxConnections) return "too many connections";
    const n = this.#perIp.get(ip) ?? 0;
    if (n >= this.#limits.maxPerIp && this.#limited(ip)) {
      return `too many connections from ${ip}`;
    }
    this.#perIp.set(ip, n + 1);
    this.#held.set(conn, ip);
    return undefined;
  }

  /** Releases `conn` (paired or closed); once, however often called. */
  release(conn: object): void {
    const ip = this.#held.get(conn);
    if (ip === undefined) return;
    this.#held.delete(conn);
    const n = (this.#perIp.get(ip) ?? 1) - 1;
    if (n > 0) this.#perIp.set(ip, n);
    else this.#perIp.delete(ip);
  }

  /** Every connection admitted and not released. */
  conns(): object[] {
    return [...this.#held.keys()];
  }

  #limited(ip: string): boolean {
    return this.#limits.limitLoopback || !isLoopback(ip);
  }

  /** Whether `ip` proved `secret` for `command` on `name`; counts failures. */
  proved(
    ip: string,
    secret: string,
    command: string,
    name: string,
    v2?: V2,
  ): boolean {
    if (v2 && verify(secret, v2.nonce, command, name, v2.proof)) return true;
    if (v2?.proof) this.failed(ip);
    return false;
  }

  /**
   * Why a server at `ip` may not send `command` for the owned name `name`
   * (whose owner's secret is `secret`), with the line to answer; `undefined`
   * if it may.
   */
  ownerDenies(
    ip: string,
    secret: string,
    command: string,
    name: string,
    v2?: V2,
  ): [reason: string, reply: string] | undefined {
    if (!v2 || (command === Word.RESERVE && !v2.proof)) {
      return command === Word.RESERVE ? ["name in use", Word.USED] : [
        "owned name, v1 peer",
        `ERROR AUTH ${name} is owned: use protocol v2 with its secret`,
      ];
    }
    if (this.blocked(ip)) {
      return [
        "too many failed proofs",
        "ERROR RATE too many failed proofs; try again later",
      ];
    }
    if (!this.proved(ip, secret, command, name, v2)) {
      return ["wrong proof", `ERROR AUTH wrong proof for ${name}`];
    }
  }

  /** Whether `ip` failed too many proofs this minute. */
  blocked(ip: string): boolean {
    if (!this.#limited(ip)) return false;
    const f = this.#failed.get(ip);
    if (!f) return false;
    if (Date.now() - f.since > MINUTE) {
      this.#failed.delete(ip);
      return false;
    }
    return f.count >= this.#limits.maxFailedProofs;
  }

  /** Counts a failed proof from `ip`. */
  failed(ip: string): void {
    const now = Date.now();
    if (this.#failed.size > 4096) {
      for (const [k, f] of this.#failed) {
        if (now - f.since > MINUTE) this.#failed.delete(k);
      }
    }
    const f = this.#failed.get(ip);
    if (!f || now - f.since > MINUTE) {
      this.#failed.set(ip, { count: 1, since: now });
    } else f.count++;
  }

  /** Whether `ip` may register another name this hour (open registration). */
  mayRegister(ip: string): boolean {
    if (!this.#limited(ip)) return true;
    const r = this.#registrations.get(ip);
    if (!r || Date.now() - r.since > HOUR) return true;
    return r.count < this.#limits.maxRegistrationsPerIp;
  }

  /** Counts a name registered by `ip`. */
  registered(ip: string): void {
    const now = Date.now(), map = this.#registrations;
    if (map.size > 4096) {
      for (const [k, r] of map) if (now - r.since > HOUR) map.delete(k);
    }
    const r = map.get(ip);
    if (!r || now - r.since > HOUR) map.set(ip, { count: 1, since: now });
    else r.count++;
  }

  /** The limit of names held at once (see {@linkcode Limits.maxNames}). */
  get maxNames(): number {
    return this.#limits.maxNames;
  }

  /** The limit of parked connections per name for a server at `ip`. */
  maxParked(ip: string): number {
    return this.#limited(ip) ? this.#limits.maxParkedPerName : Infinity;
  }
}
