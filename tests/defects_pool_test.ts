// Pooled 1 MiB buffers come back on every path (issue 8, item 2): what a
// waiting connection sends waits in copies, so that a parked server, a
// released or dropped one, a client whose wait ends, and a pair that fails
// with data left from the wait hold no pooled buffer.

import { strictEqual } from "node:assert/strict";
import {
  ask,
  firstDifference,
  park,
  randomBytes,
  Raw,
  readExactly,
  reserve,
  reset,
  resettable,
  startRelay,
  text,
  until,
} from "./_helpers.ts";
import { slowRelay } from "./_slowlink.ts";
import { largeBuffersInUse } from "../datapath/_source.ts";
import { writeAll } from "../protocol/_wire.ts";

/** 1,100 bytes a time, a few ms apart: the relay reads each on its own (512, then 588 into a large buffer). */
async function segments(conn: Deno.Conn, data: Uint8Array) {
  for (let off = 0; off < data.length; off += 1100) {
    await writeAll(conn, data.subarray(off, off + 1100));
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 50));
}

Deno.test("a parked v1 server sending 1.1 KB segments holds no pooled buffer, and the client gets every byte", async () => {
  await using relay = startRelay();
  const before = largeBuffersInUse();
  using s = await park(relay, "n");
  await until(() => relay.stats().parked.n === 1, "the server to park");
  const data = randomBytes(20 * 1100, 11);
  await segments(s.conn, data);
  strictEqual(largeBuffersInUse(), before, "pooled buffers held while parked");
  using c = await ask(relay, "n");
  strictEqual(await c.line(), "CONNECTED");
  strictEqual(await s.line(), "CONNECTED");
  const got = await readExactly(c.conn, data.length);
  strictEqual(firstDifference(got, data), -1);
});

Deno.test("pooled buffers come back when a parked server that sent data closes, is released, or is shut down", async () => {
  const before = largeBuffersInUse();
  {
    await using relay = startRelay();
    const closing = await park(relay, "a");
    await until(() => relay.stats().parked.a === 1, "a to park");
    await segments(closing.conn, randomBytes(3300, 12));
    closing.close();
    await until(() => relay.stats().connections === 0, "a to be dropped");
    using released = await park(relay, "b");
    await until(() => relay.stats().parked.b === 1, "b to park");
    await segments(released.conn, randomBytes(3300, 13));
    using r = await Raw.open(relay.serverAddr.port);
    await r.send("RELEASE\nb\n");
    strictEqual(await r.text(), "SERVER\nOK\n");
    await until(() => relay.stats().connections === 0, "b to be dropped");
    using kept = await park(relay, "c");
    await until(() => relay.stats().parked.c === 1, "c to park");
    await segments(kept.conn, randomBytes(3300, 14));
  }
  strictEqual(largeBuffersInUse(), before);
});

Deno.test("pooled buffers come back when a client that sent data while it waited hears OFFLINE", async () => {
  await using relay = startRelay({ wait: 300 });
  const before = largeBuffersInUse();
  await reserve(relay, "n");
  using c = await ask(relay, "n");
  await until(() => relay.stats().waiting === 1, "the client to wait");
  await segments(c.conn, randomBytes(3300, 15));
  strictEqual(await c.line(), "OFFLINE");
  await until(() => relay.stats().connections === 0, "the client to go");
  strictEqual(largeBuffersInUse(), before);
});

Deno.test("pooled buffers come back when a pair fails while it still relays what the server sent while parked", async () => {
  // A slow link to the client: its first write of data waits until it has reset.
  let connected = false;
  const gate = Promise.withResolvers<void>(),
    writing = Promise.withResolvers<
      void
    >();
  await using relay = slowRelay({
    write(role, bytes) {
      if (role !== "client") return;
      if (text(bytes) === "CONNECTED\n") return void (connected = true);
      if (!connected) return;
      writing.resolve();
      return gate.promise;
    },
  });
  const before = largeBuffersInUse();
  using s = await Raw.open(relay.serverPort);
  strictEqual(await s.line(), "SERVER");
  await s.send("CONNECT\nn\n");
  await until(() => relay.engine.stats().parked.n === 1, "the server to park");
  await segments(s.conn, randomBytes(20 * 1100, 16));
  const c = await resettable(relay.clientPort, "n\n");
  await writing.promise;
  await reset(c);
  gate.resolve();
  await until(() => relay.engine.stats().activePairs === 0, "the pair to fail");
  strictEqual(largeBuffersInUse(), before);
});
