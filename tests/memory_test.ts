// What the relay holds while pairs idle, and what it gives back once they are
// gone. Amounts of memory are the benchmark's business (deno task bench);
// these tests check the behaviour behind them.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import {
  ask,
  inParallel,
  pair,
  randomBytes,
  Raw,
  readExactly,
  reset,
  resettable,
  startRelay,
  until,
} from "./_helpers.ts";
import { relayProc } from "./_proc.ts";
import { largeBuffersInUse } from "../datapath/_source.ts";
import { writeAll } from "../protocol/_wire.ts";
import { MIN_CHURN } from "../engine/_reclaim.ts";

for (const dataPath of ["loop", "streams"] as const) {
  Deno.test(`${dataPath} data path: after a burst, an idle pair waits on its small buffer, not a pooled 1 MiB one`, async () => {
    await using relay = startRelay({ dataPath });
    const { s, c } = await pair(relay);
    using _s = s, _c = c;
    const before = largeBuffersInUse();
    const burst = randomBytes(4_000_777, 3);
    const [got] = await Promise.all([
      readExactly(s.conn, burst.length),
      writeAll(c.conn, burst),
    ]);
    assertEquals(got.length, burst.length);
    // counted once written: the relay's next read is under way by then
    await until(
      () => relay.stats().bytes.clientToServer === burst.length,
      "the burst to be counted",
    );
    assertEquals(largeBuffersInUse(), before);
  });
}

for (const dataPath of ["loop", "streams"] as const) {
  Deno.test(`${dataPath} data path: a server reset while the relay writes to it gives the pooled buffers back`, async () => {
    await using relay = startRelay({ dataPath });
    const before = largeBuffersInUse();
    const server = await resettable(relay.serverAddr.port, "CONNECT\nn\n");
    server.pause(); // reads nothing: the relay's writes to it back up
    await until(() => relay.stats().parked.n === 1, "the server to park");
    using client = await ask(relay, "n");
    assertEquals(await client.line(), "CONNECTED");
    const writing = writeAll(client.conn, randomBytes(32 << 20, 5)).catch(
      () => {},
    );
    await until(() => largeBuffersInUse() > before, "a pooled buffer in use");
    await reset(server);
    await until(() => relay.stats().activePairs === 0, "the pair to close");
    client.close();
    await writing;
    assertEquals(largeBuffersInUse(), before);
  });
}

/** Opens `n` pairs under `name` on a relay process, one echo each, then closes them. */
async function burstOfPairs(
  ports: { serverPort: number; clientPort: number },
  n: number,
): Promise<void> {
  await inParallel(n, 50, async () => {
    using s = await Raw.open(ports.serverPort);
    await s.line();
    await s.send("CONNECT\nburst\n");
    using c = await Raw.open(ports.clientPort);
    await c.line();
    await c.send("burst\n");
    assertEquals(await c.line(), "CONNECTED");
    assertEquals(await s.line(), "CONNECTED");
    await c.send("x");
    assertEquals((await readExactly(s.conn, 1))[0], 120);
  });
}

Deno.test("the relay gives memory back once it is quiet after a burst of pairs closed", async () => {
  await using relay = await relayProc("--log-level=debug");
  await burstOfPairs(relay, MIN_CHURN / 4 + 10);
  await relay.proc.waitErr(/Gave memory back: RSS \d+ MB -> \d+ MB/);
});

Deno.test("--no-reclaim: the same burst leaves memory to V8's own schedule", async () => {
  await using relay = await relayProc("--log-level=debug", "--no-reclaim");
  await burstOfPairs(relay, MIN_CHURN / 4 + 10);
  await relay.proc.waitErr(/Closed "burst"/); // the pairs were relayed
  await new Promise((r) => setTimeout(r, 500)); // past the quiet spell
  ok(!/Gave memory back/.test(relay.proc.err), "memory was reclaimed");
});
