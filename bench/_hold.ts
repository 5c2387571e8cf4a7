/**
 * A measure the C driver does not take: the relay's RSS per pair once pairs
 * have been idle for a while (the driver reads it the moment the pairs are
 * open, and right after their echoes). The bench process opens the pairs
 * itself over the seed protocol, one echo on each, waits, reads the relay's
 * RSS from `/proc`, and closes them.
 *
 * @module
 */

import { readLineExact, writeAll } from "../protocol/_wire.ts";
import { rssKb } from "./_driver.ts";

const encoder = new TextEncoder();

async function exactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  for (let got = 0; got < n;) {
    const r = await conn.read(buf.subarray(got));
    if (r === null) throw new Error("early end");
    got += r;
  }
  return buf;
}

async function expect(conn: Deno.Conn, want: string): Promise<void> {
  const got = await readLineExact(conn);
  if (got !== want) throw new Error(`expected ${want}, got ${got}`);
}

/** Runs `task` over 0..n-1, 64 at a time, until `stopped()`. */
async function each(
  n: number,
  stopped: () => boolean,
  task: (i: number) => Promise<void>,
) {
  let next = 0;
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (next < n && !stopped()) await task(next++);
  }));
}

/** RSS of `pids` together, in KB. */
function totalRss(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + rssKb(pid), 0);
}

/** What {@linkcode idleKbPerPair} needs. */
export interface HoldOptions {
  /** The relay's processes (their RSS together). */
  pids: number[];
  serverPort: number;
  clientPort: number;
  /** Pairs held open at once. */
  pairs: number;
  /** How long they idle before RSS is read, in ms. Default `1000`. */
  idleMs?: number;
  /** Given up after this, in ms. Default `120000`. */
  limitMs?: number;
}

/**
 * Opens `pairs` pairs through the relay, one 16-byte echo on each, lets them
 * idle `idleMs`, and resolves with the relay's RSS growth per pair in KB;
 * rejects if a pair fails or the whole takes longer than `limitMs`.
 */
export async function idleKbPerPair(options: HoldOptions): Promise<number> {
  const { pids, serverPort, clientPort, pairs } = options;
  const servers: Deno.Conn[] = [], clients: Deno.Conn[] = [];
  const all = new Set<Deno.Conn>();
  let stopped = false;
  const stop = () => {
    stopped = true;
    // closing every connection ends the reads still pending
    for (const c of all) c.close();
    all.clear();
  };
  const open = async (port: number) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    if (stopped) {
      conn.close();
      throw new Error("stopped");
    }
    all.add(conn);
    return conn;
  };
  const rss0 = totalRss(pids);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error("stalled"));
      stop();
    }, options.limitMs ?? 120_000);
  });
  const over = () => stopped;
  const hold = async () => {
    await each(pairs, over, async (i) => {
      const s = servers[i] = await open(serverPort);
      await expect(s, "SERVER");
      await writeAll(s, encoder.encode("CONNECT\nbench\n"));
    });
    await each(pairs, over, async (i) => {
      const c = clients[i] = await open(clientPort);
      await expect(c, "CLIENT");
      await writeAll(c, encoder.encode("bench\n"));
      await expect(c, "CONNECTED");
    });
    await each(pairs, over, (i) => expect(servers[i], "CONNECTED"));
    const ping = encoder.encode("0123456789abcdef");
    await each(pairs, over, (i) => writeAll(clients[i], ping));
    await each(pairs, over, async (i) => {
      await writeAll(servers[i], await exactly(servers[i], 16));
    });
    await each(pairs, over, async (i) => void await exactly(clients[i], 16));
    await new Promise((r) => setTimeout(r, options.idleMs ?? 1000));
    if (stopped) throw new Error("stalled");
    return (totalRss(pids) - rss0) / pairs;
  };
  const work = hold();
  try {
    return await Promise.race([work, limit]);
  } finally {
    clearTimeout(timer);
    stop();
    await work.catch(() => {});
  }
}
