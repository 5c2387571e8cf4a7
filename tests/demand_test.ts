// On-demand parking on the wire: WATCH by hand against the relay (NEED,
// PING, proofs, limits, hostile watchers, v1 untouched), and the listener
// against fake relays that do not know WATCH or refuse it.

import {
  deepStrictEqual as assertEquals,
  ok,
  rejects,
  strictEqual,
} from "node:assert/strict";
import { proof } from "../protocol/_auth.ts";
import { accept, connect, listen } from "../mod.ts";
import {
  ask,
  healthyPairWorks,
  localService,
  park,
  Raw,
  readExactly,
  reserve,
  sendAndClose,
  startRelay,
  text,
  until,
} from "./_helpers.ts";
import { connections0, hello, hostileRelay, SECRET } from "./_hostile.ts";
import { run, serverTs } from "./_proc.ts";

/** A raw WATCH of `name` (with `secret`'s proof); the connection after its answer. */
async function watch(port: number, name: string, secret?: string) {
  const { raw, nonce } = await hello(port);
  const p = secret ? ` ${proof(secret, nonce, "WATCH", name)}` : "";
  await raw.send(`WATCH ${name}${p}\n`);
  return { raw, answer: await raw.line() };
}

/** Reads lines until `want`; fails on the end of the stream. */
async function lineUntil(raw: Raw, want: string): Promise<string[]> {
  const seen: string[] = [];
  for (;;) {
    const got = await raw.line();
    if (got === null) throw new Error(`ended before ${want}: ${seen}`);
    seen.push(got);
    if (got === want) return seen;
  }
}

Deno.test("a watcher hears WATCHING, then NEED as clients wait beyond the parked servers, and NEED 0 once none wait", async () => {
  await using relay = startRelay({ wait: 400 });
  await reserve(relay, "w");
  const { raw: w, answer } = await watch(relay.serverAddr.port, "w");
  using _w = w;
  strictEqual(answer, "WATCHING 15");
  const clients = await Promise.all([1, 2, 3].map(() => ask(relay, "w")));
  await lineUntil(w, "NEED 3");
  using s = await park(relay, "w"); // takes one of them
  await lineUntil(w, "NEED 2");
  // the other two hear OFFLINE after the wait: nobody waits any more
  await lineUntil(w, "NEED 0");
  const answers = await Promise.all(clients.map((c) => c.line()));
  clients.forEach((c) => c.close());
  assertEquals(answers.sort(), ["CONNECTED", "OFFLINE", "OFFLINE"]);
  strictEqual(await s.line(), "CONNECTED");
});

Deno.test("a watcher that joins while clients wait hears NEED at once, and PING every heartbeat", async () => {
  await using relay = startRelay({ heartbeat: 50 });
  await reserve(relay, "late");
  using c = await ask(relay, "late");
  await until(() => relay.stats().waiting === 1, "the client to wait");
  const { raw: w, answer } = await watch(relay.serverAddr.port, "late");
  using _w = w;
  strictEqual(answer, "WATCHING 0.05");
  strictEqual(await w.line(), "NEED 1");
  strictEqual(await w.line(), "PING");
  await w.send("PONG\n");
  strictEqual(await w.line(), "PING");
  await w.send("pong\r\n");
  strictEqual(await w.line(), "PING");
  // no PONG: dropped at the next heartbeat, harmless to the name
  strictEqual(await w.line(), null);
  using s = await park(relay, "late");
  strictEqual(await c.line(), "CONNECTED");
  strictEqual(await s.line(), "CONNECTED");
});

Deno.test("a watcher that sends anything but PONG, or an endless line, is closed without harm", async () => {
  await using relay = startRelay();
  for (
    const junk of [
      "GARBAGE\n",
      "PONGPONGPONG",
      "x".repeat(5000),
      "\x00\xff\n",
      "CONNECT\nw\n",
    ]
  ) {
    const { raw: w, answer } = await watch(relay.serverAddr.port, "w");
    using _w = w;
    strictEqual(answer, "WATCHING 15");
    await w.send(junk).catch(() => {});
    strictEqual(await w.text().catch(() => ""), "", JSON.stringify(junk));
  }
  // nothing kept, nothing reserved
  await connections0(relay);
  strictEqual(relay.stats().parked.w, undefined);
  await healthyPairWorks(relay);
});

Deno.test("WATCH is v2 only, one name per line, and never reserves the name", async () => {
  await using relay = startRelay();
  // v1: an unknown command, as in the seed
  using v1 = await Raw.open(relay.serverAddr.port);
  await v1.send("WATCH\nw\n");
  strictEqual(await v1.text(), "SERVER\nUNKNOWN COMMAND\n");
  const { raw: bad } = await hello(relay.serverAddr.port);
  using _b = bad;
  await bad.send("WATCH a b c\n");
  ok((await bad.text()).startsWith("ERROR PROTOCOL"));
  const { raw: named } = await hello(relay.serverAddr.port);
  using _n = named;
  await named.send("WATCH\n");
  ok((await named.text()).startsWith("ERROR NAME"));
  const { raw: w, answer } = await watch(relay.serverAddr.port, "free");
  using _w = w;
  strictEqual(answer, "WATCHING 15");
  await rejects(connect({ relay: relay.client, name: "free" }), {
    code: "NOEXIST",
  });
  strictEqual(relay.stats().handshaking, 0); // a watcher is not handshaking
});

Deno.test("a WATCH of an owned name needs the owner's proof over WATCH: else ERROR AUTH, and the owner still serves", async () => {
  await using relay = hostileRelay();
  const port = relay.serverAddr.port;
  // a proof for CONNECT is no proof for WATCH
  const { raw: r, nonce } = await hello(port);
  using _r = r;
  await r.send(`WATCH owned ${proof(SECRET, nonce, "CONNECT", "owned")}\n`);
  ok((await r.text()).startsWith("ERROR AUTH"));
  for (const secret of [undefined, "33".repeat(32)]) {
    const { raw, answer } = await watch(port, "owned", secret);
    using _raw = raw;
    ok(answer?.startsWith("ERROR AUTH"), `${answer}`);
    strictEqual(await raw.line(), null);
  }
  const { raw: good, answer } = await watch(port, "owned", SECRET);
  using _g = good;
  strictEqual(answer, "WATCHING 15");
  // the owner's fixed pool still serves
  await using listener = listen({
    relay: relay.server,
    name: "owned",
    secret: SECRET,
    pool: 1,
    maxPool: 1,
  });
  await listener.ready;
  using c = await connect({ relay: relay.client, name: "owned" });
  using s = await listener.accept();
  await sendAndClose(c, s, "still served");
});

Deno.test("watch connections per name are limited as parked ones are: past maxParkedPerName, ERROR LIMIT", async () => {
  await using relay = hostileRelay({ limits: { maxParkedPerName: 2 } });
  const port = relay.serverAddr.port;
  const a = await watch(port, "w"), b = await watch(port, "w");
  using _a = a.raw, _b = b.raw;
  strictEqual(a.answer, "WATCHING 15");
  strictEqual(b.answer, "WATCHING 15");
  const c = await watch(port, "w");
  using _c = c.raw;
  ok(c.answer?.startsWith("ERROR LIMIT"), `${c.answer}`);
  const other = await watch(port, "other");
  using _o = other.raw;
  strictEqual(other.answer, "WATCHING 15");
});

Deno.test("NEED never reaches v1 servers or plain v2 CONNECT servers", async () => {
  await using relay = startRelay();
  const { raw: w } = await watch(relay.serverAddr.port, "n");
  using _w = w;
  using v1 = await park(relay, "n");
  const { raw: v2 } = await hello(relay.serverAddr.port);
  using _v2 = v2;
  await v2.send("CONNECT n\n");
  strictEqual(await v2.line(), "PARKED 15");
  await until(() => relay.stats().parked.n === 2, "2 parked");
  const clients = await Promise.all([1, 2, 3].map(() => ask(relay, "n")));
  await lineUntil(w, "NEED 1"); // the third waits
  for (const server of [v1, v2]) {
    strictEqual(await server.line(), "CONNECTED");
  }
  // each client's first bytes are the first bytes each server reads
  for (const [i, c] of clients.entries()) {
    await c.send(`client ${i}\n`);
  }
  const got = [await v1.line(), await v2.line()].sort();
  ok(got.every((l) => /^client [0-2]$/.test(l ?? "")), `${got}`);
  clients.forEach((c) => c.close());
});

Deno.test("an old-style v2 server (CONNECT only, no WATCH) is served as before next to a watcher", async () => {
  await using relay = startRelay();
  const { raw: w } = await watch(relay.serverAddr.port, "old");
  using _w = w;
  // accept() parks one connection and never watches
  const served = accept({ relay: relay.server, name: "old" });
  await until(() => relay.stats().parked.old === 1, "the server to park");
  using c = await connect({ relay: relay.client, name: "old" });
  using s = await served;
  await sendAndClose(c, s, "as before");
});

/**
 * A v2 relay by hand: parks every CONNECT (PARKED, then silence) and answers
 * a WATCH with `watchAnswer`; counts both.
 */
function fakeRelay(watchAnswer: string) {
  const seen = { connect: 0, watch: 0 };
  const service = localService(async (conn) => {
    const raw = new Raw(conn);
    await raw.send("SERVER\n");
    if (await raw.line() !== "HELLO 2") return;
    await raw.send(`HELLO 2 ${"cd".repeat(16)}\n`);
    const request = (await raw.line()) ?? "";
    if (request.startsWith("WATCH ")) {
      seen.watch++;
      return await raw.send(`${watchAnswer}\n`);
    }
    seen.connect++;
    await raw.send("PARKED 15\n");
    await raw.line(); // held until closed
  });
  return Object.assign(service, { seen });
}

Deno.test("a listener against a relay that answers WATCH with ERROR UNKNOWN keeps a fixed pool, and remembers it", async () => {
  await using fake = fakeRelay("ERROR UNKNOWN unknown command");
  await using first = listen({ relay: fake.to, name: "x", pool: 2 });
  await first.ready;
  await until(() => fake.seen.watch === 1, "one WATCH");
  await until(() => fake.seen.connect === 2, "2 parked");
  strictEqual(first.state, "parked");
  // another listener for the same relay does not ask again
  await using second = listen({ relay: fake.to, name: "y", pool: 2 });
  await second.ready;
  await until(() => fake.seen.connect === 4, "4 parked");
  await new Promise((r) => setTimeout(r, 50)); // a WATCH would be in by now
  strictEqual(fake.seen.watch, 1);
});

Deno.test("a listener whose WATCH is refused with ERROR AUTH keeps serving with its fixed pool", async () => {
  await using fake = fakeRelay("ERROR AUTH wrong proof for x");
  await using listener = listen({ relay: fake.to, name: "x", pool: 2 });
  await listener.ready;
  await until(() => fake.seen.watch === 1, "one WATCH");
  await until(() => fake.seen.connect === 2, "2 parked");
  strictEqual(listener.state, "parked");
});

Deno.test("a fixed pool (maxPool = pool) opens no watch connection", async () => {
  await using fake = fakeRelay("WATCHING 15");
  await using listener = listen({
    relay: fake.to,
    name: "x",
    pool: 2,
    maxPool: 2,
  });
  await listener.ready;
  await until(() => fake.seen.connect === 2, "2 parked");
  await new Promise((r) => setTimeout(r, 50)); // a WATCH would be in by now
  strictEqual(fake.seen.watch, 0);
});

Deno.test("listen checks maxPool: a whole number from pool to 1000", () => {
  for (const maxPool of [1, 2.5, 1001, NaN]) {
    try {
      listen({ relay: "127.0.0.1:1", name: "x", pool: 2, maxPool });
      ok(false, `maxPool ${maxPool} accepted`);
    } catch (e) {
      ok(e instanceof RangeError, `${e}`);
      ok(/maxPool/.test(e.message), e.message);
    }
  }
});

Deno.test("server.ts takes --max-pool equal to --pool (a fixed pool) and refuses one below it", async () => {
  await using relay = startRelay();
  const below = await run(
    "server.ts",
    ...["--relay", relay.server, "--name", "x", "--to", "127.0.0.1:1"],
    ...["--pool", "3", "--max-pool", "2"],
  );
  strictEqual(below.code, 2);
  ok(/--max-pool takes a whole number from 3/.test(below.stderr), below.stderr);
  await using fixed = serverTs(
    relay.server,
    "x",
    "127.0.0.1:1",
    ...["--pool", "2", "--max-pool", "2"],
  );
  await until(() => relay.stats().parked.x === 2, "2 parked", 15_000);
  strictEqual(fixed.exited, false);
});

Deno.test("accept() sends CONNECT with HELLO 2, before the nonce: parked after one round trip", async () => {
  // This relay answers nothing until it has the request.
  await using fake = localService(async (conn) => {
    const raw = new Raw(conn);
    if (await raw.line() !== "HELLO 2") return;
    if (await raw.line() !== "CONNECT early") return;
    await raw.send(
      `SERVER\nHELLO 2 ${"ef".repeat(16)}\nPARKED 15\nCONNECTED\nhi`,
    );
    await raw.line(); // until the helper closes
  });
  using conn = await accept({ relay: fake.to, name: "early", timeout: 3000 });
  assertEquals(text(await readExactly(conn, 2)), "hi");
});

Deno.test("the relay parks a v2 CONNECT sent with HELLO 2 in one write", async () => {
  await using relay = startRelay();
  // as the helper sends it: HELLO 2 and CONNECT in one write, before the nonce
  using early = await Raw.open(relay.serverAddr.port);
  await early.send("HELLO 2\nCONNECT p\n");
  strictEqual(await early.line(), "SERVER");
  ok((await early.line())?.startsWith("HELLO 2 "));
  strictEqual(await early.line(), "PARKED 15");
  using c = await ask(relay, "p");
  strictEqual(await c.line(), "CONNECTED");
  strictEqual(await early.line(), "CONNECTED");
  await c.send("data");
  assertEquals(text(await readExactly(early.conn, 4)), "data");
});

Deno.test("a parked v2 server may answer a PING with STOP and leave; STOP unasked is a protocol violation", async () => {
  await using relay = startRelay({ heartbeat: 100 });
  const why: string[] = [];
  using _sub = relay.events.on((e) => {
    if (e.type === "unparked") why.push(e.why);
  });
  const { raw: a } = await hello(relay.serverAddr.port);
  using _a = a;
  await a.send("CONNECT s\n");
  strictEqual(await a.line(), "PARKED 0.1");
  strictEqual(await a.line(), "PING");
  await a.send("STOP\n");
  strictEqual(await a.line(), null);
  // no PING out (15 s heartbeat): STOP is no answer
  await using quiet = startRelay();
  using _sub2 = quiet.events.on((e) => {
    if (e.type === "unparked") why.push(e.why);
  });
  const { raw: b } = await hello(quiet.serverAddr.port);
  using _b = b;
  await b.send("CONNECT s\n");
  strictEqual(await b.line(), "PARKED 15");
  await b.send("STOP\n");
  strictEqual(await b.line(), null);
  assertEquals(why, ["closed", "protocol violation"]);
});

Deno.test("a client arriving while a leaving server's PING is out goes to the next server", async () => {
  await using relay = startRelay({ heartbeat: 100 });
  const { raw: leaving } = await hello(relay.serverAddr.port);
  using _l = leaving;
  await leaving.send("CONNECT s\n");
  strictEqual(await leaving.line(), "PARKED 0.1");
  strictEqual(await leaving.line(), "PING");
  using next = await park(relay, "s"); // v1: no PING
  await until(() => relay.stats().parked.s === 2, "2 parked");
  // the PING is out: the client waits for the first server's answer
  using c = await ask(relay, "s");
  await until(() => relay.stats().parked.s === 1, "the client to be taken");
  await leaving.send("STOP\n");
  strictEqual(await leaving.line(), null);
  strictEqual(await c.line(), "CONNECTED");
  strictEqual(await next.line(), "CONNECTED");
  await c.send("to the next one\n");
  strictEqual(await next.line(), "to the next one");
});
