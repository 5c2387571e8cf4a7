/**
 * The relay's table of names: per reserved name, its parked servers (paired
 * oldest first, dropped the moment they die) and its waiting clients; the
 * heartbeats of parked v2 servers; and the pairing of a client with the next
 * live server.
 *
 * @module
 */

import type { Source } from "../datapath/_source.ts";
import { line, Word, writeAll } from "../protocol/_wire.ts";
import type { RelayEvent, UnparkReason } from "./_events.ts";

/** A relay connection: plain TCP, or TLS. */
export type Conn = Deno.TcpConn | Deno.TlsConn;

/** A connection waiting in the table: a parked server or a waiting client. */
export interface Waiter {
  conn: Conn;
  source: Source;
  peer: string;
  dead: boolean;
  /** Speaks v2: gets heartbeats while parked. */
  v2?: boolean;
  timer?: ReturnType<typeof setTimeout>;
  /** v2 servers: the answer to the last PING, while it is awaited. */
  pong?: PromiseWithResolvers<boolean>;
}

/** A reserved name. */
export interface Entry {
  parked: Set<Waiter>;
  waiting: Set<Waiter>;
}

/** What the table needs of the relay. */
export interface TableHooks {
  /** Closes a connection and forgets it. */
  drop(conn: Conn): void;
  /** Refuses a connection with a line. */
  refuse(
    conn: Conn,
    peer: string,
    reason: string,
    reply: string,
    name: string,
  ): void;
  /** Tells the engine's subscribers. */
  emit(event: RelayEvent): void;
  /** Starts relaying a pair whose CONNECTED lines are sent. */
  paired(name: string, server: Waiter, client: Waiter): void;
}

function oldest<T>(set: Set<T>): T | undefined {
  for (const item of set) {
    set.delete(item);
    return item;
  }
}

/** The parked servers and waiting clients of every reserved name. */
export class NameTable {
  #names = new Map<string, Entry>();
  #wait: number;
  #heartbeat: number;
  #hooks: TableHooks;
  #beat?: ReturnType<typeof setInterval>;
  #closed = false;

  constructor(wait: number, heartbeat: number, hooks: TableHooks) {
    this.#wait = wait;
    this.#heartbeat = heartbeat;
    this.#hooks = hooks;
  }

  /** How many names have an entry. */
  get size(): number {
    return this.#names.size;
  }

  /** Whether `name` is reserved (has an entry). */
  has(name: string): boolean {
    return this.#names.has(name);
  }

  /** The entry of `name`, made if `create`. */
  entry(name: string, create: boolean): Entry | undefined {
    let entry = this.#names.get(name);
    if (!entry && create) {
      entry = { parked: new Set(), waiting: new Set() };
      this.#names.set(name, entry);
    }
    return entry;
  }

  /** Parked connections per name, and the totals. */
  counts(): {
    parked: Record<string, number>;
    parkedCount: number;
    waiting: number;
    names: Record<string, { parked: number; waiting: number; active: number }>;
  } {
    const parked: Record<string, number> = {};
    const names: Record<
      string,
      { parked: number; waiting: number; active: number }
    > = {};
    let waiting = 0, parkedCount = 0;
    for (const [name, entry] of this.#names) {
      parked[name] = entry.parked.size;
      names[name] = {
        parked: entry.parked.size,
        waiting: entry.waiting.size,
        active: 0,
      };
      parkedCount += entry.parked.size;
      waiting += entry.waiting.size;
    }
    return { parked, parkedCount, waiting, names };
  }

  /** Drops the reservation of `name`; its waiting connections are closed. */
  release(name: string): void {
    if (this.closeAll(name, "released") >= 0) this.#names.delete(name);
  }

  /**
   * Closes the parked and waiting connections of `name` (the reservation
   * stays) and says how many; `-1` if the name has no entry.
   */
  closeAll(name: string, why: UnparkReason = "closed"): number {
    const entry = this.#names.get(name);
    if (!entry) return -1;
    const all = [...entry.parked, ...entry.waiting];
    for (const w of entry.parked) this.#unparked(name, w, why);
    entry.parked.clear();
    entry.waiting.clear();
    for (const w of all) this.#dismiss(w);
    return all.length;
  }

  #unparked(name: string, w: Waiter, why: UnparkReason): void {
    this.#hooks.emit({ type: "unparked", name, peer: w.peer, why });
  }

  #dismiss(w: Waiter): void {
    w.dead = true;
    clearTimeout(w.timer);
    w.pong?.resolve(false);
    this.#hooks.drop(w.conn);
  }

  /** Parks `server` under `name`, or pairs it at once with a waiting client. */
  park(name: string, entry: Entry, server: Waiter): void {
    const client = oldest(entry.waiting);
    if (client) {
      clearTimeout(client.timer);
      return void this.#pair(name, entry, server, client);
    }
    entry.parked.add(server);
    this.#hooks.emit({
      type: "parked",
      name,
      peer: server.peer,
      v2: !!server.v2,
    });
    const drop = (why: UnparkReason) => {
      const wasParked = entry.parked.delete(server);
      this.#dismiss(server);
      if (wasParked) this.#unparked(name, server, why);
    };
    let partial = "";
    // v2: the only bytes a parked server may send are PONG lines.
    const intercept = (chunk: Uint8Array) => {
      for (const byte of chunk) {
        if (byte !== 10) {
          partial += String.fromCharCode(byte);
          if (partial.length <= 8) continue;
        }
        if (partial.replace(/\r$/, "").toUpperCase() !== Word.PONG) {
          drop("protocol violation");
          return true;
        }
        partial = "";
        server.pong?.resolve(true);
        server.pong = undefined;
      }
      return true;
    };
    server.source.watch(
      () => drop("closed"),
      true,
      server.v2 ? intercept : undefined,
    );
    if (server.v2) this.#startBeat();
  }

  /** Probes parked v2 servers every heartbeat; drops those that did not answer. */
  #startBeat(): void {
    this.#beat ??= setInterval(() => {
      let any = false;
      for (const [name, entry] of this.#names) {
        for (const w of entry.parked) {
          if (!w.v2) continue;
          any = true;
          const drop = () => {
            const wasParked = entry.parked.delete(w);
            this.#dismiss(w);
            if (wasParked) this.#unparked(name, w, "no answer to PING");
          };
          if (w.pong) {
            drop();
            continue;
          }
          w.pong = Promise.withResolvers();
          writeAll(w.conn, line(Word.PING)).catch(drop);
        }
      }
      if (!any) {
        clearInterval(this.#beat);
        this.#beat = undefined;
      }
    }, this.#heartbeat);
  }

  /** Pairs `client` with the oldest live parked server of `name`, or lets it wait. */
  offer(name: string, entry: Entry, client: Waiter): void {
    const server = oldest(entry.parked);
    if (server) return void this.#pair(name, entry, server, client);
    this.#waitFor(name, entry, client);
  }

  #waitFor(name: string, entry: Entry, client: Waiter): void {
    if (this.#wait <= 0 || this.#closed) {
      return this.#hooks.refuse(
        client.conn,
        client.peer,
        "no server waiting",
        Word.OFFLINE,
        name,
      );
    }
    entry.waiting.add(client);
    this.#hooks.emit({ type: "waiting", name, peer: client.peer });
    client.timer = setTimeout(() => {
      entry.waiting.delete(client);
      this.#hooks.refuse(
        client.conn,
        client.peer,
        "no server waiting",
        Word.OFFLINE,
        name,
      );
    }, this.#wait);
    client.source.watch(() => {
      entry.waiting.delete(client);
      this.#dismiss(client);
    }, false);
  }

  /** Pairs `client` with `server`, or with the next live parked one. */
  async #pair(name: string, entry: Entry, server: Waiter, client: Waiter) {
    for (let s: Waiter | undefined = server; s; s = oldest(entry.parked)) {
      // A PING is out: its PONG must not reach the client as data.
      if (s.pong && !(await this.#pongOrTimeout(s))) this.#dismiss(s);
      if (s.dead) continue;
      try {
        await writeAll(s.conn, line(Word.CONNECTED));
      } catch {
        this.#dismiss(s);
        continue;
      }
      try {
        await writeAll(client.conn, line(Word.CONNECTED));
      } catch {
        this.#dismiss(s);
        this.#dismiss(client);
        return;
      }
      return this.#hooks.paired(name, s, client);
    }
    if (!client.dead) this.#waitFor(name, entry, client);
  }

  #pongOrTimeout(s: Waiter): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([
      s.pong!.promise,
      new Promise<boolean>((r) =>
        timer = setTimeout(() => r(false), this.#heartbeat)
      ),
    ]).finally(() => clearTimeout(timer));
  }

  /** Closes every parked and waiting connection and stops the heartbeats. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#beat);
    for (const name of this.#names.keys()) this.closeAll(name, "shutdown");
  }
}
