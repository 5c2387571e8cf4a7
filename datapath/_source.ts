/**
 * Reading a connection for the relay: a {@linkcode Source} reads into a
 * small buffer of its own while the peer is quiet and into large pooled
 * buffers while data streams, can watch a waiting connection (a parked
 * server, a waiting client) to learn at once that it died, and hands what it
 * read meanwhile to the data phase in order (`_pipe.ts`). What a watch keeps
 * is copied out of the pooled buffers, so that a connection given up while
 * it waits holds none: every pooled buffer goes back once its chunk is
 * written, or its read or write failed.
 *
 * @module
 */

import type { ByteStream } from "../protocol/_wire.ts";

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
/** The large buffers taken and not given back. */
const taken = new Set<ArrayBufferLike>();

/** Large buffers taken and not given back (read into, or being written). */
export function largeBuffersInUse(): number {
  return taken.size;
}

/** A pooled large buffer (or a medium one once the budget is spent). */
export function takeLarge(): Uint8Array {
  let buf = pool.pop();
  if (!buf) {
    if (taken.size >= POOL_BUDGET) return new Uint8Array(MEDIUM_BUFFER);
    buf = new Uint8Array(LARGE_BUFFER);
  }
  taken.add(buf.buffer);
  return buf;
}

/**
 * Returns the buffer under `chunk` to the pool if it is a large one taken
 * with {@linkcode takeLarge}; a chunk of any other buffer, or of one given
 * back already, is left alone. Each taken buffer is given back once: after
 * that it may be someone else's.
 */
export function giveBack(chunk: Uint8Array): void {
  if (!taken.delete(chunk.buffer)) return;
  if (pool.length < POOL_KEEP) pool.push(new Uint8Array(chunk.buffer));
}

/** A chunk read, or `null` at the end of the stream. */
export type Chunk = Uint8Array | null;

/** What a watch does with what it reads (see {@linkcode Source.watch}). */
interface Watch {
  onEnd: () => void;
  endIsDeath: boolean;
  intercept?: (chunk: Uint8Array) => boolean;
  cap: number;
}

/** What a {@linkcode Source} hands to the data phase. */
export interface Handover {
  /** Chunks read while watching, in order (`null`: the end). */
  queue: Chunk[];
  /** The read under way, if any. */
  inflight: Promise<Chunk> | null;
  /** The small buffer, if one was made. */
  small: Uint8Array | null;
  /** Whether data was streaming (large buffers). */
  large: boolean;
}

/**
 * Reads a connection in chunks. It can watch a connection that waits (a
 * parked server, a client waiting for one) to learn at once that it died,
 * keeping what arrives meanwhile, and later hand all of that, and the read
 * still under way, to the data phase in order.
 */
export class Source {
  readonly conn: Pick<ByteStream, "read">;
  #queue: Chunk[] = [];
  #queued = 0;
  #inflight: Promise<Chunk> | null = null;
  #watch: Watch | null = null;
  #small: Uint8Array | null = null;
  #large = false;
  /** The end of the stream is in the queue: nothing more to read. */
  #ended = false;

  /** `prefix`: bytes already read past the handshake. */
  constructor(conn: Pick<ByteStream, "read">, prefix?: Uint8Array) {
    this.conn = conn;
    if (prefix?.length) this.#queue.push(prefix);
  }

  /**
   * Reads a chunk; with `copy` (a watch's read, whose chunk waits in the
   * queue) a read into a pooled buffer is copied out and the buffer given
   * back at once, so that no waiting connection holds one.
   */
  #readConn(copy = false): Promise<Chunk> {
    if (this.#large) {
      const buf = takeLarge();
      return this.conn.read(buf).then((n) => {
        this.#large = n === buf.length; // a short read: the data paused
        if (n !== null && n >= SMALL_BUFFER && !copy) {
          return buf.subarray(0, n);
        }
        const chunk = n === null ? null : buf.slice(0, n);
        giveBack(buf);
        return chunk;
      }, (e) => {
        giveBack(buf);
        throw e;
      });
    }
    const small = this.#small ??= new Uint8Array(SMALL_BUFFER);
    return this.conn.read(small).then((n) => {
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
   * `cap` bytes kept. Watching again replaces the watch; a read under way
   * goes on under the new one (a second read would take bytes from it).
   */
  watch(
    onEnd: () => void,
    endIsDeath: boolean,
    intercept?: (chunk: Uint8Array) => boolean,
    cap = 64 * 1024,
  ): void {
    this.#watch = { onEnd, endIsDeath, intercept, cap };
    if (!this.#inflight) this.#step();
  }

  /** Stops any watch and drops what it kept: the connection is given up. */
  stop(): void {
    this.#watch = null;
    this.#inflight = null;
    this.#queue = [];
    this.#queued = 0;
  }

  // The callbacks hold only `this` and the read: once the data phase takes
  // over, an idle pair's pending read keeps nothing of the watch alive.
  #step(): void {
    const w = this.#watch;
    if (!w || this.#ended || this.#queued >= w.cap) return;
    const p = this.#readConn(true);
    this.#inflight = p;
    p.then((chunk) => this.#watched(p, chunk), () => {
      if (this.#inflight === p) this.#watch?.onEnd();
    });
  }

  #watched(p: Promise<Chunk>, chunk: Chunk): void {
    const w = this.#watch;
    if (this.#inflight !== p || !w) return; // the data phase took it over
    this.#inflight = null;
    if (chunk === null && w.endIsDeath) return w.onEnd();
    if (chunk && w.intercept?.(chunk)) return this.#step();
    this.#queue.push(chunk);
    if (chunk === null) return void (this.#ended = true);
    this.#queued += chunk.length;
    this.#step();
  }

  /** Stops any watch and hands what it holds to the data phase. */
  handOver(): Handover {
    this.#watch = null;
    const inflight = this.#inflight;
    this.#inflight = null;
    return {
      queue: this.#queue,
      inflight,
      small: this.#small,
      large: this.#large,
    };
  }

  /** The next chunk, or `null` at end of stream. Stops any watch. */
  read(): Promise<Chunk> {
    this.#watch = null;
    if (this.#queue.length) return Promise.resolve(this.#queue.shift()!);
    const p = this.#inflight;
    if (p) {
      this.#inflight = null;
      return p;
    }
    return this.#readConn();
  }

  /**
   * This source as a stream that pulls one chunk per demand; each chunk
   * handed out is added to `out` (see `pipeStream` in `_pipe.ts`).
   */
  readable(out?: Set<Uint8Array>): ReadableStream<Uint8Array> {
    let cancelled = false;
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        const chunk = await this.read();
        // a read that lands after the pipe stopped: nobody will write it
        if (cancelled) return void (chunk && giveBack(chunk));
        if (chunk === null) return controller.close();
        out?.add(chunk);
        controller.enqueue(chunk);
      },
      cancel: () => void (cancelled = true),
    }, { highWaterMark: 0 });
  }
}
