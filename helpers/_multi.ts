/**
 * Several relays: the order a dial tries them in (`connect()` moves to the
 * next relay when one cannot be reached or has no server for the name), and
 * a listener spread over them (`listen()` keeps its pool parked at each
 * relay, so that losing one relay loses no service while it is retried).
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { HostPort } from "./_options.ts";
import { isPermanent } from "./_hints.ts";
import {
  type ListenerState,
  type PoolOptions,
  RelayListener,
} from "./_listener.ts";
import { RelayError, type RelayErrorCode } from "../protocol/_errors.ts";
import { formatAddr } from "../protocol/_wire.ts";

const log = getLogger(["tcp-relay", "helper"]);

/** `addrs`, or a RangeError naming the relay a list gives twice. */
export function distinct(addrs: HostPort[]): HostPort[] {
  const seen = new Set<string>();
  for (const addr of addrs) {
    const where = formatAddr({ transport: "tcp", ...addr });
    if (seen.has(where)) {
      throw new RangeError(`options.relay lists ${where} twice`);
    }
    seen.add(where);
  }
  return addrs;
}

/**
 * Runs `attempt` at each relay of `relays` in order until one succeeds
 * (`attempt` calls `started()` once its request goes out). A failure that
 * {@linkcode nextRelay} does not pass on is thrown at once, as is the
 * signal's reason; once every relay failed, the error tells each failure.
 */
export async function eachRelay<T>(
  relays: HostPort[],
  options: { name: string; signal?: AbortSignal },
  role: "server" | "client",
  attempt: (addr: HostPort, started: () => void) => Promise<T>,
): Promise<T> {
  if (relays.length === 1) return await attempt(relays[0], () => {});
  const failures: RelayError[] = [];
  for (const addr of relays) {
    let started = false;
    try {
      return await attempt(addr, () => started = true);
    } catch (e) {
      if (options.signal?.aborted) throw e;
      if (!(e instanceof RelayError) || !nextRelay(e, role, started)) throw e;
      failures.push(e);
      log.debug("{error}; trying the next relay", { error: e.message });
    }
  }
  throw everyRelayFailed(failures, options.name);
}

/**
 * Whether a failure at one relay of a list moves on to the next: never
 * after one retrying cannot mend (`AUTH`, `PROTOCOL`, TLS settings that do
 * not fit the relay); when the relay cannot be reached, does not answer in
 * time or closes (for a server, only before its request went out: once
 * parked, its failure is its caller's to handle); and, for a client, when
 * the relay has no server for the name (`NOEXIST`, `OFFLINE`) or no room
 * (`LIMIT`).
 */
export function nextRelay(
  e: RelayError,
  role: "server" | "client",
  started: boolean,
): boolean {
  if (isPermanent(e)) return false;
  if (role === "client") {
    return ["UNREACHABLE", "TIMEOUT", "CLOSED", "NOEXIST", "OFFLINE", "LIMIT"]
      .includes(e.code);
  }
  return !started && ["UNREACHABLE", "TIMEOUT", "CLOSED"].includes(e.code);
}

/** The code of a list's failure: the first of these that any relay gave. */
const LIST_CODES: RelayErrorCode[] = [
  "OFFLINE",
  "NOEXIST",
  "LIMIT",
  "TIMEOUT",
  "CLOSED",
  "UNREACHABLE",
];

/** The error once every relay of a list failed: the most telling code, and each relay's reason. */
export function everyRelayFailed(
  failures: RelayError[],
  name: string,
): RelayError {
  const code = LIST_CODES.find((c) => failures.some((e) => e.code === c)) ??
    failures[failures.length - 1].code;
  return new RelayError(
    code,
    `No relay of ${failures.length} served "${name}": ${
      failures.map((e) => e.message).join("; ")
    }`,
    { cause: failures.find((e) => e.code === code) },
  );
}

/** How good each state of a relay's listener is for the set: the best one wins. */
const RANK: ListenerState[] = ["parked", "connecting", "retrying", "failed"];

/**
 * A {@linkcode RelayListener} over several relays: one listener per relay,
 * each with the whole pool, its own backoff and its own log lines, and their
 * clients merged. It is parked while any relay has it parked, retrying while
 * none has and some relay is being retried, and fails only once every relay
 * failed for good (one relay that refuses for good is dropped, the others
 * serve on). `ready` resolves once it is parked at any relay.
 *
 * It takes clients from a relay's listener only while a caller waits for
 * one, so that, as with one relay, a listener nobody accepts from parks no
 * more than its pool at each relay.
 */
export class MultiListener<C extends Deno.Conn = Deno.TcpConn>
  extends RelayListener<C> {
  #subs: RelayListener<C>[];
  #pulling: boolean[];
  #ended: boolean[];
  #queue: C[] = [];
  #takers: PromiseWithResolvers<C>[] = [];
  #closed = false;
  #error: unknown;
  #ready = Promise.withResolvers<void>();
  #signal?: AbortSignal;
  #onAbort = () => this.close();

  /**
   * Used by `listen()`: `subs` are the listeners at each relay (made
   * without a signal: this one closes them), `options` the listen options.
   */
  constructor(options: PoolOptions, subs: RelayListener<C>[]) {
    // The base holds no connections of its own (pool 0): every public
    // member is this class's, over `subs`.
    super(
      { ...options, pool: 0, maxPool: 0, signal: undefined },
      "",
      () => Promise.reject(new RelayError("CLOSED", "not used")),
    );
    this.#subs = subs;
    this.#pulling = subs.map(() => false);
    this.#ended = subs.map(() => false);
    this.#ready.promise.catch(() => {}); // only a caller who awaits it hears
    let rejected = 0;
    for (const sub of subs) {
      sub.ready.then(() => this.#ready.resolve(), () => {
        if (++rejected < subs.length) return;
        this.#ready.reject(this.#error ?? sub.lastError ?? closedError());
      });
    }
    this.#signal = options.signal;
    if (this.#signal?.aborted) this.close();
    else this.#signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Resolves once parked at any relay; rejects once every relay failed, or on close before. */
  override get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** The best state among the relays (`"failed"` once all failed). */
  override get state(): ListenerState {
    if (this.#closed) return this.#error ? "failed" : "closed";
    const states = this.#subs.map((s) => s.state);
    return RANK.find((r) => states.includes(r)) ?? "failed";
  }

  /** The last failure at a relay that is not parked; `undefined` while every relay has it parked. */
  override get lastError(): unknown {
    if (this.#error) return this.#error;
    return this.#subs.find((s) => s.state !== "parked" && s.lastError)
      ?.lastError;
  }

  /** Waits for the next client at any relay; rejects once closed, or once every relay failed. */
  override accept(): Promise<C> {
    const conn = this.#queue.shift();
    if (conn) return Promise.resolve(conn);
    if (this.#error) return Promise.reject(this.#error);
    if (this.#closed) return Promise.reject(closedError());
    const taker = Promise.withResolvers<C>();
    this.#takers.push(taker);
    this.#pull();
    return taker.promise;
  }

  /** Asks each relay's listener that is not asked already for a client. */
  #pull(): void {
    for (const [i, sub] of this.#subs.entries()) {
      if (this.#pulling[i] || this.#ended[i]) continue;
      this.#pulling[i] = true;
      sub.accept().then((conn) => {
        this.#pulling[i] = false;
        if (this.#closed) return conn.close();
        const taker = this.#takers.shift();
        if (taker) taker.resolve(conn);
        else this.#queue.push(conn);
        if (this.#takers.length) this.#pull();
      }, (e) => {
        this.#pulling[i] = false;
        this.#ended[i] = true;
        if (this.#closed || !this.#ended.every(Boolean)) return;
        this.#error = e;
        this.close();
      });
    }
  }

  /** Closes the listener at every relay; a `for await` over it ends. */
  override close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    for (const sub of this.#subs) sub.close();
    for (const c of this.#queue.splice(0)) c.close();
    const error = this.#error ?? closedError();
    for (const t of this.#takers.splice(0)) t.reject(error);
    this.#ready.reject(error);
  }

  /** Closes the listener and waits until its connections at every relay are gone. */
  override async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await Promise.all(this.#subs.map((s) => s[Symbol.asyncDispose]()));
  }

  /** Same as {@linkcode MultiListener.close}. */
  override [Symbol.dispose](): void {
    this.close();
  }

  /** Yields each client of every relay until closed; throws once every relay failed. */
  override async *[Symbol.asyncIterator](): AsyncIterator<C> {
    try {
      for (;;) {
        let conn: C;
        try {
          conn = await this.accept();
        } catch (e) {
          if (this.#closed && !this.#error) return;
          throw e;
        }
        yield conn;
      }
    } finally {
      this.close();
    }
  }
}

function closedError(): RelayError {
  return new RelayError("CLOSED", "Listener closed");
}
