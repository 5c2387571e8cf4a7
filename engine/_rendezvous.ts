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
import type { DataPath } from "../datapath/_pipe.ts";
import { ActivePairs } from "./_pairs.ts";
import { Source } from "../datapath/_source.ts";
import {
  formatAddr,
  line,
  type RefusalCode,
  replyCode,
  Word,
  writeAll,
} from "../protocol/_wire.ts";
import { logEvents, type PairInfo, type Port, RelayEvents } from "./_events.ts";
import { Counters, type RelayStats } from "./_stats.ts";

export type { RelayStats } from "./_stats.ts";
import { Reclaimer } from "./_reclaim.ts";
import { Demand } from "./_demand.ts";
import { Registrar } from "./_register.ts";
import type { NameOwners } from "./_owners.ts";

export type { NameOwners } from "./_owners.ts";
import { type Conn, NameTable, type Waiter } from "./_table.ts";
import type { Cluster } from "./_cluster.ts";

export type { Conn } from "./_table.ts";

const log = getLogger(["tcp-relay", "relay"]);

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
  cluster?: Cluster;
}

/** The relay's engine over its two listeners. */
export class Rendezvous {
  readonly finished: Promise<void>;
  /** What happens, as it happens. */
  readonly events: RelayEvents = new RelayEvents();
  #settings: RendezvousSettings;
  #listeners: Deno.Listener<Conn>[];
  #table: NameTable;
  #guard: Guard;
  #pairs: ActivePairs;
  #stop = new AbortController();
  #counters: Counters;
  #done!: () => void;
  #stopped = false;
  #reclaimer?: Reclaimer;
  #registrar?: Registrar;
  #refusing = new TurnDowns();
  #demand: Demand;

  constructor(
    settings: RendezvousSettings,
    serverListener: Deno.Listener<Conn>,
    clientListener: Deno.Listener<Conn>,
  ) {
    this.#settings = settings;
    logEvents(this.events);
    this.#counters = new Counters(this.events);
    this.#guard = new Guard(settings.limits);
    this.#pairs = new ActivePairs(
      this.events,
      settings.dataPath,
      () => this.#reclaimer?.poke(2),
    );
    const paired = (name: string, server: Waiter, client: Waiter) => {
      this.#guard.release(server.conn);
      this.#guard.release(client.conn);
      this.#pairs.start(name, server, client);
    };
    this.#table = new NameTable(settings.wait, settings.heartbeat, {
      drop: (conn) => this.#drop(conn),
      refuse: (conn, peer, reason, reply, name) =>
        this.#refuse(conn, peer, reason, reply, name),
      emit: (event) => this.events.emit(event),
      paired,
    });
    this.#demand = new Demand(
      this.events,
      settings.heartbeat,
      this.#table,
      (conn) => this.#drop(conn),
    );
    if (settings.reclaimMemory) {
      this.#reclaimer = new Reclaimer(() =>
        this.#pairs.totals.aToB + this.#pairs.totals.bToA
      );
    }
    settings.cluster?.attach({
      parked: (name) => this.#table.entry(name, false)?.parked.size,
      counts: () => this.#table.counts().parked,
      events: this.events,
      relay: paired,
      refuse: (c, reason, reply, name) =>
        this.#refuse(c.conn, c.peer, reason, reply, name),
      serveForwarded: (name, client) => {
        const entry = this.#table.entry(name, false);
        if (entry?.parked.size) return this.#table.offer(name, entry, client);
        this.#refuse(
          client.conn,
          client.peer,
          "no server waiting",
          Word.OFFLINE,
          name,
        );
      },
    });
    if (settings.openRegistration && settings.owners?.add) {
      this.#registrar = new Registrar(
        settings.owners,
        this.#guard,
        this.#table,
      );
    }
    this.#listeners = [serverListener, clientListener];
    this.finished = new Promise((resolve) => this.#done = resolve);
    this.#serve(serverListener, "server", (c, p) => this.#onServer(c, p));
    this.#serve(clientListener, "client", (c, p) => this.#onClient(c, p));
  }

  stats(): RelayStats {
    const { parked, parkedCount, waiting, names } = this.#table.counts();
    for (const [name, n] of this.#counters.activeByName) {
      (names[name] ??= { parked: 0, waiting: 0, active: 0 }).active = n;
    }
    return {
      parked,
      waiting,
      handshaking: this.#guard.held - parkedCount - waiting -
        this.#demand.size,
      activePairs: this.#pairs.size,
      connections: this.#open() + this.#refusing.size,
      pairings: this.#counters.pairings,
      refusals: this.#counters.refusals,
      refusalsByCode: { ...this.#counters.refusalsByCode },
      names,
      bytes: {
        clientToServer: this.#pairs.totals.aToB,
        serverToClient: this.#pairs.totals.bToA,
      },
    };
  }

  /** Changes settings read at each use (timeouts, limits), live. */
  reconfigure(changes: Partial<RendezvousSettings>): void {
    Object.assign(this.#settings, changes);
    this.#guard.setLimits(this.#settings.limits);
  }

  /** Open connections: unpaired ones and both sides of each pair. */
  #open(): number {
    return this.#guard.held + 2 * this.#pairs.size;
  }

  #serve(
    listener: Deno.Listener<Conn>,
    port: Port,
    handle: (c: Conn, peer: string) => Promise<void>,
  ): void {
    acceptAll(listener, (conn) => {
      this.#reclaimer?.poke();
      const addr = conn.remoteAddr, peer = formatAddr(addr);
      const refusal = this.#guard.admit(conn, addr.hostname, this.#open());
      if (refusal) {
        const reply = `ERROR LIMIT ${refusal}`;
        const greeting = port === "server" ? Word.SERVER : Word.CLIENT;
        this.#refuse(conn, peer, refusal, reply, undefined, "LIMIT", greeting);
        return;
      }
      this.events.emit({ type: "accepted", port, peer });
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
    code: RefusalCode = replyCode(reply),
    greeting?: string,
  ): void {
    this.#guard.release(conn);
    this.events.emit({ type: "refused", code, reason, peer, name });
    if (greeting && reply) return this.#refusing.add(conn, greeting, reply);
    if (!reply) return closeQuietly(conn);
    answerAndClose(conn, reply);
  }

  #reply(conn: Conn, text: string): void {
    this.#guard.release(conn);
    answerAndClose(conn, text);
  }

  /** Runs a handshake under the timeout; `undefined` if it was refused or ended. */
  async #handshake<T>(
    conn: Conn,
    peer: string,
    port: Port,
    timeoutReply: (v2: boolean) => string,
    read: (state: HandshakeState) => Promise<T | null>,
  ): Promise<T | undefined> {
    const start = performance.now();
    const request = await underDeadline(
      conn,
      this.#settings.handshakeTimeout,
      timeoutReply,
      read,
      {
        refuse: (reason, reply, name, code) =>
          this.#refuse(conn, peer, reason, reply, name, code),
        drop: () => this.#drop(conn),
      },
    );
    if (request !== undefined) {
      const ms = performance.now() - start;
      this.events.emit({ type: "handshake", port, peer, ms });
    }
    return request;
  }

  async #onServer(conn: Conn, peer: string): Promise<void> {
    const req = await this.#handshake<ServerRequest>(
      conn,
      peer,
      "server",
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
    if (command === Word.WATCH) {
      const max = this.#guard.maxParked(ip);
      const full = this.#demand.add(name, conn, peer, req.rest, max);
      if (full) refuse(...full);
      return;
    }
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
      const owned = answer !== Word.OK;
      this.events.emit({ type: "reserved", name, peer, owned });
      return this.#reply(conn, answer);
    }
    if (command === Word.RELEASE) {
      if (owner) await this.#registrar?.forget(name);
      this.#table.release(name);
      this.events.emit({ type: "released", name, peer });
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
      "client",
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
      const code = why === "too many failed proofs" ? "RATE" : "AUTH";
      if (why) return this.#refuse(conn, peer, why, Word.NOEXIST, name, code);
    }
    let entry = this.#table.entry(name, !!owner, true);
    const client: Waiter = {
      conn,
      source: new Source(conn, req.rest),
      peer,
      dead: false,
    };
    const cluster = this.#settings.cluster;
    if (cluster && !entry?.parked.size) {
      if (await cluster.route(name, client, !!entry)) return;
      entry = this.#table.entry(name, !!owner, true);
    }
    if (!entry) {
      return this.#refuse(conn, peer, "no such name", Word.NOEXIST, name);
    }
    this.#table.offer(name, entry, client);
  }

  /** The pairs being relayed now, with their bytes so far. */
  pairs(): PairInfo[] {
    return this.#pairs.list();
  }

  /** Closes the pair with this id; `false` if there is none. */
  closePair(id: number): boolean {
    return this.#pairs.close(id);
  }

  /**
   * Closes every connection of `name` (parked, waiting, and both sides of
   * its pairs; the reservation stays) and says how many.
   */
  closeName(name: string): number {
    return Math.max(0, this.#table.closeAll(name)) +
      this.#pairs.closeName(name);
  }

  /** `"serving"`, then `"draining"` once a shutdown started, then `"stopped"`. */
  get state(): "serving" | "draining" | "stopped" {
    return this.#stopped
      ? "stopped"
      : this.#stop.signal.aborted
      ? "draining"
      : "serving";
  }

  async shutdown(): Promise<void> {
    if (this.#stop.signal.aborted) return this.finished;
    this.#stop.abort();
    this.events.emit({ type: "draining", pairs: this.#pairs.size });
    this.#reclaimer?.close();
    this.#listeners.forEach(closeQuietly);
    this.#table.close();
    this.#demand.close();
    for (const c of this.#guard.conns()) this.#drop(c as Conn);
    await this.#refusing.close();
    const drained = this.#pairs.drained();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((r) =>
      timer = setTimeout(r, this.#settings.drainTimeout)
    );
    await Promise.race([drained, timeout]);
    clearTimeout(timer);
    this.#pairs.closeAll();
    await drained;
    this.#stopped = true;
    this.#done();
    return this.finished;
  }
}
