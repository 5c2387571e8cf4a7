/**
 * An accept loop that no peer can stop: a connection reset before it was
 * accepted (ENOTCONN, ECONNABORTED) is skipped, running out of file
 * descriptors (EMFILE) pauses with growing waits until some close, and only
 * closing the listener (or `signal`) ends it.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { formatAddr } from "../protocol/_wire.ts";

const log = getLogger(["tcp-relay", "accept"]);

/**
 * `Cannot listen on 127.0.0.1:8010: address in use`, from what
 * `Deno.listen` threw for `addr`: an error of the same class, with the
 * original as its cause.
 */
export function cannotListen(
  e: unknown,
  addr: { hostname: string; port: number },
): Error {
  if (!(e instanceof Error)) return new Error(String(e));
  const why = e instanceof Deno.errors.AddrInUse
    ? "address in use"
    : e instanceof Deno.errors.AddrNotAvailable
    ? "address not available"
    : e instanceof Deno.errors.PermissionDenied
    ? "permission denied"
    : e.message.replace(/ \(os error \d+\)$/, "");
  const where = formatAddr({ transport: "tcp", ...addr });
  const E = e.constructor as ErrorConstructor;
  return new E(`Cannot listen on ${where}: ${why}`, { cause: e });
}

/** Waits `ms`, or less if `signal` aborts (no timer is left behind). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done);
  });
}

/**
 * Accepts connections on `listener` and hands each to `handle` (TCP ones
 * with `setNoDelay(true)`) until the listener is closed or `signal` aborts.
 */
export async function acceptAll<C extends Deno.Conn>(
  listener: Deno.Listener<C>,
  handle: (conn: C) => void,
  signal?: AbortSignal,
): Promise<void> {
  let failures = 0;
  while (!signal?.aborted) {
    let conn: C;
    try {
      conn = await listener.accept();
      failures = 0;
    } catch (e) {
      if (signal?.aborted || e instanceof Deno.errors.BadResource) return;
      failures++;
      const outOfFds = /EMFILE|ENFILE|too many open files/i.test(String(e));
      if (outOfFds || failures > 1) {
        const ms = Math.min(10 * 2 ** (failures - 1), 1000);
        log.warn("Accept failed ({error}); pausing {ms} ms", {
          error: String((e as Error)?.message ?? e),
          ms,
        });
        await pause(ms, signal);
      }
      continue;
    }
    try {
      // TLS connections have no setNoDelay in Deno
      (conn as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    } catch {
      // reset already: whoever reads it will find out
    }
    handle(conn);
  }
}
