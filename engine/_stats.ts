/**
 * The relay's counters since start, kept by a subscriber of its events:
 * pairings, refusals by code, and pairs active per name.
 *
 * @module
 */

import type { RefusalCode } from "../protocol/_wire.ts";
import type { RelayEvents } from "./_events.ts";

/** Live counts of a relay. */
export interface RelayStats {
  /** Parked (waiting) server connections per reserved name. */
  parked: Record<string, number>;
  /** Clients waiting for a server of a reserved name. */
  waiting: number;
  /** Connections still in their handshake. */
  handshaking: number;
  /** Pairs copying bytes now. */
  activePairs: number;
  /** Open connections of every kind. */
  connections: number;
  /** Pairs made since start. */
  pairings: number;
  /** Connections refused since start (bad input, unknown names, limits, timeouts). */
  refusals: number;
  /** Connections refused since start, by code. */
  refusalsByCode: Partial<Record<RefusalCode, number>>;
  /** Per reserved name: parked servers, waiting clients, active pairs. */
  names: Record<string, { parked: number; waiting: number; active: number }>;
  /** Application bytes relayed since start, each way. */
  bytes: { clientToServer: number; serverToClient: number };
}

/** Counters since start, fed by the engine's events. */
export class Counters implements Disposable {
  /** Pairs made since start. */
  pairings = 0;
  /** Connections refused since start, in all. */
  refusals = 0;
  /** Connections refused since start, by code. */
  readonly refusalsByCode: Partial<Record<RefusalCode, number>> = {};
  /** Pairs active now, per name (names with none are left out). */
  readonly activeByName = new Map<string, number>();
  #subscription: Disposable;

  constructor(events: RelayEvents) {
    this.#subscription = events.on((e) => {
      switch (e.type) {
        case "paired": {
          this.pairings++;
          const n = this.activeByName.get(e.pair.name) ?? 0;
          this.activeByName.set(e.pair.name, n + 1);
          return;
        }
        case "pairEnded": {
          const n = (this.activeByName.get(e.pair.name) ?? 1) - 1;
          if (n > 0) this.activeByName.set(e.pair.name, n);
          else this.activeByName.delete(e.pair.name);
          return;
        }
        case "refused":
          this.refusals++;
          this.refusalsByCode[e.code] = (this.refusalsByCode[e.code] ?? 0) + 1;
      }
    });
  }

  /** Stops counting. */
  [Symbol.dispose](): void {
    this.#subscription[Symbol.dispose]();
  }
}
