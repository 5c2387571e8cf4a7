/**
 * The listener behind `listen()`: a pool of connections kept waiting at the
 * relay, each replaced as soon as a client takes it, with reconnection by
 * exponential backoff and full jitter while the relay is away, and a state
 * that tells whether it is parked. Where the relay tells of a crowd, more are
 * opened on demand, up to `maxPool` (`_demand.ts`).
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { HelperOptions } from "./_options.ts";
import { isPermanent } from "./_hints.ts";
import { pause } from "../datapath/_accept.ts";
import { Demand, Unparked } from "./_demand.ts";
import { RelayError } from "../protocol/_errors.ts";

const log = getLogger(["tcp-relay", "server"]);

/** Longest pause between reconnections by default, in ms. */
export const DEFAULT_MAX_BACKOFF = 5_000;
/** First pause before reconnecting by default, in ms. */
export const DEFAULT_MIN_BACKOFF = 100;

/** What the listener needs of `listen()`'s options. */
export interface PoolOptions extends HelperOptions {
  secret?: string;
  pool: number;
  /** Connections parked or being dialed at most, on demand; `pool`: a fixed pool. */
  maxPool: number;
  shrinkAfter?: number;
  minBackoff?: number;
  maxBackoff?: number;
}

/**
 * Where a {@linkcode RelayListener} stands:
 * - `"connecting"`: nothing parked yet, no failure yet;
 * - `"parked"`: a connection is waiting at the relay for a client (or the
 *   last attempt parked one);
 * - `"retrying"`: the relay cannot be reached or refused, nothing is parked,
 *   and the listener is waiting to try again ({@linkcode RelayListener.lastError}
 *   tells why);
 * - `"failed"`: a failure that retrying cannot mend (a wrong secret, a
 *   certificate not trusted, not a relay); the listener is closed;
 * - `"closed"`: closed by `close()`, the signal, or the end of a `for await`.
 */
export type ListenerState =
  | "connecting"
  | "parked"
  | "retrying"
  | "failed"
  | "closed";

/**
 * One attempt: resolves with a paired connection; calls `parked()` once
 * waiting at the relay; leaves at a PING once `stay()` says so (rejecting).
 */
export type ParkOne<C> = (
  options: PoolOptions,
  parked: () => void,
  stay?: () => boolean,
) => Promise<C>;

/**
 * Clients of a name, as paired `Deno.TcpConn`s: iterate it, or call
 * {@linkcode RelayListener.accept}; {@linkcode RelayListener.close} ends a
 * `for await` cleanly, and leaving a `for await` (`break`, `return`, an
 * exception) closes the listener, as with `Deno.listen`. Made by `listen()`.
 *
 * @example Waiting until it is parked, then taking clients one by one
 * ```ts
 * import { listen } from "jsr:@x/tcp-relay";
 *
 * using listener = listen({ relay: "relay.example.com", name: "echo", pool: 4 });
 * await listener.ready; // rejects if the relay refuses for good
 * console.log(listener.state); // "parked"
 * const conn = await listener.accept();
 * conn.close();
 * ```
 */
export class RelayListener<C extends Deno.Conn = Deno.TcpConn>
  implements AsyncIterable<C>, Disposable, AsyncDisposable {
  #options: PoolOptions;
  #where: string;
  #park: ParkOne<C>;
  #ac = new AbortController();
  #queue: C[] = [];
  #takers: PromiseWithResolvers<C>[] = [];
  #room: (() => void)[] = [];
  #error: unknown;
  #slots: Promise<void>[];
  #state: ListenerState = "connecting";
  #lastError: unknown;
  #warned = "";
  #parkedNow = 0;
  #dialing = 0;
  #demand?: Demand;
  #ready = Promise.withResolvers<void>();

  /** Used by `listen()`; not meant to be called directly. */
  constructor(options: PoolOptions, where: string, park: ParkOne<C>) {
    this.#options = options;
    this.#where = where;
    this.#park = park;
    this.#ready.promise.catch(() => {}); // only a caller who awaits it hears
    const { signal } = options;
    const onAbort = () => this.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#ac.signal.addEventListener("abort", () => {
      signal?.removeEventListener("abort", onAbort);
    });
    this.#slots = signal?.aborted
      ? []
      : Array.from({ length: options.pool }, () => this.#slot());
    if (signal?.aborted) this.close();
  }

  /**
   * Resolves once a connection is parked at the relay for the first time;
   * rejects with a {@linkcode RelayError} if the listener fails for good
   * (state `"failed"`) or is closed before. Against a relay that is down it
   * waits (state `"retrying"`) until the relay is back.
   */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Where the listener stands: see {@linkcode ListenerState}. */
  get state(): ListenerState {
    return this.#state;
  }

  /**
   * The last failure to reach or be parked at the relay (a
   * {@linkcode RelayError}), while `"retrying"` or `"failed"`; `undefined`
   * once parked again.
   */
  get lastError(): unknown {
    return this.#lastError;
  }

  get #closed(): boolean {
    return this.#ac.signal.aborted;
  }

  async #slot(): Promise<void> {
    const min = this.#options.minBackoff ?? DEFAULT_MIN_BACKOFF;
    const max = this.#options.maxBackoff ?? DEFAULT_MAX_BACKOFF;
    let failures = 0;
    while (!this.#closed) {
      if (this.#queue.length >= this.#options.pool) {
        await new Promise<void>((r) => this.#room.push(r));
        continue;
      }
      try {
        const conn = await this.#parkOne();
        failures = 0;
        this.#deliver(conn);
      } catch (e) {
        this.#demand?.poke();
        if (this.#closed) return;
        if (isPermanent(e)) return this.#fail(e);
        const ms = Math.min(max, min * 2 ** failures++) * Math.random();
        this.#onFailure(e, ms);
        await pause(ms, this.#ac.signal);
      }
    }
  }

  /**
   * One more connection, on demand: parked once, delivered once, not
   * replaced; it leaves at a PING once `stay()` is false.
   */
  async #extra(stay: () => boolean): Promise<void> {
    try {
      this.#deliver(await this.#parkOne(stay));
    } catch (e) {
      // left as surplus, or failed: the next NEED tells what is needed
      if (!(e instanceof Unparked) && !this.#closed) {
        log.debug("An extra connection for {name} failed: {error}", {
          name: this.#options.name,
          error: String((e as Error)?.message ?? e),
        });
      }
      this.#demand?.poke();
    }
  }

  /**
   * Dials and parks one connection until a client takes it (`stay`: see
   * `park`), counted as dialing, then as parked, and neither once it is
   * taken or failed.
   */
  async #parkOne(stay?: () => boolean): Promise<C> {
    let parked = false;
    this.#dialing++;
    try {
      return await this.#park(
        { ...this.#options, signal: this.#ac.signal },
        () => {
          parked = true;
          this.#dialing--;
          this.#parkedNow++;
          this.#onParked();
        },
        stay,
      );
    } finally {
      if (parked) this.#parkedNow--;
      else this.#dialing--;
    }
  }

  #onParked(): void {
    this.#lastError = undefined;
    this.#warned = "";
    if (this.#state === "parked" || this.#closed) return;
    if (!this.#demand && this.#options.maxPool > this.#options.pool) {
      this.#demand = new Demand(this.#options, this.#ac.signal, {
        counts: () => ({
          dialing: this.#dialing,
          parked: this.#parkedNow,
          queued: this.#queue.length,
        }),
        extra: (stay) => this.#extra(stay),
      });
    }
    this.#state = "parked";
    log.info("Parked at relay {relay} as {name} (pool {pool})", {
      relay: this.#where,
      name: this.#options.name,
      pool: this.#options.pool,
    });
    this.#ready.resolve();
  }

  #onFailure(e: unknown, ms: number): void {
    this.#lastError = e;
    if (this.#parkedNow === 0) this.#state = "retrying";
    const error = String((e as Error)?.message ?? e);
    // one warning per kind of failure; each retry after it at debug
    const level = error === this.#warned ? "debug" : "warn";
    this.#warned = error;
    log[level](
      "Relay connection for {name} failed ({error}); retrying in {ms} ms",
      { name: this.#options.name, error, ms: Math.round(ms) },
    );
  }

  #deliver(conn: C): void {
    if (this.#closed) return conn.close();
    const taker = this.#takers.shift();
    if (taker) taker.resolve(conn);
    else this.#queue.push(conn);
    this.#demand?.poke(); // room may have freed up
  }

  #fail(e: unknown): void {
    if (this.#closed) return;
    this.#error = e;
    this.#lastError = e;
    this.#state = "failed";
    log.error("Stopped offering {name} at {relay}: {error}", {
      name: this.#options.name,
      relay: this.#where,
      error: String((e as Error)?.message ?? e),
    });
    this.close();
  }

  /** Waits for the next client; rejects once the listener is closed or failed. */
  accept(): Promise<C> {
    const conn = this.#queue.shift();
    if (conn) {
      this.#room.shift()?.();
      this.#demand?.poke();
      return Promise.resolve(conn);
    }
    if (this.#error) return Promise.reject(this.#error);
    if (this.#closed) {
      return Promise.reject(new RelayError("CLOSED", "Listener closed"));
    }
    const taker = Promise.withResolvers<C>();
    this.#takers.push(taker);
    return taker.promise;
  }

  /** Closes the waiting connections; a `for await` over the listener ends. */
  close(): void {
    if (this.#closed) return;
    if (this.#state !== "failed") this.#state = "closed";
    this.#ac.abort();
    for (const c of this.#queue.splice(0)) c.close();
    for (const r of this.#room.splice(0)) r();
    const closed = new RelayError("CLOSED", "Listener closed");
    for (const t of this.#takers.splice(0)) t.reject(this.#error ?? closed);
    this.#ready.reject(this.#error ?? closed);
  }

  /** Closes the listener and waits until its connections are gone. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await Promise.all(this.#slots);
    await this.#demand?.closed();
  }

  /** Same as {@linkcode RelayListener.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Yields each client until the listener is closed; throws if it failed.
   * Leaving the loop early closes the listener.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<C> {
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
