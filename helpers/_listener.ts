/**
 * The listener behind `listen()`: a pool of connections kept waiting at the
 * relay, each replaced as soon as a client takes it, with reconnection by
 * exponential backoff and full jitter while the relay is away.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { HelperOptions } from "./_dial.ts";
import { pause } from "../datapath/_accept.ts";
import { RelayError } from "../protocol/_errors.ts";

const log = getLogger(["tcp-relay", "server"]);

/** What the listener needs of `listen()`'s options. */
export interface PoolOptions extends HelperOptions {
  secret?: string;
  pool: number;
  minBackoff?: number;
  maxBackoff?: number;
}

/** Failures that retrying cannot mend: the relay refuses what we ask. */
function isPermanent(e: unknown): boolean {
  return e instanceof RelayError &&
    (e.code === "UNKNOWN_COMMAND" || e.code === "PROTOCOL" ||
      e.code === "AUTH");
}

/**
 * Clients of a name, as paired `Deno.TcpConn`s: iterate it, or call
 * {@linkcode RelayListener.accept}; {@linkcode RelayListener.close} ends a
 * `for await` cleanly. Made by `listen()`.
 *
 * @example Taking clients one by one
 * ```ts
 * import { listen } from "jsr:@x/tcp-relay";
 *
 * using listener = listen({ relay: "relay.example.com", name: "echo", pool: 4 });
 * const conn = await listener.accept();
 * conn.close();
 * ```
 */
export class RelayListener<C extends Deno.Conn = Deno.TcpConn>
  implements AsyncIterable<C>, Disposable, AsyncDisposable {
  #options: PoolOptions;
  #accept: (o: PoolOptions) => Promise<C>;
  #ac = new AbortController();
  #ready: C[] = [];
  #takers: PromiseWithResolvers<C>[] = [];
  #room: (() => void)[] = [];
  #error: unknown;
  #slots: Promise<void>[];

  /** Used by `listen()`; not meant to be called directly. */
  constructor(
    options: PoolOptions,
    accept: (o: PoolOptions) => Promise<C>,
  ) {
    this.#options = options;
    this.#accept = accept;
    const { signal } = options;
    if (signal?.aborted) this.close();
    const onAbort = () => this.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#ac.signal.addEventListener("abort", () => {
      signal?.removeEventListener("abort", onAbort);
    });
    this.#slots = Array.from({ length: options.pool }, () => this.#slot());
  }

  get #closed(): boolean {
    return this.#ac.signal.aborted;
  }

  async #slot(): Promise<void> {
    const min = this.#options.minBackoff ?? 100;
    const max = this.#options.maxBackoff ?? 30_000;
    let failures = 0;
    while (!this.#closed) {
      if (this.#ready.length >= this.#options.pool) {
        await new Promise<void>((r) => this.#room.push(r));
        continue;
      }
      try {
        const conn = await this.#accept({
          ...this.#options,
          signal: this.#ac.signal,
        });
        failures = 0;
        this.#deliver(conn);
      } catch (e) {
        if (this.#closed) return;
        if (isPermanent(e)) return this.#fail(e);
        const ms = Math.min(max, min * 2 ** failures++) * Math.random();
        log.warn(
          "Relay connection for {name} failed ({error}); retrying in {ms} ms",
          {
            name: this.#options.name,
            error: String((e as Error)?.message ?? e),
            ms: Math.round(ms),
          },
        );
        await pause(ms, this.#ac.signal);
      }
    }
  }

  #deliver(conn: C): void {
    if (this.#closed) return conn.close();
    const taker = this.#takers.shift();
    if (taker) taker.resolve(conn);
    else this.#ready.push(conn);
  }

  #fail(e: unknown): void {
    this.#error ??= e;
    for (const t of this.#takers.splice(0)) t.reject(e);
    this.close();
  }

  /** Waits for the next client; rejects once the listener is closed or failed. */
  accept(): Promise<C> {
    const conn = this.#ready.shift();
    if (conn) {
      this.#room.shift()?.();
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
    this.#ac.abort();
    for (const c of this.#ready.splice(0)) c.close();
    for (const r of this.#room.splice(0)) r();
    const closed = new RelayError("CLOSED", "Listener closed");
    for (const t of this.#takers.splice(0)) t.reject(this.#error ?? closed);
  }

  /** Closes the listener and waits until its connections are gone. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await Promise.all(this.#slots);
  }

  /** Same as {@linkcode RelayListener.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Yields each client until the listener is closed; throws if it failed. */
  async *[Symbol.asyncIterator](): AsyncIterator<C> {
    for (;;) {
      try {
        yield await this.accept();
      } catch (e) {
        if (this.#closed && !this.#error) return;
        throw e;
      }
    }
  }
}
