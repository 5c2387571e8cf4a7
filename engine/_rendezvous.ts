/**
 * The relay's engine: accepting on both ports under the limits, the
 * handshakes (v1 and v2), who may use an owned or private name, the pairs
 * being relayed, live counts, and a graceful shutdown. The names with their
 * parked servers and waiting clients live in `_table.ts`.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { acceptAll } from "../datapath/_accept.ts";
import { Guard, type Limits } from "./_guard.ts";
import {
  answerAndClose,
  type ClientRequest,
  closeQuietly,
  type HandshakeState,
  readClientRequest,
  readServerRequest,
  type ServerRequest,
  TurnDowns,
  underDeadline,
} from "./_handshake.ts";
import { type DataPath, type Pair, relayPair } from "../datapath/_pipe.ts";
import { Source } from "../datapath/_source.ts";
import { formatAddr, line, Word, writeAll } from "../protocol/_wire.ts";
import { Reclaimer } from "./_reclaim.ts";
import { Registrar } from "./_register.ts";
import { type Conn, NameTable, type Waiter } from "./_table.ts";

export type { Conn } from "./_table.ts";

const log = getLogger(["tcp-relay", "relay"]);

/** The owners of names: who may serve a name, and who may reach a private one. */
export interface NameOwners {
  /** The secrets of `name`, or `undefined` for a name nobody owns. */
  get(name: string): { secret: string; clientKey?: string } | undefined;
  /** Makes the caller the owner of `name` (open registration); rejects if it has one. */
  add?(name: string): Promise<{ secret: string }>;
  /** Forgets the owner of `name` (its RELEASE under open registration); true if it had one. */
  remove?(name: string): Promise<boolean>;
  /** Every owned name: with open registration they count toward `limits.maxNames`. */
  names?(): string[];
}

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
  /** Application bytes relayed since start, each way. */
  bytes: { clientToServer: number; serverToClient: number };
}

/** Settings of the engine, times in milliseconds. */
export interface RendezvousSettings {
  wait: number;
  handshakeTimeout: number;
  drainTimeout: number;
  heartbeat: number;
  dataPath: DataPath;
  limits: Limits;
  owners?: NameOwners;
  openRegistration: boolean;
  reclaimMemory?: boolean;
}

/** The relay's engine over its two listeners. */
export class Rendezvous {
  readonly finished: Promise<void>;
  #settings: RendezvousSettings;
  #listeners: Deno.Listener<Conn>[];
  #table: NameTable;
  #guard: Guard;
  #pairs = new Set<Pair>();
  #drained?: () => void;
  #stop = new AbortController();
  #pairings = 0;
  #refusals = 0;
  #totals = { aToB: 0, bToA: 0 }; // a: the client, b: the server
  #done!: () => void;
  #reclaimer?: Reclaimer;
  #registrar?: Registrar;
  #refusing = new TurnDowns();

  constructor(
    settings: RendezvousSettings,
    serverListener: Deno.Listener<Conn>,
    clientListener: Deno.Listener<Conn>,
  ) {
    this.#settings = settings;
    this.#guard = new Guard(settings.limits);
    this.#table = new NameTable(settings.wait, settings.heartbeat, {
      drop: (conn) => this.#drop(conn),
      refuse: (conn, peer, reason, reply, name) =>
        this.#refuse(conn, peer, reason, reply, name),
      paired: (name, server, client) => this.#relay(name, server, client),
    });
    if (settings.reclaimMemory) {
      this.#reclaimer = new Reclaimer(() =>
        this.#totals.aToB + this.#totals.bToA
      );
    }
    if (settings.openRegistration && settings.owners?.add) {
      this.#registrar = new Registrar(
        settings.owners,
        this.#guard,
        this.#table,
      );
    }
    this.#listeners = [serverListener, clientListener];
    this.finished = new Promise((resolve) => this.#done = resolve);
    this.#serve(serverListener, Word.SERVER, (c, p) => this.#onServer(c, p));
    this.#serve(clientListener, Word.CLIENT, (c, p) => this.#onClient(c, p));
  }

  stats(): RelayStats {
    const { parked, parkedCount, waiting } = this.#table.counts();
    return {
      parked,
      waiting,
      handshaking: this.#guard.held - parkedCount - waiting,
      activePairs: this.#pairs.size,
      connections: this.#open() + this.#refusing.size,
      pairings: this.#pairings,
      refusals: this.#refusals,
      bytes: {
        clientToServer: this.#totals.aToB,
        serverToClient: this.#totals.bToA,
      },
    };
  }

  /** Open connections: unpaired ones and both sides of each pair. */
  #open(): number {
    return this.#guard.held + 2 * this.#pairs.size;
  }

  #serve(
    listener: Deno.Listener<Conn>,
    greeting: string,
    handle: (c: Conn, peer: string) => Promise<void>,
  ): void {
    acceptAll(listener, (conn) => {
      this.#reclaimer?.poke();
      const addr = conn.remoteAddr, peer = formatAddr(addr);
      const refusal = this.#guard.admit(conn, addr.hostname, this.#open());
      if (refusal) {
        const reply = `ERROR LIMIT ${refusal}`;
        return this.#refuse(conn, peer, refusal, reply, undefined, greeting);
      }
      handle(conn, peer).catch((e) => {
        log.error("Unexpected failure: {error}", { error: String(e) });
        this.#drop(conn);
      });
    }, this.#stop.signal);
  }

  /** Closes `conn` and forgets it. */
  #drop(conn: Conn): void {
    this.#guard.release(conn);
    closeQuietly(conn);
  }

  /** With `greeting`, `conn` was refused at admission: see {@linkcode TurnDowns}. */
  #refuse(
    conn: Conn,
    peer: string,
    reason: string,
    reply?: string,
    name?: string,
    greeting?: string,
  ): void {
    this.#refusals++;
    this.#guard.release(conn);
    log.info(
      name === undefined
        ? "Refused {peer}: {reason}"
        : "Refused {peer} for {name}: {reason}",
      { peer, name, reason },
    );
    if (greeting && reply) return this.#refusing.add(conn, greeting, reply);
    if (!reply) return closeQuietly(conn);
    answerAndClose(conn, reply);
  }

  #reply(conn: Conn, text: string): void {
    this.#guard.release(conn);
    answerAndClose(conn, text);
  }

  /** Runs a handshake under the timeout; `undefined` if it was refused or ended. */
  #handshake<T>(
    conn: Conn,
    peer: string,
    timeoutReply: (v2: boolean) => string,
    read: (state: HandshakeState) => Promise<T | null>,
  ): Promise<T | undefined> {
    return underDeadline(
      conn,
      this.#settings.handshakeTimeout,
      timeoutReply,
      read,
      {
        refuse: (reason, reply, name) =>
          this.#refuse(conn, peer, reason, reply, name),
        drop: () => this.#drop(conn),
      },
    );
  }

  async #onServer(conn: Conn, peer: string): Promise<void> {
    const req = await this.#handshake<ServerRequest>(
      conn,
      peer,
      () => "ERROR TIMEOUT handshake timed out",
      (state) => readServerRequest(conn, state),
    );
    if (!req) return;
    const { command, name, v2 } = req, ip = conn.remoteAddr.hostname;
    const refuse = (reason: string, reply: string) =>
      this.#refuse(conn, peer, reason, reply, name);
    const owner = this.#settings.owners?.get(name);
    const denied = owner &&
      this.#guard.ownerDenies(ip, owner.secret, command, name, v2);
    if (denied) return refuse(...denied);
    const held = this.#registrar?.held() ?? this.#table.unowned;
    if (
      command !== Word.RELEASE && !owner && !this.#table.has(name) &&
      held >= this.#guard.maxNames
    ) {
      return refuse("too many names", "ERROR LIMIT too many names reserved");
    }
    if (command === Word.RESERVE) {
      if (!owner && this.#table.has(name)) {
        return refuse("name in use", Word.USED);
      }
      let answer: string = Word.OK;
      if (!owner && v2 && this.#registrar) {
        const { reply, refused } = await this.#registrar.register(name, ip);
        if (refused) return refuse(refused, reply);
        answer = reply;
      } else this.#table.entry(name, true, !!owner);
      log.info("Reserved {name} for {peer}", {
        name,
        peer,
        owned: answer !== Word.OK,
      });
      return this.#reply(conn, answer);
    }
    if (command === Word.RELEASE) {
      if (owner) await this.#registrar?.forget(name);
      this.#table.release(name);
      log.info("Released {name} for {peer}", { name, peer });
      return this.#reply(conn, Word.OK);
    }
    const entry = this.#table.entry(name, true, !!owner)!;
    if (entry.parked.size >= this.#guard.maxParked(ip)) {
      return refuse(
        "too many parked connections",
        `ERROR LIMIT too many parked connections for ${name}`,
      );
    }
    const server: Waiter = {
      conn,
      source: new Source(conn, req.rest),
      peer,
      dead: false,
      v2: !!v2,
    };
    if (v2) {
      try {
        await writeAll(
          conn,
          line(`${Word.PARKED} ${this.#settings.heartbeat / 1000}`),
        );
      } catch {
        return this.#drop(conn);
      }
      // released while PARKED was on its way: closed, as parked ones are
      if (!this.#table.current(name, entry)) return this.#drop(conn);
    }
    this.#table.park(name, entry, server);
  }

  async #onClient(conn: Conn, peer: string): Promise<void> {
    const req = await this.#handshake<ClientRequest>(
      conn,
      peer,
      (v2) => v2 ? "ERROR TIMEOUT handshake timed out" : Word.NOEXIST,
      (state) => readClientRequest(conn, state),
    );
    if (!req) return;
    const { name, v2 } = req, ip = conn.remoteAddr.hostname;
    const owner = this.#settings.owners?.get(name);
    if (owner?.clientKey) {
      // A private name without the right key looks exactly like no name: any
      // other answer (an ERROR, even RATE) would tell that it exists.
      const why = this.#guard.blocked(ip)
        ? "too many failed proofs"
        : this.#guard.proved(ip, owner.clientKey, "CLIENT", name, v2)
        ? undefined
        : "private name, no valid key";
      if (why) return this.#refuse(conn, peer, why, Word.NOEXIST, name);
    }
    const entry = this.#table.entry(name, !!owner, true);
    if (!entry) {
      return this.#refuse(conn, peer, "no such name", Word.NOEXIST, name);
    }
    const client: Waiter = {
      conn,
      source: new Source(conn, req.rest),
      peer,
      dead: false,
    };
    this.#table.offer(name, entry, client);
  }

  #relay(name: string, server: Waiter, client: Waiter): void {
    this.#guard.release(server.conn);
    this.#guard.release(client.conn);
    this.#pairings++;
    log.info("Paired {name}: client {client} with server {server}", {
      name,
      client: client.peer,
      server: server.peer,
    });
    const pair = relayPair(
      client.conn,
      client.source,
      server.conn,
      server.source,
      {
        totals: this.#totals,
        path: this.#settings.dataPath,
        tag: name,
        onEnd: this.#pairEnded,
      },
    );
    this.#pairs.add(pair);
  }

  #pairEnded = (pair: Pair): void => {
    this.#pairs.delete(pair);
    this.#reclaimer?.poke(2);
    log.debug("Pair {name} closed", { name: pair.tag });
    if (this.#pairs.size === 0) this.#drained?.();
  };

  async shutdown(): Promise<void> {
    if (this.#stop.signal.aborted) return this.finished;
    this.#stop.abort();
    this.#reclaimer?.close();
    this.#listeners.forEach(closeQuietly);
    this.#table.close();
    for (const c of this.#guard.conns()) this.#drop(c as Conn);
    await this.#refusing.close();
    const drained = new Promise<void>((r) =>
      this.#pairs.size ? this.#drained = r : r()
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((r) =>
      timer = setTimeout(r, this.#settings.drainTimeout)
    );
    await Promise.race([drained, timeout]);
    clearTimeout(timer);
    for (const pair of [...this.#pairs]) pair.close();
    await drained;
    this.#done();
    return this.finished;
  }
}
