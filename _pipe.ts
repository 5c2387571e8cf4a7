/**
 * The data path: copying bytes both ways between two connections, carrying
 * each end of stream as a half-close (`closeWrite()`).
 *
 * Deno's built-in `conn.readable`/`conn.writable` close the whole socket at
 * end of stream (so they cannot carry a half-close) and hold a 64 KiB buffer
 * per pending read. Here:
 * - a {@linkcode Source} reads into a small buffer of its own while the peer
 *   is quiet and into large pooled buffers while data streams (a full small
 *   read moves it up, a short large read moves it down);
 * - the default path is a read/write loop per direction written as promise
 *   callbacks (no async frame waits per idle direction), which writes every
 *   byte (a `write` may take part of a buffer) and gives large buffers back;
 * - the `"streams"` path is `readable.pipeTo(writable)` over streams of our
 *   own with the same buffers, kept to compare in the benchmark: its stream
 *   objects cost more memory per idle pair and it carries less.
 *
 * @module
 */

import { type ByteStream, writeAll } from "./_protocol.ts";

/** A two-way connection: `Deno.TcpConn`, `Deno.TlsConn`, or stdio joined. */
export interface Duplex extends ByteStream {
  closeWrite(): Promise<void>;
  close(): void;
}

/** Bytes a quiet direction keeps waiting in its read. */
export const SMALL_BUFFER = 512;
/** Bytes of a pooled buffer used while data streams. */
export const LARGE_BUFFER = 1024 * 1024;
/** Bytes of a buffer used while data streams once the pool's budget is spent. */
const MEDIUM_BUFFER = 64 * 1024;
/** Large buffers alive at once (256 MiB), pooled or in use. */
const POOL_BUDGET = 256;
/** Large buffers kept in the pool while unused. */
const POOL_KEEP = 16;
const pool: Uint8Array[] = [];
let largeAlive = 0;

function takeLarge(): Uint8Array {
  const buf = pool.pop();
  if (buf) return buf;
  if (largeAlive >= POOL_BUDGET) return new Uint8Array(MEDIUM_BUFFER);
  largeAlive++;
  return new Uint8Array(LARGE_BUFFER);
}

/** Returns the buffer under `chunk` to the pool if it is a large one. */
function giveBack(chunk: Uint8Array): void {
  if (chunk.buffer.byteLength !== LARGE_BUFFER) return;
  if (pool.length < POOL_KEEP) pool.push(new Uint8Array(chunk.buffer));
  else largeAlive--;
}

type Chunk = Uint8Array | null;

/**
 * Reads a connection in chunks. It can watch a connection that waits (a
 * parked server, a client waiting for one) to learn at once that it died,
 * keeping what arrives meanwhile, and later hand all of that, and the read
 * still under way, to the data phase in order.
 */
export class Source {
  #r: Pick<ByteStream, "read">;
  #queue: Chunk[] = [];
  #queued = 0;
  #inflight: Promise<Chunk> | null = null;
  #watching = false;
  #small: Uint8Array | null = null;
  #large = false;

  /** `prefix`: bytes already read past the handshake. */
  constructor(r: Pick<ByteStream, "read">, prefix?: Uint8Array) {
    this.#r = r;
    if (prefix?.length) this.#queue.push(prefix);
  }

  #readConn(): Promise<Chunk> {
    if (this.#large) {
      const buf = takeLarge();
      return this.#r.read(buf).then((n) => {
        if (n !== null && n >= SMALL_BUFFER) return buf.subarray(0, n);
        this.#large = false;
        const chunk = n === null ? null : buf.slice(0, n);
        giveBack(buf);
        return chunk;
      }, (e) => {
        giveBack(buf);
        throw e;
      });
    }
    const small = this.#small ??= new Uint8Array(SMALL_BUFFER);
    return this.#r.read(small).then((n) => {
      if (n === null) return null;
      if (n === small.length) this.#large = true;
      return small.slice(0, n);
    });
  }

  /**
   * Starts watching: `onEnd` is called once if the connection resets, or ends
   * when `endIsDeath` (a parked server that closes is gone; a client that
   * half-closes after its request is not). `intercept` may take a chunk
   * (protocol lines while parked) instead of keeping it. Stops reading after
   * `cap` bytes kept.
   */
  watch(
    onEnd: () => void,
    endIsDeath: boolean,
    intercept?: (chunk: Uint8Array) => boolean,
    cap = 64 * 1024,
  ): void {
    this.#watching = true;
    const step = (): void => {
      if (!this.#watching || this.#queued >= cap) return;
      const p = this.#readConn();
      this.#inflight = p;
      p.then((chunk) => {
        if (this.#inflight !== p) return; // the data phase took it over
        this.#inflight = null;
        if (chunk === null && endIsDeath) return onEnd();
        if (chunk && intercept?.(chunk)) return step();
        this.#queue.push(chunk);
        if (chunk === null) return;
        this.#queued += chunk.length;
        step();
      }, () => {
        if (this.#inflight === p) onEnd();
      });
    };
    step();
  }

  /** The next chunk, or `null` at end of stream. Stops any watch. */
  read(): Promise<Chunk> {
    this.#watching = false;
    if (this.#queue.length) return Promise.resolve(this.#queue.shift()!);
    const p = this.#inflight;
    if (p) {
      this.#inflight = null;
      return p;
    }
    return this.#readConn();
  }

  /** This source as a stream that pulls one chunk per demand. */
  readable(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        const chunk = await this.read();
        if (chunk === null) controller.close();
        else controller.enqueue(chunk);
      },
    }, { highWaterMark: 0 });
  }
}

/**
 * A stream that writes every chunk fully to `w`, counts the bytes with
 * `onBytes`, and half-closes `w` (`closeWrite()`) when the source ends.
 */
export function sink(
  w: Pick<Duplex, "write" | "closeWrite">,
  onBytes?: (n: number) => void,
): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>({
    async write(chunk) {
      await writeAll(w, chunk);
      onBytes?.(chunk.length);
      giveBack(chunk);
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
 * Copies `src` to `dst` until the end of `src`, then calls `end(false)`
 * (after `dst.closeWrite()` unless `last()` says both directions are done);
 * on failure calls `end(true)`. Promise callbacks, not an async loop: an idle
 * direction holds one pending read and nothing else.
 */
function pump(
  src: Source,
  dst: Pick<Duplex, "write" | "closeWrite">,
  onBytes: ((n: number) => void) | undefined,
  end: (failed: boolean) => void,
  last: () => boolean,
): void {
  const fail = () => end(true);
  const ended = () => end(false);
  const next = (): void => void src.read().then(onChunk, fail);
  const onChunk = (chunk: Chunk): void => {
    if (chunk === null) {
      if (last()) return ended();
      return void dst.closeWrite().then(ended, ended);
    }
    write(chunk, 0);
  };
  const write = (chunk: Uint8Array, off: number): void =>
    void dst.write(off ? chunk.subarray(off) : chunk).then((n) => {
      if (off + n < chunk.length) return write(chunk, off + n);
      onBytes?.(chunk.length);
      giveBack(chunk);
      next();
    }, fail);
  next();
}

/** How {@linkcode pipePair} moves bytes (see the module doc). */
export type DataPath = "loop" | "streams";

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
  count?: { aToB?: (n: number) => void; bToA?: (n: number) => void },
  path: DataPath = "loop",
): Promise<void> {
  return new Promise((resolve) => {
    let open = 2, closed = false;
    const closeBoth = () => {
      if (closed) return;
      closed = true;
      for (const c of [a, b]) {
        try {
          c.close();
        } catch {
          // closed already
        }
      }
      resolve();
    };
    const end = (failed: boolean) => {
      if (failed || --open === 0) closeBoth();
    };
    if (path === "streams") {
      const pipe = (src: Source, dst: Duplex, onBytes?: (n: number) => void) =>
        src.readable().pipeTo(sink(dst, onBytes)).then(
          () => end(false),
          () => end(true),
        );
      pipe(aSource, b, count?.aToB);
      pipe(bSource, a, count?.bToA);
      return;
    }
    const last = () => open === 1;
    pump(aSource, b, count?.aToB, end, last);
    pump(bSource, a, count?.bToA, end, last);
  });
}
