/**
 * The seam between the engine and a cluster of relays (`cluster/_node.ts`):
 * what the engine asks of the cluster when a client's name has no server
 * parked here, and what the cluster may do with the engine. Types only.
 *
 * @module
 */

import type { RelayEvents } from "./_events.ts";
import type { Waiter } from "./_table.ts";

/** What a cluster (`cluster/_node.ts`) may do with the engine. */
export interface EngineHandle {
  /** Servers parked here for `name`; `undefined` if it is not reserved here. */
  parked(name: string): number | undefined;
  /** The engine's events (parked, unparked, reserved, released, …). */
  events: RelayEvents;
  /** Parked counts of every name reserved here. */
  counts(): Record<string, number>;
  /** Relays a pair whose CONNECTED lines are sent. */
  relay(name: string, server: Waiter, client: Waiter): void;
  /** Refuses a client with a line. */
  refuse(client: Waiter, reason: string, reply: string, name: string): void;
  /** Pairs a request forwarded by another node here (never forwarded again). */
  serveForwarded(name: string, client: Waiter): void;
}

/** A cluster of relays: where clients go when no server is parked here. */
export interface Cluster {
  /** Called once by the engine it serves. */
  attach(engine: EngineHandle): void;
  /**
   * A client asks for `name`, which has no server parked here (`reserved`:
   * whether it is reserved here). Resolves `true` once the cluster took the
   * client (paired elsewhere, or refused), `false` to go on here.
   */
  route(name: string, client: Waiter, reserved: boolean): Promise<boolean>;
}
