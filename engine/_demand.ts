/**
 * On-demand parking, the relay's side: the servers' control connections
 * (`WATCH <name>`, protocol v2), per name. Each hears `WATCHING <heartbeat>`,
 * then `NEED <n>` whenever `n`, the clients waiting for the name beyond its
 * parked connections, changes (the first change at once, then at most every
 * {@linkcode NEED_INTERVAL} ms, the last one always), and `PING` every
 * heartbeat. The only bytes a watcher may send are `PONG` lines; anything
 * else, or a `PING` unanswered by the next one, closes it. Watchers learn of
 * changes from the engine's events and read the counts from the name table;
 * they never reserve a name.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { Conn, NameTable } from "./_table.ts";
import type { RelayEvents } from "./_events.ts";
import {
  line,
  NEED_INTERVAL,
  needLine,
  watchingLine,
  Word,
  writeAll,
} from "../protocol/_wire.ts";

const log = getLogger(["tcp-relay", "relay"]);

/** One control connection. */
interface Watcher {
  conn: Conn;
  peer: string;
  name: string;
  dead: boolean;
  /** The last `n` it was told. */
  told: number;
  /** A PING is unanswered. */
  pongDue: boolean;
  /** Lines not written yet (one `NEED` at most: the latest). */
  out: string[];
  writing: boolean;
}

/** The watchers of one name and when it was last told. */
interface Watched {
  watchers: Set<Watcher>;
  at: number;
  scheduled: boolean;
  timer?: ReturnType<typeof setTimeout>;
}

/** The watchers of every name. */
export class Demand {
  #names = new Map<string, Watched>();
  #table: NameTable;
  #drop: (conn: Conn) => void;
  #heartbeat: number;
  #beat?: ReturnType<typeof setInterval>;
  #subscription: Disposable;
  #size = 0;
  #closed = false;

  /** `drop` closes a connection and forgets it. */
  constructor(
    events: RelayEvents,
    heartbeat: number,
    table: NameTable,
    drop: (conn: Conn) => void,
  ) {
    this.#table = table;
    this.#drop = drop;
    this.#heartbeat = heartbeat;
    this.#subscription = events.on((e) => {
      if (this.#names.size === 0) return;
      switch (e.type) {
        case "waiting":
        case "parked":
        case "unparked":
        case "released":
        case "refused":
          if (e.name !== undefined) this.#changed(e.name);
          return;
        case "paired":
          return this.#changed(e.pair.name);
      }
    });
  }

  /** Watch connections open now. */
  get size(): number {
    return this.#size;
  }

  /**
   * Watches `name` on `conn` (its handshake done; `rest`: bytes read past
   * the request), or says why not: at most `max` watchers per name.
   */
  add(
    name: string,
    conn: Conn,
    peer: string,
    rest: Uint8Array,
    max: number,
  ): [reason: string, reply: string] | undefined {
    if (this.#closed) return ["shutting down", "ERROR LIMIT shutting down"];
    let watched = this.#names.get(name);
    if ((watched?.watchers.size ?? 0) >= max) {
      return [
        "too many watch connections",
        `ERROR LIMIT too many watch connections for ${name}`,
      ];
    }
    if (!watched) {
      watched = { watchers: new Set(), at: -Infinity, scheduled: false };
      this.#names.set(name, watched);
    }
    const w: Watcher = {
      conn,
      peer,
      name,
      dead: false,
      told: 0,
      pongDue: false,
      out: [],
      writing: false,
    };
    watched.watchers.add(w);
    this.#size++;
    log.debug("Watching {name} for {peer}", { name, peer });
    this.#send(w, watchingLine(this.#heartbeat));
    const need = this.#need(name);
    if (need > 0) this.#tell(w, need);
    this.#beat ??= setInterval(() => this.#probe(), this.#heartbeat);
    this.#read(w, rest);
  }

  /** Closes every watch connection and stops. */
  close(): void {
    this.#closed = true;
    this.#subscription[Symbol.dispose]();
    clearInterval(this.#beat);
    this.#beat = undefined;
    for (const watched of this.#names.values()) {
      clearTimeout(watched.timer);
      for (const w of watched.watchers) this.#remove(w);
    }
    this.#names.clear();
  }

  /** Clients waiting for `name` beyond its parked servers. */
  #need(name: string): number {
    const entry = this.#table.entry(name, false);
    return Math.max(0, (entry?.waiting.size ?? 0) - (entry?.parked.size ?? 0));
  }

  /** Something changed for `name`: tell its watchers, at most every NEED_INTERVAL ms. */
  #changed(name: string): void {
    const watched = this.#names.get(name);
    if (!watched || watched.scheduled) return;
    watched.scheduled = true;
    const flush = () => this.#flush(name, watched);
    const wait = watched.at + NEED_INTERVAL - performance.now();
    // a microtask: the engine finishes the step that told of the change
    if (wait <= 0) queueMicrotask(flush);
    else watched.timer = setTimeout(flush, wait);
  }

  #flush(name: string, watched: Watched): void {
    watched.scheduled = false;
    watched.timer = undefined;
    if (this.#closed || this.#names.get(name) !== watched) return;
    const need = this.#need(name);
    let told = false;
    for (const w of watched.watchers) {
      if (w.told !== need) {
        this.#tell(w, need);
        told = true;
      }
    }
    if (told) watched.at = performance.now();
  }

  #tell(w: Watcher, need: number): void {
    w.told = need;
    w.out = w.out.filter((l) => !l.startsWith(Word.NEED));
    this.#send(w, needLine(need));
  }

  /** Queues `text` for `w`, written in order, one write at a time. */
  #send(w: Watcher, text: string): void {
    if (w.dead) return;
    w.out.push(text);
    if (!w.writing) this.#pump(w);
  }

  async #pump(w: Watcher): Promise<void> {
    w.writing = true;
    try {
      while (w.out.length && !w.dead) {
        await writeAll(w.conn, line(w.out.splice(0).join("\n")));
      }
    } catch {
      this.#remove(w, "write failed");
    } finally {
      w.writing = false;
    }
  }

  /** Reads `PONG` lines until the end; anything else closes the watcher. */
  async #read(w: Watcher, rest: Uint8Array): Promise<void> {
    let partial = "";
    const feed = (chunk: Uint8Array): boolean => {
      for (const byte of chunk) {
        if (byte !== 10) {
          partial += String.fromCharCode(byte);
          if (partial.length <= 8) continue;
        }
        if (partial.replace(/\r$/, "").toUpperCase() !== Word.PONG) {
          return false;
        }
        partial = "";
        w.pongDue = false;
      }
      return true;
    };
    if (!feed(rest)) return this.#remove(w, "protocol violation");
    const buf = new Uint8Array(64);
    for (;;) {
      let n: number | null;
      try {
        n = await w.conn.read(buf);
      } catch {
        n = null;
      }
      if (w.dead) return;
      if (n === null) return this.#remove(w, "closed");
      if (!feed(buf.subarray(0, n))) {
        return this.#remove(w, "protocol violation");
      }
    }
  }

  /** Every heartbeat: drops watchers that did not answer the last PING, pings the others. */
  #probe(): void {
    for (const watched of this.#names.values()) {
      for (const w of watched.watchers) {
        if (w.pongDue) {
          this.#remove(w, "no answer to PING");
          continue;
        }
        w.pongDue = true;
        this.#send(w, Word.PING);
      }
    }
  }

  #remove(w: Watcher, why?: string): void {
    if (w.dead) return;
    w.dead = true;
    this.#size--;
    const watched = this.#names.get(w.name);
    if (watched?.watchers.delete(w) && watched.watchers.size === 0) {
      clearTimeout(watched.timer);
      this.#names.delete(w.name);
    }
    if (this.#names.size === 0) {
      clearInterval(this.#beat);
      this.#beat = undefined;
    }
    if (why) {
      const level = why === "closed" ? "debug" : "info";
      log[level]("Dropped watch connection for {name} from {peer}: {why}", {
        name: w.name,
        peer: w.peer,
        why,
      });
    }
    this.#drop(w.conn);
  }
}
