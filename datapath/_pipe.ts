/**
 * The data path: copying bytes both ways between two connections, carrying
 * each end of stream as a half-close (`closeWrite()`).
 *
 * Deno's built-in `conn.readable`/`conn.writable` close the whole socket at
 * end of stream (so they cannot carry a half-close) and hold a 64 KiB buffer
 * per pending read. Here:
 * - the default path is a read/write loop per direction written as promise
 *   callbacks (no async frame per idle direction, no closure per read). It
 *   takes over what the {@linkcode Source} read while the connection
 *   waited, then reads the connection itself into a small buffer while the
 *   peer is quiet and into large pooled buffers while data streams (a full
 *   read moves it up, a short one down), writes every byte (a `write` may
 *   take part of a buffer) and gives large buffers back;
 * - the `"streams"` path is `readable.pipeTo(writable)` over streams of our
 *   own with the same buffers, kept to compare in the benchmark: its stream
 *   objects cost more memory per idle pair and it carries less.
 *
 * @module
 */

import { type ByteStream, writeAll } from "../protocol/_wire.ts";
import {
  type Chunk,
  giveBack,
  type Handover,
  SMALL_BUFFER,
  type Source,
  takeLarge,
} from "./_source.ts";

/** A two-way connection: `Deno.TcpConn`, `Deno.TlsConn`, or stdio joined. */
export interface Duplex extends ByteStream {
  closeWrite(): Promise<void>;
  close(): void;
}

/**
 * A stream that writes every chunk fully to `w`, counts the bytes with
 * `onBytes`, and half-closes `w` (`closeWrite()`) when the source ends. A
 * chunk's pooled buffer goes back once written or failed; with `out`, only if
 * the chunk is still in it (it is taken out).
 */
export function sink(
  w: Pick<Duplex, "write" | "closeWrite">,
  onBytes?: (n: number) => void,
  out?: Set<Uint8Array>,
): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>({
    async write(chunk) {
      try {
        await writeAll(w, chunk);
        onBytes?.(chunk.length);
      } finally {
        if (!out || out.delete(chunk)) giveBack(chunk);
      }
    },
    async close() {
      try {
        await w.closeWrite();
      } catch {
        // the peer is gone already: nothing left to tell it
      }
    },
  }, { highWaterMark: 1 });
}

/**
 * `src.readable().pipeTo(sink(dst))`, and every pooled buffer handed to the
 * streams comes back to the pool, written or not: when a pipe stops on an
 * error, the chunks still queued in it are dropped by the streams.
 */
export function pipeStream(
  src: Source,
  dst: Pick<Duplex, "write" | "closeWrite">,
  onBytes?: (n: number) => void,
): Promise<void> {
  const out = new Set<Uint8Array>();
  return src.readable(out).pipeTo(sink(dst, onBytes, out)).finally(() => {
    for (const chunk of out) giveBack(chunk);
    out.clear();
  });
}

/** Bytes relayed each way; one object may count for many pairs. */
export interface Totals {
  aToB: number;
  bToA: number;
}

/**
 * One direction of a pair: reads `src` and writes every byte to `dst`.
 * Callbacks, not an async loop, and nothing allocated per idle direction but
 * its pending read: it first drains what the source's watch kept, then reads
 * the connection itself into a small buffer that grows into pooled large
 * ones while data streams.
 */
class Pump {
  #pair: Pair;
  #dst: Duplex;
  #aToB: boolean;
  #conn: Pick<ByteStream, "read">;
  #held: Handover | null;
  #small: Uint8Array | null = null;
  #large = false;
  #buf: Uint8Array | null = null;
  #off = 0;

  constructor(pair: Pair, src: Source, dst: Duplex, aToB: boolean) {
    this.#pair = pair;
    this.#dst = dst;
    this.#aToB = aToB;
    this.#conn = src.conn;
    this.#held = src.handOver();
  }

  /** Reads the next chunk: what the watch kept first, then the connection. */
  next(): void {
    const held = this.#held;
    if (held) {
      if (held.queue.length) return this.#chunk(held.queue.shift()!);
      if (held.inflight) {
        const p = held.inflight;
        held.inflight = null;
        return void p.then((c) => this.#chunk(c), this.#fail);
      }
      this.#small = held.small;
      this.#large = held.large;
      this.#held = null;
    }
    const buf = this.#buf = this.#large
      ? takeLarge()
      : (this.#small ??= new Uint8Array(SMALL_BUFFER));
    this.#conn.read(buf).then(this.#onRead, this.#fail);
  }

  #onRead = (n: number | null): void => {
    const buf = this.#buf!;
    if (n === null) {
      giveBack(buf);
      this.#buf = null;
      return this.#chunk(null);
    }
    // a full read: data streams, read large next; a short one: it paused,
    // so an idle direction waits on the small buffer, not a large one
    this.#large = n === buf.length;
    this.#chunk(buf.subarray(0, n));
  };

  #chunk(chunk: Chunk): void {
    if (chunk === null) return this.#pair.ended(this.#dst);
    this.#buf = chunk;
    this.#off = 0;
    this.#write();
  }

  #write(): void {
    const c = this.#buf!, off = this.#off;
    this.#dst.write(off ? c.subarray(off) : c).then(
      this.#onWritten,
      this.#fail,
    );
  }

  #onWritten = (n: number): void => {
    const chunk = this.#buf!;
    this.#off += n;
    if (this.#off < chunk.length) return this.#write();
    this.#pair.count(this.#aToB, chunk.length);
    giveBack(chunk);
    this.#buf = null;
    this.next();
  };

  /** A read or write failed: the buffer goes back, and the pair closes. */
  #fail = (): void => {
    if (this.#buf) giveBack(this.#buf);
    this.#buf = null;
    this.#pair.close();
  };
}

/**
 * A pair being relayed: both directions, and the end when both have ended
 * (each end carried as a half-close) or either failed.
 */
export class Pair {
  /** What the owner calls the pair (a name, for logs). */
  readonly tag: string;
  readonly #a: Duplex;
  readonly #b: Duplex;
  readonly #totals?: Totals;
  readonly #onEnd: (pair: Pair) => void;
  /** Bytes relayed from `a` to `b`, and back. */
  aToB = 0;
  bToA = 0;
  #open = 2;
  #closed = false;

  constructor(
    a: Duplex,
    b: Duplex,
    totals: Totals | undefined,
    onEnd: (pair: Pair) => void,
    tag = "",
  ) {
    this.#a = a;
    this.#b = b;
    this.#totals = totals;
    this.#onEnd = onEnd;
    this.tag = tag;
  }

  /** Counts bytes relayed. */
  count(aToB: boolean, n: number): void {
    if (aToB) {
      this.aToB += n;
      if (this.#totals) this.#totals.aToB += n;
    } else {
      this.bToA += n;
      if (this.#totals) this.#totals.bToA += n;
    }
  }

  /**
   * One direction ended: half-close its destination (unless `dst` is left
   * out: done already), or close both if it was the last.
   */
  ended(dst?: Duplex): void {
    if (this.#closed) return;
    if (--this.#open === 0) return this.close();
    dst?.closeWrite().catch(() => {}); // a peer gone already finds out reading
  }

  /** A direction failed: close both. */
  fail = (): void => this.close();

  /** Closes both connections (once) and reports the end. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of [this.#a, this.#b]) {
      try {
        c.close();
      } catch {
        // closed already
      }
    }
    this.#onEnd(this);
  }
}

/** How {@linkcode pipePair} moves bytes (see the module doc). */
export type DataPath = "loop" | "streams";

/**
 * Starts copying bytes both ways between `a` and `b` (see {@linkcode Pair});
 * `onEnd` is called once both connections are closed.
 */
export function relayPair(
  a: Duplex,
  aSource: Source,
  b: Duplex,
  bSource: Source,
  options: {
    totals?: Totals;
    path?: DataPath;
    tag?: string;
    onEnd: (pair: Pair) => void;
  },
): Pair {
  const pair = new Pair(a, b, options.totals, options.onEnd, options.tag);
  if (options.path === "streams") {
    const pipe = (src: Source, dst: Duplex, aToB: boolean) =>
      pipeStream(src, dst, (n) => pair.count(aToB, n)).then(
        () => pair.ended(),
        pair.fail,
      );
    pipe(aSource, b, true);
    pipe(bSource, a, false);
    return pair;
  }
  new Pump(pair, aSource, b, true).next();
  new Pump(pair, bSource, a, false).next();
  return pair;
}

/**
 * Copies bytes both ways between `a` and `b` until both directions have ended
 * (each end carried as a half-close to the other side) or either side fails;
 * then closes both. Never rejects.
 */
export function pipePair(
  a: Duplex,
  aSource: Source,
  b: Duplex,
  bSource: Source,
  totals?: Totals,
  path: DataPath = "loop",
): Promise<void> {
  return new Promise((resolve) =>
    void relayPair(a, aSource, b, bSource, {
      totals,
      path,
      onEnd: () => resolve(),
    })
  );
}
