// The relay's handshake limits and hostile input (issue 2, items 5 and 6), over
// real sockets against an in-process relay.

import {
  deepStrictEqual as assertEquals,
  ok,
  strictEqual,
} from "node:assert/strict";
import {
  healthyPairWorks,
  inParallel,
  randomBytes,
  Raw,
  readAll,
  reset,
  resettable,
  startRelay,
} from "./_helpers.ts";

// 5. Limits.

Deno.test("over-long lines and bad names are refused with an error line; the relay serves on", async () => {
  await using relay = startRelay();
  const say = async (port: number, input: string) => {
    using raw = await Raw.open(port);
    await raw.send(input);
    return await raw.text().catch((e) => `read failed: ${e}`);
  };
  const sp = relay.serverAddr.port, cp = relay.clientAddr.port;
  const long = "a".repeat(300);
  // Server port: an ERROR line, then close.
  ok((await say(sp, long)).startsWith("SERVER\nERROR "));
  ok((await say(sp, `CONNECT\n${long}\n`)).startsWith("SERVER\nERROR "));
  ok(
    (await say(sp, "CONNECT\nbad\x01name\n")).startsWith("SERVER\nERROR NAME"),
  );
  ok((await say(sp, "RESERVE\ncafé\n")).startsWith("SERVER\nERROR NAME"));
  ok((await say(sp, "CONNECT\n\n")).startsWith("SERVER\nERROR NAME"));
  // Client port: NOEXIST, then close.
  strictEqual(await say(cp, long), "CLIENT\nNOEXIST\n");
  strictEqual(await say(cp, `${long}\n`), "CLIENT\nNOEXIST\n");
  strictEqual(await say(cp, "bad\x7fname\n"), "CLIENT\nNOEXIST\n");
  assertEquals(relay.stats().parked, {});
  await healthyPairWorks(relay);
});

Deno.test("a handshake not finished within handshakeTimeout is closed with an error line", async () => {
  await using relay = startRelay({ handshakeTimeout: 100 });
  using silentServer = await Raw.open(relay.serverAddr.port);
  using halfServer = await Raw.open(relay.serverAddr.port);
  await halfServer.send("CONNECT\n");
  using silentClient = await Raw.open(relay.clientAddr.port);
  using halfClient = await Raw.open(relay.clientAddr.port);
  await halfClient.send("na");
  const results = await Promise.all(
    [silentServer, halfServer, silentClient, halfClient].map((r) => r.text()),
  );
  // The server port gets an ERROR line, the client port NOEXIST, then a close.
  assertEquals(results.map((r) => r.replace(/^(SERVER\nERROR) .*\n$/, "$1")), [
    "SERVER\nERROR",
    "SERVER\nERROR",
    "CLIENT\nNOEXIST\n",
    "CLIENT\nNOEXIST\n",
  ]);
  await healthyPairWorks(relay);
});

Deno.test("a handshake dripped one byte at a time is still cut at handshakeTimeout", async () => {
  await using relay = startRelay({ handshakeTimeout: 100 });
  using drip = await Raw.open(relay.clientAddr.port);
  strictEqual(await drip.line(), "CLIENT");
  let closed = false;
  const reader = readAll(drip.conn).catch(() => {}).finally(() =>
    closed = true
  );
  for (let i = 0; i < 200 && !closed; i++) {
    await drip.send("x").catch(() => {});
    await new Promise((r) => setTimeout(r, 10));
  }
  const cut = closed;
  if (!cut) drip.close();
  await reader;
  ok(cut, "the dripping handshake was never closed");
  await healthyPairWorks(relay);
});

// 6. Never stops.

Deno.test("hundreds of resets during the handshake and random bytes never stop the relay", async () => {
  await using relay = startRelay({ handshakeTimeout: 2000 });
  const ports = [relay.serverAddr.port, relay.clientAddr.port];
  // Connect and close at once: before or after the greeting arrives (unread: RST).
  await inParallel(400, 20, async (i) => {
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: ports[i % 2],
    });
    conn.close();
  });
  // Real resets (RST), right after connecting or in the middle of a line.
  await inParallel(200, 20, async (i) => {
    await reset(
      await resettable(
        ports[i % 2],
        ["", "CONNECT\n", "na", "RESERVE\nx"][i % 4],
      ),
    );
  });
  // Random bytes (seeded), 200 inputs on each port.
  await inParallel(400, 20, async (i) => {
    const input = randomBytes(1 + (i * 37) % 700, 1000 + i);
    using raw = await Raw.open(ports[i % 2]);
    await raw.send(input).catch(() => {}); // the relay may cut us off mid-way
    await raw.conn.closeWrite().catch(() => {});
    await readAll(raw.conn).catch(() => {});
  });
  await healthyPairWorks(relay);
});
