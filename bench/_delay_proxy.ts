/**
 * A TCP proxy that adds latency: every chunk read on one side is written to
 * the other `delayMs` later, in order, each way; an end of stream is carried
 * as a half-close after the same delay, and a connection is closed once both
 * ways have ended (or either side fails). Bandwidth is not limited: reading
 * goes on while earlier chunks wait (up to 4 MiB held per direction).
 *
 * The burst benchmark puts it between the server helper and the relay
 * (`deno run -A bench/_delay_proxy.ts --target 127.0.0.1:8010 --delay 20`
 * prints the port it listens on); tests import {@linkcode startDelayProxy}.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { parseHostPort, writeAll } from "../protocol/_wire.ts";

/** Options of {@linkcode startDelayProxy}. */
export interface DelayProxyOptions {
  /** Where each accepted connection is forwarded. */
  target: { hostname: string; port: number };
  /** Added latency each way, in ms. Default `20`. */
  delayMs?: number;
  /** Address to listen on. Default `127.0.0.1`. */
  hostname?: string;
  /** Port to listen on. Default `0` (any free port). */
  port?: number;
}

/** A running delay proxy. */
export interface DelayProxy extends AsyncDisposable {
  /** Where it listens: give this address instead of the target's. */
  readonly addr: Deno.NetAddr;
  /** Stops listening, closes every proxied connection, and waits for them. */
  close(): Promise<void>;
}

const HELD = 4 << 20;

/** One direction: reads `from`, writes each chunk to `to` `delay` ms later. */
async function carry(
  from: Deno.TcpConn,
  to: Deno.TcpConn,
  delay: number,
  signal: AbortSignal,
): Promise<void> {
  const queue: { due: number; data: Uint8Array | null }[] = [];
  let held = 0, dead = false;
  let wake: (() => void) | undefined;
  let room: (() => void) | undefined;
  const nudge = () => {
    wake?.();
    wake = undefined;
  };
  const reader = (async () => {
    try {
      for (;;) {
        while (held >= HELD) await new Promise<void>((r) => room = r);
        if (dead) return;
        const buf = new Uint8Array(64 * 1024);
        const n = await from.read(buf);
        queue.push({
          due: performance.now() + delay,
          data: n === null ? null : buf.subarray(0, n),
        });
        held += n ?? 0;
        nudge();
        if (n === null) return;
      }
    } catch {
      queue.push({ due: 0, data: null });
      nudge();
      throw new Error("read failed");
    }
  })();
  const writer = (async () => {
    try {
      for (;;) {
        while (!queue.length) await new Promise<void>((r) => wake = r);
        const { due, data } = queue[0];
        const wait = due - performance.now();
        if (wait > 0) await pause(wait, signal);
        queue.shift();
        if (data === null) return await to.closeWrite();
        await writeAll(to, data);
        held -= data.length;
        room?.();
        room = undefined;
      }
    } finally {
      dead = true; // a reader waiting for room stops
      room?.();
    }
  })();
  await Promise.all([reader, writer]);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/**
 * Starts a proxy to `target` that delays every chunk by `delayMs` each way,
 * keeping the order of bytes and carrying half-closes.
 *
 * @example A link with 20 ms each way in front of a relay's server port
 * ```ts
 * import { startDelayProxy } from "./bench/_delay_proxy.ts";
 *
 * await using proxy = startDelayProxy({
 *   target: { hostname: "127.0.0.1", port: 8010 },
 *   delayMs: 20,
 * });
 * console.log(`servers dial 127.0.0.1:${proxy.addr.port}`);
 * ```
 */
export function startDelayProxy(options: DelayProxyOptions): DelayProxy {
  const delay = options.delayMs ?? 20;
  if (!Number.isFinite(delay) || delay < 0) {
    throw new RangeError(`options.delayMs must be 0 or more, not ${delay}`);
  }
  const listener = Deno.listen({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
  });
  const ac = new AbortController();
  const open = new Set<Deno.TcpConn>();
  const tasks = new Set<Promise<void>>();
  const serve = async (inner: Deno.TcpConn) => {
    open.add(inner);
    let outer: Deno.TcpConn | undefined;
    try {
      outer = await Deno.connect(options.target);
      if (ac.signal.aborted) throw new Error("closed");
      open.add(outer);
      inner.setNoDelay(true);
      outer.setNoDelay(true);
      await Promise.all([
        carry(inner, outer, delay, ac.signal),
        carry(outer, inner, delay, ac.signal),
      ]);
    } catch {
      // a failed side ends the connection: both are closed below
    } finally {
      for (const c of [inner, outer]) {
        if (c && open.delete(c)) c.close();
      }
    }
  };
  const accepting = (async () => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        if (ac.signal.aborted) return;
        continue; // a failed accept (too many files) is not the end
      }
      const task = serve(conn);
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })();
  const close = async () => {
    if (!ac.signal.aborted) {
      ac.abort();
      listener.close();
      for (const c of open) c.close();
      open.clear();
    }
    await accepting;
    await Promise.all(tasks);
  };
  return {
    addr: listener.addr,
    close,
    [Symbol.asyncDispose]: close,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      target: { type: "string" },
      delay: { type: "string", default: "20" },
    },
  });
  if (!values.target) {
    console.error(
      "Usage: deno run -A bench/_delay_proxy.ts --target HOST:PORT [--delay MS]",
    );
    Deno.exit(2);
  }
  const proxy = startDelayProxy({
    target: parseHostPort(values.target),
    delayMs: Number(values.delay),
  });
  console.log(proxy.addr.port);
  const stop = () => proxy.close().then(() => Deno.exit(0));
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
