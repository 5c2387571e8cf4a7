// The relay's behaviours (issue 2, items 1-4 and 9, and backpressure), over
// real sockets against an in-process relay.

import {
  deepStrictEqual as assertEquals,
  ok,
  strictEqual,
} from "node:assert/strict";
import type net from "node:net";
import {
  ask,
  ends,
  firstDifference,
  healthyPairWorks,
  pair,
  park,
  parked,
  randomBytes,
  Raw,
  readAll,
  readExactly,
  reserve,
  reset,
  resettable,
  sendAndClose,
  startRelay,
  text,
  until,
} from "./_helpers.ts";

// 1. FIFO, dead parked conns dropped.

Deno.test("relay pairs the oldest parked server first", async () => {
  await using relay = startRelay();
  const servers: Raw[] = [];
  for (let i = 0; i < 3; i++) {
    servers.push(await park(relay, "n"));
    await parked(relay, i + 1);
  }
  for (let i = 0; i < 3; i++) {
    using c = await ask(relay, "n");
    strictEqual(await c.line(), "CONNECTED");
    await c.send(`client ${i}\n`);
  }
  const heard = [];
  for (const s of servers) {
    strictEqual(await s.line(), "CONNECTED");
    heard.push(await s.line());
    s.close();
  }
  assertEquals(heard, ["client 0", "client 1", "client 2"]);
});

for (const how of ["closes", "resets"] as const) {
  Deno.test(`a parked server that ${how} is dropped at once and never handed to a client`, async () => {
    await using relay = startRelay();
    const port = relay.serverAddr.port;
    const dead = how === "closes"
      ? await park(relay, "n")
      : await resettable(port, "CONNECT\nn\n");
    await parked(relay, 1);
    using live = await park(relay, "n");
    await parked(relay, 2);
    if (dead instanceof Raw) dead.close();
    else await reset(dead);
    await parked(relay, 1);
    using c = await ask(relay, "n");
    strictEqual(await c.line(), "CONNECTED");
    strictEqual(await live.line(), "CONNECTED");
    await c.send("to the live one\n");
    strictEqual(await live.line(), "to the live one");
  });
}

// 2. Waiting clients.

Deno.test("a client waiting for a reserved name is paired the moment a server parks", async () => {
  await using relay = startRelay({ wait: 10_000 });
  await reserve(relay, "n");
  using c = await ask(relay, "n");
  await until(() => relay.stats().waiting === 1, "the client to wait");
  using s = await park(relay, "n");
  strictEqual(await s.line(), "CONNECTED");
  strictEqual(await c.line(), "CONNECTED");
  strictEqual(relay.stats().waiting, 0);
  await s.send("hello\n");
  strictEqual(await c.line(), "hello");
});

Deno.test("a waiting client that resets is dropped, and an unknown name gets NOEXIST at once", async () => {
  await using relay = startRelay({ wait: 10_000 });
  await reserve(relay, "n");
  const c = await resettable(relay.clientAddr.port, "n\n");
  await until(() => relay.stats().waiting === 1, "the client to wait");
  await reset(c);
  await until(
    () => relay.stats().waiting === 0,
    "the reset client to be dropped",
  );
  using u = await ask(relay, "unknown");
  strictEqual(await u.text(), "NOEXIST\n");
  await healthyPairWorks(relay);
});

// 3. Half-close each way, resets.

for (const first of ["client", "server"] as const) {
  Deno.test(`a ${first}'s half-close reaches its peer, whose answer still comes back`, async () => {
    await using relay = startRelay();
    const { s, c } = await pair(relay);
    using _s = s, _c = c;
    const [closer, peer] = first === "client" ? [c, s] : [s, c];
    await closer.send("request");
    await closer.conn.closeWrite();
    strictEqual(await peer.text(), "request");
    await peer.send("response");
    await peer.conn.closeWrite();
    strictEqual(await closer.text(), "response");
    await until(() => relay.stats().connections === 0, "the pair to end");
  });
}

for (const side of ["client", "server"] as const) {
  Deno.test(`a ${side} that resets during the data phase gets the other side closed`, async () => {
    await using relay = startRelay();
    let other: Raw, resetter: net.Socket;
    if (side === "client") {
      other = await park(relay, "n");
      await parked(relay, 1);
      resetter = await resettable(relay.clientAddr.port, "n\n");
    } else {
      resetter = await resettable(relay.serverAddr.port, "CONNECT\nn\n");
      await parked(relay, 1);
      other = await ask(relay, "n");
    }
    using _other = other;
    strictEqual(await other.line(), "CONNECTED");
    await reset(resetter);
    ok(["eof", "error"].includes(await ends(other.conn)));
    await until(() => relay.stats().connections === 0, "the pair to close");
  });
}

Deno.test("a client that closes fully: the server reads EOF and its next writes end the pair", async () => {
  await using relay = startRelay();
  const { s, c } = await pair(relay);
  using _s = s;
  c.close();
  strictEqual(text(await readAll(s.conn)), "");
  // The relay cannot tell a close from a half-close until it writes to it.
  for (let i = 0; i < 100 && relay.stats().activePairs > 0; i++) {
    await s.send("still there?").catch(() => {});
    await new Promise((r) => setTimeout(r, 10));
  }
  await until(() => relay.stats().connections === 0, "the pair to close");
});

// 4. No byte lost.

Deno.test("data pipelined behind the client's name line reaches the server", async () => {
  await using relay = startRelay();
  using s = await park(relay, "n");
  await parked(relay, 1);
  using c = await Raw.open(relay.clientAddr.port);
  await c.send("n\nDATA right behind");
  strictEqual(await c.line(), "CLIENT");
  strictEqual(await c.line(), "CONNECTED");
  strictEqual(await s.line(), "CONNECTED");
  strictEqual(text(await readExactly(s.conn, 16)), "DATA right behin");
});

Deno.test("data pipelined behind the server's CONNECT reaches the client (server speaks first)", async () => {
  await using relay = startRelay();
  using s = await Raw.open(relay.serverAddr.port);
  await s.send("CONNECT\nn\nSSH-2.0-test\r\n");
  await parked(relay, 1);
  using c = await ask(relay, "n");
  strictEqual(await c.line(), "CONNECTED");
  strictEqual(await c.line(), "SSH-2.0-test");
  strictEqual(await s.line(), "SERVER");
  strictEqual(await s.line(), "CONNECTED");
});

Deno.test("a waiting client that half-closes right after its request still gets the response", async () => {
  await using relay = startRelay({ wait: 10_000 });
  await reserve(relay, "n");
  using c = await Raw.open(relay.clientAddr.port);
  await c.send("n\nGET / HTTP/1.0\r\n\r\n");
  await c.conn.closeWrite();
  await until(() => relay.stats().waiting === 1, "the client to wait");
  using s = await park(relay, "n");
  strictEqual(await s.line(), "CONNECTED");
  strictEqual(text(await readAll(s.conn)), "GET / HTTP/1.0\r\n\r\n");
  await s.send("HTTP/1.0 200 OK\r\n");
  await s.conn.closeWrite();
  strictEqual(await c.text(), "CLIENT\nCONNECTED\nHTTP/1.0 200 OK\r\n");
});

Deno.test("32 MiB each way at once arrive byte-exact", async () => {
  await using relay = startRelay();
  const { s, c } = await pair(relay);
  using _s = s, _c = c;
  const size = 32 * 1024 * 1024;
  const up = randomBytes(size, 11), down = randomBytes(size, 22);
  const send = async (raw: Raw, data: Uint8Array) => {
    await raw.send(data);
    await raw.conn.closeWrite();
  };
  const [, , atServer, atClient] = await Promise.all([
    send(c, up),
    send(s, down),
    readAll(s.conn),
    readAll(c.conn),
  ]);
  strictEqual(firstDifference(atServer, up), -1);
  strictEqual(firstDifference(atClient, down), -1);
  assertEquals(relay.stats().bytes, {
    clientToServer: size,
    serverToClient: size,
  });
});

// 9. In-process API.

Deno.test("in-process: bound ports, parked per name, pairs and byte counts", async () => {
  await using relay = startRelay({ wait: 50 });
  ok(relay.serverAddr.port > 0 && relay.clientAddr.port > 0);
  ok(relay.serverAddr.port !== relay.clientAddr.port);
  const a1 = await park(relay, "a"), a2 = await park(relay, "a");
  using b = await park(relay, "b");
  using _a1 = a1, _a2 = a2;
  await until(
    () => relay.stats().parked.a === 2 && relay.stats().parked.b === 1,
    "parking",
  );
  assertEquals(relay.stats().parked, { a: 2, b: 1 });
  const refusals = relay.stats().refusals;
  using u = await ask(relay, "nobody");
  strictEqual(await u.text(), "NOEXIST\n");
  strictEqual(relay.stats().refusals, refusals + 1);
  using c = await ask(relay, "b");
  strictEqual(await c.line(), "CONNECTED");
  strictEqual(await b.line(), "CONNECTED");
  const st = relay.stats();
  assertEquals([st.activePairs, st.pairings, st.parked, st.connections], [
    1,
    1,
    { a: 2, b: 0 },
    4,
  ]);
  await c.send(randomBytes(1000, 3));
  await b.send(randomBytes(777, 4));
  await readExactly(b.conn, 1000);
  await readExactly(c.conn, 777);
  await until(() => relay.stats().bytes.serverToClient === 777, "counts");
  assertEquals(relay.stats().bytes, {
    clientToServer: 1000,
    serverToClient: 777,
  });
});

Deno.test("shutdown lets an active pair finish within drainTimeout and closes parked and waiting conns", async () => {
  await using relay = startRelay({ drainTimeout: 10_000, wait: 10_000 });
  await reserve(relay, "w");
  const { s, c } = await pair(relay);
  using _s = s, _c = c;
  using parked = await park(relay, "other");
  using waiting = await ask(relay, "w");
  await until(
    () => relay.stats().waiting === 1 && relay.stats().parked.other === 1,
    "conns to wait",
  );
  const stopped = relay.shutdown();
  strictEqual(await parked.text(), "");
  strictEqual(await waiting.text(), "");
  await sendAndClose(c.conn, s.conn, "sent after shutdown began");
  await sendAndClose(s.conn, c.conn, "reply");
  await stopped;
  strictEqual(relay.stats().connections, 0);
  const refused = await Deno.connect({
    hostname: "127.0.0.1",
    port: relay.clientAddr.port,
  })
    .then((conn) => (conn.close(), false), () => true);
  ok(refused, "the relay still accepts after shutdown");
});

Deno.test("shutdown closes an active pair once drainTimeout has passed", async () => {
  await using relay = startRelay({ drainTimeout: 100 });
  const { s, c } = await pair(relay);
  using _s = s, _c = c;
  const ended = [ends(s.conn), ends(c.conn)];
  await relay.shutdown();
  ok((await Promise.all(ended)).every((e) => e === "eof" || e === "error"));
  strictEqual(relay.stats().connections, 0);
});

// Backpressure.

Deno.test("a slow reader stalls the writer with bounded buffering, then gets every byte", async () => {
  await using relay = startRelay();
  const { s, c } = await pair(relay);
  using _s = s, _c = c;
  const chunk = (i: number) => randomBytes(64 * 1024, 100 + i);
  const limit = 64 * 1024 * 1024;
  let written = 0, last = Date.now(), stop = false;
  const writer = (async () => {
    for (let i = 0; !stop && written < limit; i++) {
      await c.send(chunk(i));
      written += 64 * 1024;
      last = Date.now();
    }
    await c.conn.closeWrite();
  })();
  await until(
    () => Date.now() - last > 300 || written >= limit,
    "the writer to stall",
    20_000,
  );
  ok(written < limit, `wrote ${written} bytes to a reader that never reads`);
  stop = true;
  const got = await readAll(s.conn);
  await writer;
  strictEqual(got.length, written);
  for (let i = 0; i < written / (64 * 1024); i++) {
    const at = firstDifference(
      got.subarray(i * 64 * 1024, (i + 1) * 64 * 1024),
      chunk(i),
    );
    strictEqual(at, -1, `chunk ${i} differs at byte ${at}`);
  }
});
