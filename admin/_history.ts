/**
 * Throughput over the last minutes, for the status page's chart: every
 * second, the bytes the relay carried each way since the last sample (read
 * from `stats()`, so live pairs count as their bytes move) and the pairs
 * active then, in a ring of fixed size.
 *
 * @module
 */

/** What one sample reads from the relay. */
export interface Reading {
  /** Bytes relayed since start, client to server. */
  clientToServer: number;
  /** Bytes relayed since start, server to client. */
  serverToClient: number;
  /** Pairs active now. */
  activePairs: number;
}

/** The last minutes, oldest sample first: one value per step. */
export interface Series {
  /** Milliseconds between two samples. */
  step: number;
  /** When the newest sample was taken (ms since the epoch); 0 before the first. */
  end: number;
  /** Bytes per second, client to server. */
  clientToServer: number[];
  /** Bytes per second, server to client. */
  serverToClient: number[];
  /** Pairs active at each sample. */
  activePairs: number[];
}

/** Samples `read()` every `step` ms, keeping the last `size` samples. */
export class History implements Disposable {
  readonly #read: () => Reading;
  readonly #step: number;
  readonly #size: number;
  readonly #up: Float64Array;
  readonly #down: Float64Array;
  readonly #pairs: Float64Array;
  /** Samples taken so far (the ring's write position is `#count % size`). */
  #count = 0;
  #end = 0;
  #last: Reading;
  #lastAt: number;
  #timer: number;

  /** Starts sampling at once; 600 samples of 1 s: the last 10 minutes. */
  constructor(read: () => Reading, step = 1000, size = 600) {
    this.#read = read;
    this.#step = step;
    this.#size = size;
    this.#up = new Float64Array(size);
    this.#down = new Float64Array(size);
    this.#pairs = new Float64Array(size);
    this.#last = read();
    this.#lastAt = performance.now();
    // a number at run time (the types may be Node's, for prom-client)
    this.#timer = setInterval(() => this.sample(), step) as unknown as number;
    Deno.unrefTimer(this.#timer);
  }

  /** Takes one sample now (the timer calls it every step). */
  sample(): void {
    const now = performance.now(), reading = this.#read();
    const seconds = Math.max(now - this.#lastAt, 1) / 1000;
    const i = this.#count % this.#size;
    this.#up[i] = (reading.clientToServer - this.#last.clientToServer) /
      seconds;
    this.#down[i] = (reading.serverToClient - this.#last.serverToClient) /
      seconds;
    this.#pairs[i] = reading.activePairs;
    this.#count++;
    this.#end = Date.now();
    this.#last = reading;
    this.#lastAt = now;
  }

  /** The samples kept, oldest first. */
  series(): Series {
    const n = Math.min(this.#count, this.#size);
    const start = this.#count - n;
    const pick = (ring: Float64Array) =>
      Array.from(
        { length: n },
        (_, k) => Math.round(ring[(start + k) % this.#size]),
      );
    return {
      step: this.#step,
      end: this.#end,
      clientToServer: pick(this.#up),
      serverToClient: pick(this.#down),
      activePairs: pick(this.#pairs),
    };
  }

  /** Stops sampling. */
  [Symbol.dispose](): void {
    clearInterval(this.#timer);
  }
}
