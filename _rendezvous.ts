/**
 * The relay's engine: accept loops that survive every peer, the handshakes of
 * both ports, the table of names with their parked servers (oldest first) and
 * waiting clients, pairing, and a graceful shutdown.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  formatAddr,
  line,
  LineReader,
  nameProblem,
  Word,
  writeAll,
} from "./_protocol.ts";
import { type DataPath, pipePair, Source } from "./_pipe.ts";
import { acceptAll } from "./_accept.ts";

const log = getLogger(["tcp-relay", "relay"]);

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
  /** Connections refused since start (bad input, unknown names, timeouts). */
  refusals: number;
  /** Application bytes relayed since start, each way. */
  bytes: { clientToServer: number; serverToClient: number };
}

/** A connection waiting in the name table: a parked server or a waiting client. */
interface Waiter {
  conn: Deno.TcpConn;
  source: Source;
  peer: string;
  dead: boolean;
  timer?: ReturnType<typeof setTimeout>;
}

interface Entry {
  parked: Set<Waiter>;
  waiting: Set<Waiter>;
}

function oldest<T>(set: Set<T>): T | undefined {
  for (const item of set) {
    set.delete(item);
    return item;
  }
}

function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // closed already
  }
}

/** Settings of the engine, in milliseconds. */
export interface RendezvousSettings {
  wait: number;
  handshakeTimeout: number;
  drainTimeout: number;
  dataPath: DataPath;
}

/** The relay's engine over its two listeners. */
export class Rendezvous {
  readonly finished: Promise<void>;
  #settings: RendezvousSettings;
  #listeners: Deno.TcpListener[];
  #names = new Map<string, Entry>();
  #handshaking = new Set<Deno.Conn>();
  #pairs = new Map<Promise<void>, Deno.Conn[]>();
  #stop = new AbortController();
  #pairings = 0;
  #refusals = 0;
  #c2s = 0;
  #s2c = 0;
  #done!: () => void;

  constructor(
    settings: RendezvousSettings,
    serverListener: Deno.TcpListener,
    clientListener: Deno.TcpListener,
  ) {
    this.#settings = settings;
    this.#listeners = [serverListener, clientListener];
    this.finished = new Promise((resolve) => this.#done = resolve);
    this.#serve(serverListener, (c) => this.#onServer(c));
    this.#serve(clientListener, (c) => this.#onClient(c));
  }

  stats(): RelayStats {
    const parked: Record<string, number> = {};
    let waiting = 0, parkedCount = 0;
    for (const [name, entry] of this.#names) {
      parked[name] = entry.parked.size;
      parkedCount += entry.parked.size;
      waiting += entry.waiting.size;
    }
    return {
      parked,
      waiting,
      handshaking: this.#handshaking.size,
      activePairs: this.#pairs.size,
      connections: this.#handshaking.size + parkedCount + waiting +
        2 * this.#pairs.size,
      pairings: this.#pairings,
      refusals: this.#refusals,
      bytes: { clientToServer: this.#c2s, serverToClient: this.#s2c },
    };
  }

  #serve(
    listener: Deno.TcpListener,
    handle: (c: Deno.TcpConn) => Promise<void>,
  ) {
    acceptAll(listener, (conn) => {
      this.#handshaking.add(conn);
      handle(conn).catch((e) => {
        log.error("Unexpected failure: {error}", { error: String(e) });
        closeQuietly(conn);
      });
    }, this.#stop.signal);
  }

  /**
   * Refuses `conn` with `reply` once the handshake timeout passes; the read
   * under way then fails, and its handler must not refuse again.
   */
  #deadline(
    conn: Deno.Conn,
    peer: string,
    reply: string,
    state: { timedOut: boolean },
  ): ReturnType<typeof setTimeout> {
    return setTimeout(() => {
      state.timedOut = true;
      this.#refuse(conn, peer, "handshake timed out", reply);
    }, this.#settings.handshakeTimeout);
  }

  #refuse(
    conn: Deno.Conn,
    peer: string,
    reason: string,
    reply?: string,
    name?: string,
  ): void {
    this.#refusals++;
    this.#handshaking.delete(conn);
    if (name === undefined) {
      log.info("Refused {peer}: {reason}", { peer, reason });
    } else {log.info("Refused {peer} for {name}: {reason}", {
        peer,
        name,
        reason,
      });}
    if (!reply) return closeQuietly(conn);
    writeAll(conn, line(reply)).catch(() => {}).finally(() =>
      closeQuietly(conn)
    );
  }

  async #onServer(conn: Deno.TcpConn): Promise<void> {
    const peer = formatAddr(conn.remoteAddr);
    const state = { timedOut: false };
    const timer = this.#deadline(
      conn,
      peer,
      "ERROR TIMEOUT handshake timed out",
      state,
    );
    let command: string | null | undefined, name: string | null | undefined;
    const reader = new LineReader(conn);
    try {
      await writeAll(conn, line(Word.SERVER));
      command = (await reader.readLine())?.toUpperCase();
      if (
        command === Word.RESERVE || command === Word.RELEASE ||
        command === Word.CONNECT
      ) name = await reader.readLine();
    } catch (e) {
      clearTimeout(timer);
      if (state.timedOut) return;
      const reason = (e as Error).message;
      return this.#refuse(conn, peer, reason, `ERROR PROTOCOL ${reason}`);
    }
    clearTimeout(timer);
    if (command === undefined || command === Word.STOP || name === null) {
      this.#handshaking.delete(conn);
      return closeQuietly(conn);
    }
    if (name === undefined) {
      const reason = `unknown command ${JSON.stringify(command.slice(0, 40))}`;
      return this.#refuse(conn, peer, reason, Word.UNKNOWN_COMMAND);
    }
    const problem = nameProblem(name);
    if (problem) {
      return this.#refuse(conn, peer, problem, `ERROR NAME ${problem}`);
    }
    const entry = this.#names.get(name);
    if (command === Word.RESERVE) {
      if (entry) {
        return this.#refuse(conn, peer, "name in use", Word.USED, name);
      }
      this.#names.set(name, { parked: new Set(), waiting: new Set() });
      log.info("Reserved {name} for {peer}", { name, peer });
      return this.#reply(conn, Word.OK);
    }
    if (command === Word.RELEASE) {
      if (entry) this.#release(name, entry, peer);
      return this.#reply(conn, Word.OK);
    }
    this.#handshaking.delete(conn);
    this.#park(name, {
      conn,
      source: new Source(conn, reader.rest()),
      peer,
      dead: false,
    });
  }

  #reply(conn: Deno.Conn, word: string): void {
    this.#handshaking.delete(conn);
    writeAll(conn, line(word)).catch(() => {}).finally(() =>
      closeQuietly(conn)
    );
  }

  #release(name: string, entry: Entry, peer: string): void {
    this.#names.delete(name);
    for (const w of [...entry.parked, ...entry.waiting]) {
      w.dead = true;
      clearTimeout(w.timer);
      closeQuietly(w.conn);
    }
    log.info("Released {name} for {peer}", { name, peer });
  }

  #park(name: string, server: Waiter): void {
    let entry = this.#names.get(name);
    if (!entry) {
      entry = { parked: new Set(), waiting: new Set() };
      this.#names.set(name, entry);
    }
    const client = oldest(entry.waiting);
    if (client) {
      clearTimeout(client.timer);
      return void this.#pair(name, entry, server, client);
    }
    entry.parked.add(server);
    server.source.watch(() => {
      server.dead = true;
      entry.parked.delete(server);
      closeQuietly(server.conn);
      log.debug("Parked connection for {name} from {peer} closed", {
        name,
        peer: server.peer,
      });
    }, true);
  }

  async #onClient(conn: Deno.TcpConn): Promise<void> {
    const peer = formatAddr(conn.remoteAddr);
    const state = { timedOut: false };
    const timer = this.#deadline(conn, peer, Word.NOEXIST, state);
    const reader = new LineReader(conn);
    let name: string | null;
    try {
      await writeAll(conn, line(Word.CLIENT));
      name = await reader.readLine();
    } catch (e) {
      clearTimeout(timer);
      if (state.timedOut) return;
      return this.#refuse(conn, peer, (e as Error).message, Word.NOEXIST);
    }
    clearTimeout(timer);
    if (name === null) {
      this.#handshaking.delete(conn);
      return closeQuietly(conn);
    }
    const problem = nameProblem(name);
    if (problem) return this.#refuse(conn, peer, problem, Word.NOEXIST);
    const entry = this.#names.get(name);
    if (!entry) {
      return this.#refuse(conn, peer, "no such name", Word.NOEXIST, name);
    }
    this.#handshaking.delete(conn);
    const client = {
      conn,
      source: new Source(conn, reader.rest()),
      peer,
      dead: false,
    };
    const server = oldest(entry.parked);
    if (server) return this.#pair(name, entry, server, client);
    this.#wait(name, entry, client);
  }

  #wait(name: string, entry: Entry, client: Waiter): void {
    if (this.#settings.wait <= 0 || this.#stop.signal.aborted) {
      return this.#refuse(
        client.conn,
        client.peer,
        "no server waiting",
        Word.OFFLINE,
        name,
      );
    }
    entry.waiting.add(client);
    client.timer = setTimeout(() => {
      entry.waiting.delete(client);
      this.#refuse(
        client.conn,
        client.peer,
        "no server waiting",
        Word.OFFLINE,
        name,
      );
    }, this.#settings.wait);
    client.source.watch(() => {
      client.dead = true;
      clearTimeout(client.timer);
      entry.waiting.delete(client);
      closeQuietly(client.conn);
    }, false);
  }

  /** Pairs `client` with `server`, or with the next live parked one. */
  async #pair(name: string, entry: Entry, server: Waiter, client: Waiter) {
    for (let s: Waiter | undefined = server; s; s = oldest(entry.parked)) {
      if (s.dead) continue;
      try {
        await writeAll(s.conn, line(Word.CONNECTED));
      } catch {
        closeQuietly(s.conn);
        continue;
      }
      try {
        await writeAll(client.conn, line(Word.CONNECTED));
      } catch {
        closeQuietly(s.conn);
        closeQuietly(client.conn);
        return;
      }
      return this.#relay(name, s, client);
    }
    if (client.dead) return;
    this.#wait(name, entry, client);
  }

  #relay(name: string, server: Waiter, client: Waiter): void {
    this.#pairings++;
    log.info("Paired {name}: client {client} with server {server}", {
      name,
      client: client.peer,
      server: server.peer,
    });
    const done = pipePair(
      client.conn,
      client.source,
      server.conn,
      server.source,
      {
        aToB: (n) => this.#c2s += n,
        bToA: (n) => this.#s2c += n,
      },
    );
    this.#pairs.set(done, [client.conn, server.conn]);
    done.then(() => {
      this.#pairs.delete(done);
      log.debug("Pair {name} closed", { name });
    });
  }

  async shutdown(): Promise<void> {
    if (this.#stop.signal.aborted) return this.finished;
    this.#stop.abort();
    this.#listeners.forEach(closeQuietly);
    for (const c of this.#handshaking) closeQuietly(c);
    this.#handshaking.clear();
    for (const entry of this.#names.values()) {
      for (const w of [...entry.parked, ...entry.waiting]) {
        w.dead = true;
        clearTimeout(w.timer);
        closeQuietly(w.conn);
      }
      entry.parked.clear();
      entry.waiting.clear();
    }
    const pairs = Promise.all(this.#pairs.keys());
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((r) =>
      timer = setTimeout(r, this.#settings.drainTimeout)
    );
    await Promise.race([pairs, timeout]);
    clearTimeout(timer);
    for (const conns of this.#pairs.values()) conns.forEach(closeQuietly);
    await pairs;
    this.#done();
    return this.finished;
  }
}
