/**
 * Gives memory back to the system when the relay goes quiet after a busy
 * spell (a burst of pairs that then closed, say).
 *
 * V8 collects its old generation late and keeps the pages it grew into, and
 * the allocator keeps what Deno's native side freed: left alone, a relay's
 * RSS stayed at its peak after the pairs were gone (nothing in an idle relay
 * prompts V8 to shrink). Here, once nothing was accepted, closed or relayed
 * for {@linkcode QUIET_MS}, and since the last time either the heap grew by
 * {@linkcode MIN_GROWTH} or {@linkcode MIN_CHURN} connections came or went, one
 * full garbage collection runs and, on Linux with glibc, `malloc_trim(0)`
 * returns the allocator's free pages.
 *
 * It is on in the relay executable and off by default in the library (it
 * sets V8's `--expose-gc` for new contexts and, for the trim, needs
 * `--allow-ffi`; either step is skipped when it is not available). A quiet
 * relay runs no timer.
 *
 * @module
 */

import v8 from "node:v8";
import vm from "node:vm";
import { getLogger } from "@logtape/logtape";

const log = getLogger(["tcp-relay", "relay"]);

/** How long nothing must happen before memory is given back (ms). */
export const QUIET_MS = 100;
/** Heap growth since the last reclaim that makes one worth its pause (bytes). */
export const MIN_GROWTH = 32 * 1024 * 1024;
/** Connections accepted or closed since the last reclaim that make one worth its pause. */
export const MIN_CHURN = 1000;

let tools: { gc?: () => void; trim?: () => void } | undefined;

function load(): { gc?: () => void; trim?: () => void } {
  if (tools) return tools;
  tools = {};
  try {
    v8.setFlagsFromString("--expose-gc");
    tools.gc = vm.runInNewContext("gc");
  } catch {
    // not available in this runtime: V8 collects on its own schedule
  }
  try {
    // asked, not requested: no permission prompt in the middle of serving
    const ffi = Deno.permissions.querySync({ name: "ffi" }).state;
    if (Deno.build.os === "linux" && ffi === "granted") {
      const libc = Deno.dlopen("libc.so.6", {
        malloc_trim: { parameters: ["usize"], result: "i32" },
      });
      tools.trim = () => void libc.symbols.malloc_trim(0n);
    }
  } catch {
    // no --allow-ffi, or not glibc: the allocator keeps its free pages
  }
  return tools;
}

/**
 * Reclaims memory once a relay stops moving: {@linkcode poke} it on every
 * connection accepted and every one closed.
 */
export class Reclaimer {
  #bytes: () => number;
  #timer?: ReturnType<typeof setTimeout>;
  #churn = 0;
  #seen = 0;
  #base = Deno.memoryUsage().heapUsed;

  /** `bytes`: the bytes relayed so far (data flowing is not quiet). */
  constructor(bytes: () => number) {
    this.#bytes = bytes;
    load();
  }

  #activity(): number {
    return this.#churn + this.#bytes();
  }

  /** `n` connections were accepted or closed. */
  poke(n = 1): void {
    this.#churn += n;
    this.#arm();
  }

  /** Looks again once the relay has been quiet a while. */
  #arm(): void {
    if (this.#timer !== undefined) return;
    this.#seen = this.#activity();
    const timer = setTimeout(() => this.#check(), QUIET_MS);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  #check(): void {
    this.#timer = undefined;
    const now = this.#activity();
    if (now !== this.#seen) return this.#arm();
    const before = Deno.memoryUsage();
    const grew = before.heapUsed - this.#base >= MIN_GROWTH;
    if (!grew && this.#churn < MIN_CHURN) return;
    const { gc, trim } = load();
    const t0 = performance.now();
    gc?.();
    trim?.();
    const after = Deno.memoryUsage();
    this.#base = after.heapUsed;
    this.#churn = 0;
    log.debug("Gave memory back: RSS {before} MB -> {after} MB in {ms} ms", {
      before: Math.round(before.rss / 2 ** 20),
      after: Math.round(after.rss / 2 ** 20),
      ms: Math.round(performance.now() - t0),
    });
  }

  /** Stops watching. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
