/**
 * The pairs a relay is copying bytes for: each with its name, peers, start
 * and bytes so far; closing one, every pair of a name, or all of them; and
 * the `paired`/`pairEnded` events.
 *
 * @module
 */

import {
  type DataPath,
  type Pair,
  relayPair,
  type Totals,
} from "../datapath/_pipe.ts";
import type { PairInfo, RelayEvents } from "./_events.ts";
import type { Waiter } from "./_table.ts";

/** The pairs being relayed. */
export class ActivePairs {
  /** Bytes relayed since start by every pair; a: the client, b: the server. */
  readonly totals: Totals = { aToB: 0, bToA: 0 };
  #pairs = new Map<Pair, PairInfo>();
  #next = 1;
  #events: RelayEvents;
  #path: DataPath;
  #onEnd: () => void;
  #drained?: () => void;

  /** `onEnd` is called after each pair ended. */
  constructor(events: RelayEvents, path: DataPath, onEnd: () => void) {
    this.#events = events;
    this.#path = path;
    this.#onEnd = onEnd;
  }

  /** How many pairs are being relayed. */
  get size(): number {
    return this.#pairs.size;
  }

  /** Starts relaying `client` and `server` (both told CONNECTED) under `name`. */
  start(name: string, server: Waiter, client: Waiter): void {
    const info: PairInfo = {
      id: this.#next++,
      name,
      client: client.peer,
      server: server.peer,
      started: Date.now(),
      bytes: { clientToServer: 0, serverToClient: 0 },
      ...(client.via ? { via: client.via } : {}),
    };
    const pair = relayPair(
      client.conn,
      client.source,
      server.conn,
      server.source,
      { totals: this.totals, path: this.#path, tag: name, onEnd: this.#ended },
    );
    this.#pairs.set(pair, info);
    this.#events.emit({ type: "paired", pair: info });
  }

  #ended = (pair: Pair): void => {
    const info = this.#pairs.get(pair)!;
    this.#pairs.delete(pair);
    const ms = Date.now() - info.started;
    this.#events.emit({ type: "pairEnded", pair: snapshot(pair, info), ms });
    this.#onEnd();
    if (this.#pairs.size === 0) this.#drained?.();
  };

  /** The pairs being relayed now, with their bytes so far. */
  list(): PairInfo[] {
    return [...this.#pairs].map(([pair, info]) => snapshot(pair, info));
  }

  /** Closes the pair with this id; `false` if there is none. */
  close(id: number): boolean {
    for (const [pair, info] of this.#pairs) {
      if (info.id === id) return pair.close(), true;
    }
    return false;
  }

  /** Closes every pair of `name`; says how many connections that closed. */
  closeName(name: string): number {
    let n = 0;
    for (const [pair, info] of [...this.#pairs]) {
      if (info.name === name) pair.close(), n += 2;
    }
    return n;
  }

  /** Closes every pair. */
  closeAll(): void {
    for (const pair of [...this.#pairs.keys()]) pair.close();
  }

  /** Settles once no pair is left. */
  drained(): Promise<void> {
    return new Promise<void>((r) => this.#pairs.size ? this.#drained = r : r());
  }
}

/** `info` with the bytes `pair` relayed so far. */
function snapshot(pair: Pair, info: PairInfo): PairInfo {
  const bytes = { clientToServer: pair.aToB, serverToClient: pair.bToA };
  return { ...info, bytes };
}
