/**
 * What the relay's engine tells its subscribers: typed events for each step
 * of a connection's life (accepted, refused with a code, reserved, parked,
 * waiting, paired, pair ended with bytes and duration, …). Logs, `stats()`,
 * metrics and the admin server subscribe; the engine keeps no counter for
 * them.
 *
 * Gauges (how many are parked or paired now) are not events: read them from
 * `stats()` when they are wanted.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { RefusalCode } from "../protocol/_wire.ts";

/** Which of the relay's ports a connection came to. */
export type Port = "server" | "client";

/** A pair being relayed, or one that was. */
export interface PairInfo {
  /** Unique within the process, counting from 1. */
  id: number;
  /** The name the pair met under. */
  name: string;
  /** The client's address, `host:port`. */
  client: string;
  /** The server's address, `host:port`. */
  server: string;
  /** When the pair was made (ms since the epoch). */
  started: number;
  /** Application bytes relayed so far, each way. */
  bytes: { clientToServer: number; serverToClient: number };
  /**
   * In a cluster, a client forwarded here by another node: that node's name
   * (it logs the pair at info; this node at debug).
   */
  via?: string;
}

/** Why a parked server connection left the table without a client. */
export type UnparkReason =
  | "closed"
  | "protocol violation"
  | "no answer to PING"
  | "released"
  | "shutdown";

/** One event of the engine. */
export type RelayEvent =
  | { type: "accepted"; port: Port; peer: string }
  | {
    type: "refused";
    /** What kind of refusal: a stable word, fit for a metric label. */
    code: RefusalCode;
    /** For people: may hold addresses and names. */
    reason: string;
    peer: string;
    name?: string;
  }
  | { type: "handshake"; port: Port; peer: string; ms: number }
  | { type: "reserved"; name: string; peer: string; owned: boolean }
  | { type: "released"; name: string; peer: string }
  | { type: "parked"; name: string; peer: string; v2: boolean }
  | { type: "unparked"; name: string; peer: string; why: UnparkReason }
  | { type: "waiting"; name: string; peer: string }
  | { type: "paired"; pair: PairInfo }
  | { type: "pairEnded"; pair: PairInfo; ms: number }
  | { type: "draining"; pairs: number };

/** The type of a {@linkcode RelayEvent}: `"paired"`, `"refused"`, … */
export type RelayEventType = RelayEvent["type"];

/** A function that receives every event. */
export type RelayEventListener = (event: RelayEvent) => void;

const log = getLogger(["tcp-relay", "relay"]);

/**
 * The engine's events: subscribe with {@linkcode RelayEvents.on}. Listeners
 * run synchronously, in order, on the engine's path: keep them short. A
 * listener that throws is logged and does not stop the others.
 */
export class RelayEvents {
  #listeners: RelayEventListener[] = [];

  /**
   * Calls `listener` with every event from now on, until the returned
   * handle is disposed.
   *
   * @example Counting pairings
   * ```ts
   * import { serveRelay } from "jsr:@x/tcp-relay/relay";
   *
   * await using relay = serveRelay({ serverPort: 0, clientPort: 0 });
   * let pairings = 0;
   * using _sub = relay.events.on((e) => { if (e.type === "paired") pairings++; });
   * ```
   */
  on(listener: RelayEventListener): Disposable {
    this.#listeners = [...this.#listeners, listener];
    return {
      [Symbol.dispose]: () => {
        this.#listeners = this.#listeners.filter((l) => l !== listener);
      },
    };
  }

  /** Hands `event` to every listener. */
  emit(event: RelayEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch (e) {
        log.error("An event listener failed on {type}: {error}", {
          type: event.type,
          error: String(e),
        });
      }
    }
  }
}

/** The relay's log lines, as a subscriber of its events. */
export function logEvents(events: RelayEvents): Disposable {
  return events.on((e) => {
    switch (e.type) {
      case "refused":
        return log.info(
          e.name === undefined
            ? "Refused {peer}: {reason}"
            : "Refused {peer} for {name}: {reason}",
          { peer: e.peer, name: e.name, reason: e.reason, code: e.code },
        );
      case "reserved":
        return log.info("Reserved {name} for {peer}", e);
      case "released":
        return log.info("Released {name} for {peer}", e);
      case "parked":
        return log.debug("Parked {name} from {peer}", e);
      case "unparked": {
        const message =
          "Dropped parked connection for {name} from {peer}: {why}";
        if (e.why === "closed" || e.why === "shutdown") log.debug(message, e);
        else log.info(message, e);
        return;
      }
      case "paired":
        return log[e.pair.via ? "debug" : "info"](
          "Paired {name}: client {client} with server {server}",
          { ...e.pair },
        );
      case "pairEnded": {
        const { name, client, server, bytes, via } = e.pair;
        return log[via ? "debug" : "info"](
          "Closed {name}: client {client}, server {server}, {seconds} s, {up} bytes up, {down} bytes down",
          {
            name,
            client,
            server,
            seconds: Math.round(e.ms) / 1000,
            up: bytes.clientToServer,
            down: bytes.serverToClient,
          },
        );
      }
      case "draining":
        return;
    }
  });
}
