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

/** Runs `task` over 0..n-1, 64 at a time. */
async function each(n: number, task: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (next < n) await task(next++);
  }));
}

function rssKb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? -1);
}

/**
 * Opens `pairs` pairs through the relay `pid` listening on `serverPort` and
 * `clientPort`, one 16-byte echo on each, lets them idle `idleMs`, and
 * returns the relay's RSS growth per pair in KB.
 */
export async function idleKbPerPair(
  pid: number,
  serverPort: number,
  clientPort: number,
  pairs: number,
  idleMs = 1000,
): Promise<string> {
  const servers: Deno.Conn[] = [], clients: Deno.Conn[] = [];
  const open = (port: number) => Deno.connect({ hostname: "127.0.0.1", port });
  const rss0 = rssKb(pid);
  try {
    await each(pairs, async (i) => {
      const s = servers[i] = await open(serverPort);
      await expect(s, "SERVER");
      await writeAll(s, encoder.encode("CONNECT\nbench\n"));
    });
    await each(pairs, async (i) => {
      const c = clients[i] = await open(clientPort);
      await expect(c, "CLIENT");
      await writeAll(c, encoder.encode("bench\n"));
      await expect(c, "CONNECTED");
    });
    await each(pairs, (i) => expect(servers[i], "CONNECTED"));
    const ping = encoder.encode("0123456789abcdef");
    await each(pairs, (i) => writeAll(clients[i], ping));
    await each(pairs, async (i) => {
      await writeAll(servers[i], await exactly(servers[i], 16));
    });
    await each(pairs, async (i) => void await exactly(clients[i], 16));
    await new Promise((r) => setTimeout(r, idleMs));
    return ((rssKb(pid) - rss0) / pairs).toFixed(1);
  } catch (e) {
    return `failed (${(e as Error).message})`;
  } finally {
    for (const c of [...servers, ...clients]) c?.close();
  }
}
