/**
 * The relay's limits against a single host exhausting it: connections
 * overall, connections per source IP (handshaking, parked or waiting), and
 * failed proofs per source IP per minute.
 *
 * @module
 */

/** Limits a public relay runs with; each is a flag of `relay.ts`. */
export interface Limits {
  /** Open connections of every kind. Default `10000`. */
  maxConnections: number;
  /** Connections per source IP that are not (yet) paired. Default `256`. */
  maxPerIp: number;
  /** Parked connections per name. Default `64`. */
  maxParkedPerName: number;
  /** Failed proofs per source IP per minute before it is refused. Default `10`. */
  maxFailedProofs: number;
}

/** The defaults of {@linkcode Limits}. */
export const DEFAULT_LIMITS: Limits = {
  maxConnections: 10_000,
  maxPerIp: 256,
  maxParkedPerName: 64,
  maxFailedProofs: 10,
};

const MINUTE = 60_000;

/** Counts what the limits bound. */
export class Guard {
  #limits: Limits;
  #held = new Map<object, string>();
  #perIp = new Map<string, number>();
  #failed = new Map<string, { count: number; since: number }>();

  constructor(limits: Limits) {
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
    if (n >= this.#limits.maxPerIp) return `too many connections from ${ip}`;
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

  /** Whether `ip` failed too many proofs this minute. */
  blocked(ip: string): boolean {
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

  /** The limit of parked connections per name. */
  get maxParkedPerName(): number {
    return this.#limits.maxParkedPerName;
  }
}
