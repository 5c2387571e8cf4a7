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
  /** Clients: when their wait for a server ends (`Date.now()` time). */
  deadline?: number;
  /** v2 servers: the answer to the last PING, while it is awaited. */
  pong?: PromiseWithResolvers<boolean>;
  /** Clients forwarded by another node of a cluster: that node's name. */
  via?: string;
}

/** A reserved name. */
export interface Entry {
  parked: Set<Waiter>;
  waiting: Set<Waiter>;
  /** Made for a name somebody owned: not among the names nobody owns. */
  owned: boolean;
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

/** `set` with `item` first. */
function first<T>(item: T, set: Set<T>): Set<T> {
  return new Set([item, ...set]);
}

/** The parked servers and waiting clients of every reserved name. */
export class NameTable {
  #names = new Map<string, Entry>();
  #unowned = 0;
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

  /** How many names have an entry made while nobody owned them. */
  get unowned(): number {
    return this.#unowned;
  }

  /** Whether `name` is reserved (has an entry). */
  has(name: string): boolean {
    return this.#names.has(name);
  }

  /** The entry of `name`, made if `create` (for a name `owned` or not). */
  entry(name: string, create: boolean, owned = false): Entry | undefined {
    let entry = this.#names.get(name);
    if (!entry && create) {
      entry = { parked: new Set(), waiting: new Set(), owned };
      this.#names.set(name, entry);
      if (!owned) this.#unowned++;
    }
    return entry;
  }

  /** Whether `entry` is still the entry of `name` (not released since). */
  current(name: string, entry: Entry): boolean {
    return this.#names.get(name) === entry;
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
    const entry = this.#names.get(name);
    if (!entry) return;
    this.#names.delete(name);
    if (!entry.owned) this.#unowned--;
    this.#closeEntry(name, entry, "released");
  }

  /**
   * Closes the parked and waiting connections of `name` (the reservation
   * stays) and says how many; `-1` if the name has no entry.
   */
  closeAll(name: string): number {
    const entry = this.#names.get(name);
    return entry ? this.#closeEntry(name, entry, "closed") : -1;
  }

  #closeEntry(name: string, entry: Entry, why: UnparkReason): number {
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
    w.source.stop();
    w.pong?.resolve(false);
    this.#hooks.drop(w.conn);
  }

  /**
   * Parks `server` under `name` (watched from now on: it is dropped the
   * moment it dies), or pairs it at once with a waiting client.
   */
  park(name: string, entry: Entry, server: Waiter): void {
    const drop = (why: UnparkReason) => {
      const wasParked = entry.parked.delete(server);
      this.#dismiss(server);
      if (wasParked) this.#unparked(name, server, why);
    };
    let partial = "";
    // v2: the only bytes a parked server may send are PONG lines, or STOP
    // (instead of a PONG: it leaves, and no client can have taken it).
    const intercept = (chunk: Uint8Array) => {
      for (const byte of chunk) {
        if (byte !== 10) {
          partial += String.fromCharCode(byte);
          if (partial.length <= 8) continue;
        }
        const word = partial.replace(/\r$/, "").toUpperCase();
        if (word !== Word.PONG) {
          drop(
            word === Word.STOP && server.pong ? "closed" : "protocol violation",
          );
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
    this.#place(name, entry, server);
  }

  /** Pairs `server` with the oldest waiting client, or parks it (`ahead`: first in line). */
  #place(name: string, entry: Entry, server: Waiter, ahead = false): void {
    if (this.#closed) return this.#dismiss(server);
    const client = oldest(entry.waiting);
    if (client) {
      clearTimeout(client.timer);
      return void this.#pair(name, entry, server, client);
    }
    if (ahead) entry.parked = first(server, entry.parked);
    else entry.parked.add(server);
    const { peer, v2 } = server;
    this.#hooks.emit({ type: "parked", name, peer, v2: !!v2 });
    if (v2) this.#startBeat();
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

  /**
   * Pairs `client` with the oldest live parked server of `name`, or lets it
   * wait; watched from now on (a reset drops it; a half-close is kept).
   */
  offer(name: string, entry: Entry, client: Waiter): void {
    client.deadline = Date.now() + this.#wait;
    client.source.watch(() => {
      entry.waiting.delete(client);
      this.#dismiss(client);
    }, false);
    const server = oldest(entry.parked);
    if (server) return void this.#pair(name, entry, server, client);
    this.#waitFor(name, entry, client);
  }

  /** Lets `client` wait until its deadline (`ahead`: first in line). */
  #waitFor(name: string, entry: Entry, client: Waiter, ahead = false): void {
    const left = client.deadline! - Date.now();
    const offline = () => {
      client.dead = true;
      client.source.stop();
      this.#hooks.refuse(
        client.conn,
        client.peer,
        "no server waiting",
        Word.OFFLINE,
        name,
      );
    };
    if (left <= 0 || this.#closed) return offline();
    if (ahead) entry.waiting = first(client, entry.waiting);
    else entry.waiting.add(client);
    this.#hooks.emit({ type: "waiting", name, peer: client.peer });
    client.timer = setTimeout(() => {
      entry.waiting.delete(client);
      offline();
    }, left);
  }

  /**
   * Pairs `client` with `server`, or with the next live parked one. While a
   * PONG is awaited the name may be released (both are closed, as waiting
   * connections are) or the client may go (the server goes back, first).
   */
  async #pair(name: string, entry: Entry, server: Waiter, client: Waiter) {
    for (let s: Waiter | undefined = server; s; s = oldest(entry.parked)) {
      // A PING is out: its PONG must not reach the client as data.
      if (s.pong && !(await this.#pongOrTimeout(s))) this.#dismiss(s);
      if (!this.current(name, entry)) {
        this.#dismiss(s);
        return this.#dismiss(client);
      }
      if (s.dead) continue;
      if (client.dead) return this.#place(name, entry, s, true);
      // From CONNECTED on, the server's bytes are data and its end a
      // half-close: no PONG check, and nothing is death but a reset.
      s.source.watch(() => {}, false);
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
    if (client.dead) return;
    if (this.current(name, entry)) this.#waitFor(name, entry, client, true);
    else this.#dismiss(client);
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
    for (const [name, entry] of this.#names) {
      this.#closeEntry(name, entry, "shutdown");
    }
  }
}
