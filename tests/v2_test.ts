// Protocol v2 against an in-process relay: negotiation, acknowledged parking
// and heartbeats, owned names with proofs (wrong, stale, replayed), open
// registration, private names, and failed-proof limits.

import {
  deepStrictEqual as assertEquals,
  ok,
  strictEqual,
} from "node:assert/strict";
import { proof } from "../protocol/_auth.ts";
import { accept, connect, listen, RelayError, reserve } from "../mod.ts";
import type { NameOwners } from "../relay.ts";
import {
  healthyPairWorks,
  pair,
  Raw,
  rejectsWith,
  sendAndClose,
  startRelay,
  type TestRelay,
  until,
} from "./_helpers.ts";

const SECRET = "11".repeat(32), KEY = "22".repeat(32);

/** Owners in memory: "owned" (secret only) and "private" (secret and key). */
function owners(): NameOwners {
  const table: Record<string, { secret: string; clientKey?: string }> = {
    owned: { secret: SECRET },
    private: { secret: SECRET, clientKey: KEY },
  };
  return { get: (name) => table[name] };
}

/** A raw v2 handshake on `port`: greeting read, HELLO 2 sent, nonce returned. */
async function hello(port: number): Promise<{ raw: Raw; nonce: string }> {
  const raw = await Raw.open(port);
  await raw.line(); // SERVER or CLIENT
  await raw.send("HELLO 2\n");
  const reply = (await raw.line()) ?? "";
  ok(/^HELLO 2 [0-9a-f]{32}$/.test(reply), `bad HELLO reply ${reply}`);
  return { raw, nonce: reply.slice(8) };
}

/** A v2 CONNECT with `secret`'s proof; returns the raw conn after its answer line. */
async function v2Connect(relay: TestRelay, name: string, secret?: string) {
  const { raw, nonce } = await hello(relay.serverAddr.port);
  const p = secret ? ` ${proof(secret, nonce, "CONNECT", name)}` : "";
  await raw.send(`CONNECT ${name}${p}\n`);
  return { raw, nonce, answer: await raw.line() };
}

Deno.test("v2 server hears PARKED, answers PING, and is paired without a heartbeat byte reaching the client", async () => {
  await using relay = startRelay({ heartbeat: 300 });
  const { raw: s, answer } = await v2Connect(relay, "hb");
  using _s = s;
  strictEqual(answer, "PARKED 0.3");
  strictEqual(await s.line(), "PING");
  // A client arrives while the PING is unanswered: it must wait for the PONG.
  using c = await Raw.open(relay.clientAddr.port);
  await c.line();
  await c.send("hb\n");
  await until(
    () => relay.stats().waiting === 0 && relay.stats().parked.hb === 0,
    "the client to be taken",
  );
  await s.send("PONG\n");
  strictEqual(await s.line(), "CONNECTED");
  strictEqual(await c.line(), "CONNECTED");
  await s.send("from server");
  await s.conn.closeWrite();
  assertEquals(await c.text(), "from server");
});

Deno.test("a parked v2 server that stops answering PING is dropped", async () => {
  await using relay = startRelay({ heartbeat: 40 });
  const { raw: s, answer } = await v2Connect(relay, "quiet");
  using _s = s;
  strictEqual(answer, "PARKED 0.04");
  strictEqual(await s.line(), "PING");
  await until(
    () => relay.stats().parked.quiet === 0,
    "the silent server to be dropped",
  );
  strictEqual(await s.line(), null);
  await healthyPairWorks(relay);
});

Deno.test("a parked v2 server that sends anything but PONG is dropped", async () => {
  await using relay = startRelay();
  const { raw: s } = await v2Connect(relay, "chatty");
  using _s = s;
  await s.send("HELLO THERE\n");
  strictEqual(await s.line(), null);
  strictEqual(relay.stats().parked.chatty, 0);
});

Deno.test("an owned name parks with the right proof and refuses wrong, missing, stale and replayed proofs", async () => {
  await using relay = startRelay({ names: owners() });
  const good = await v2Connect(relay, "owned", SECRET);
  using _g = good.raw;
  strictEqual(good.answer, "PARKED 15");
  // missing, wrong secret, and a recorded proof replayed under a new nonce
  for (
    const line of [
      "CONNECT owned",
      `CONNECT owned ${proof("33".repeat(32), "x", "CONNECT", "owned")}`,
      `CONNECT owned ${proof(SECRET, good.nonce, "CONNECT", "owned")}`,
    ]
  ) {
    const { raw } = await hello(relay.serverAddr.port);
    using _r = raw;
    await raw.send(`${line}\n`);
    ok((await raw.text()).startsWith("ERROR AUTH"), line);
  }
  // a proof for another command is no proof for CONNECT
  const { raw, nonce } = await hello(relay.serverAddr.port);
  using _r = raw;
  await raw.send(`CONNECT owned ${proof(SECRET, nonce, "RELEASE", "owned")}\n`);
  ok((await raw.text()).startsWith("ERROR AUTH"));
  strictEqual(relay.stats().parked.owned, 1);
});

Deno.test("a v1 peer cannot CONNECT or RELEASE an owned name, and RESERVE hears USED", async () => {
  await using relay = startRelay({ names: owners() });
  for (
    const [command, want] of [["CONNECT", "ERROR AUTH"], [
      "RELEASE",
      "ERROR AUTH",
    ], ["RESERVE", "USED"]]
  ) {
    using raw = await Raw.open(relay.serverAddr.port);
    await raw.send(`${command}\nowned\n`);
    const got = await raw.text();
    ok(got.startsWith(`SERVER\n${want}`), `${command}: ${JSON.stringify(got)}`);
  }
  // an unowned name stays open to v1, as in the seed
  await healthyPairWorks(relay);
});

Deno.test("owned names are reserved: clients hear OFFLINE, not NOEXIST, while no server is parked", async () => {
  await using relay = startRelay({ names: owners(), wait: 20 });
  await rejectsWith(connect({ relay: relay.client, name: "owned" }), "OFFLINE");
});

Deno.test("helpers serve an owned name with its secret; without it accept fails with AUTH", async () => {
  await using relay = startRelay({ names: owners() });
  await rejectsWith(accept({ relay: relay.server, name: "owned" }), "AUTH");
  await rejectsWith(
    accept({ relay: relay.server, name: "owned", secret: "44".repeat(32) }),
    "AUTH",
  );
  const served = accept({ relay: relay.server, name: "owned", secret: SECRET });
  await until(() => relay.stats().parked.owned === 1, "the owner to park");
  using c = await connect({ relay: relay.client, name: "owned" });
  using s = await served;
  await sendAndClose(c, s, "hi");
});

Deno.test("open registration: the first v2 RESERVE owns the name and gets its secret once", async () => {
  await using relay = startRelay({ openRegistration: true });
  const { secret } = await reserve({ relay: relay.server, name: "mine" });
  ok(secret && /^[0-9a-f]{64}$/.test(secret), `no secret: ${secret}`);
  await rejectsWith(reserve({ relay: relay.server, name: "mine" }), "USED");
  await rejectsWith(accept({ relay: relay.server, name: "mine" }), "AUTH");
  // the owner may reserve again (idempotent) and serve
  assertEquals(
    await reserve({ relay: relay.server, name: "mine", secret }),
    {},
  );
  await using listener = listen({
    relay: relay.server,
    name: "mine",
    secret,
    pool: 1,
  });
  await until(() => relay.stats().parked.mine === 1, "the owner to park");
  using c = await connect({ relay: relay.client, name: "mine" });
  using s = await listener.accept();
  await sendAndClose(s, c, "yours");
});

Deno.test("a private name looks like no name to a client without its key", async () => {
  await using relay = startRelay({ names: owners(), wait: 2000 });
  const served = accept({
    relay: relay.server,
    name: "private",
    secret: SECRET,
  });
  await until(() => relay.stats().parked.private === 1, "the server to park");
  await rejectsWith(
    connect({ relay: relay.client, name: "private" }),
    "NOEXIST",
  );
  await rejectsWith(
    connect({ relay: relay.client, name: "private", key: "55".repeat(32) }),
    "NOEXIST",
  );
  using v1 = await Raw.open(relay.clientAddr.port);
  await v1.send("private\n");
  strictEqual(await v1.text(), "CLIENT\nNOEXIST\n");
  using c = await connect({ relay: relay.client, name: "private", key: KEY });
  using s = await served;
  await sendAndClose(c, s, "in");
});

Deno.test("after too many failed proofs an address is refused with ERROR RATE, even with the right proof", async () => {
  await using relay = startRelay({
    names: owners(),
    limits: { maxFailedProofs: 3, limitLoopback: true },
  });
  for (let i = 0; i < 3; i++) {
    await rejectsWith(
      accept({ relay: relay.server, name: "owned", secret: "66".repeat(32) }),
      "AUTH",
    );
  }
  const e = await accept({ relay: relay.server, name: "owned", secret: SECRET })
    .catch((e) => e);
  ok(
    e instanceof RelayError && e.code === "LIMIT" &&
      /failed proofs/.test(e.message),
    String(e),
  );
  // private names: the client hears NOEXIST, as for any refusal it has no word for
  await rejectsWith(
    connect({ relay: relay.client, name: "private", key: KEY }),
    "NOEXIST",
  );
});

Deno.test("limits refuse with typed ERROR LIMIT lines: per address, and parked per name", async () => {
  await using relay = startRelay({
    limits: { maxPerIp: 3, maxParkedPerName: 2, limitLoopback: true },
  });
  const parked = [
    await v2Connect(relay, "busy"),
    await v2Connect(relay, "busy"),
  ];
  const third = await v2Connect(relay, "busy");
  using _t = third.raw;
  ok(
    third.answer?.startsWith("ERROR LIMIT too many parked"),
    third.answer ?? "",
  );
  using a = await Raw.open(relay.clientAddr.port);
  strictEqual(await a.line(), "CLIENT"); // 3rd unpaired conn of this address
  using b = await Raw.open(relay.clientAddr.port); // refused: greeted all the same
  await b.send("HELLO 2\n");
  ok(
    /^CLIENT\nHELLO 2 [0-9a-f]{32}\nERROR LIMIT too many connections from 127\.0\.0\.1\n$/
      .test(await b.text()),
  );
  for (const p of parked) p.raw.close();
  a.close();
  await until(
    () => relay.stats().connections === 0,
    "connections to return to 0",
  );
  ok(relay.stats().refusals >= 2);
});

Deno.test("a v2 request line with too many words or an unknown command is refused", async () => {
  await using relay = startRelay();
  for (
    const [line, want] of [["CONNECT a b c", "ERROR PROTOCOL"], [
      "JUMP a",
      "ERROR UNKNOWN",
    ], ["CONNECT with\tTab", "ERROR NAME"]]
  ) {
    const { raw } = await hello(relay.serverAddr.port);
    using _r = raw;
    await raw.send(`${line}\n`);
    ok((await raw.text()).startsWith(want), line);
  }
  const { raw } = await hello(relay.clientAddr.port);
  using _c = raw;
  await raw.send("a b c\n");
  ok((await raw.text()).startsWith("ERROR PROTOCOL"));
});

Deno.test("a listener treats a relay that stops sending PING as dead and reconnects", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      const raw = new Raw(conn as Deno.TcpConn);
      await raw.send("SERVER\n");
      await raw.line(); // HELLO 2
      await raw.send(`HELLO 2 ${"ab".repeat(16)}\n`);
      await raw.line(); // CONNECT name
      await raw.send("PARKED 0.05\n"); // then silence: no PING ever
    }
  })().catch(() => {});
  const relay = `127.0.0.1:${listener.addr.port}`;
  {
    await using l = listen({
      relay,
      name: "x",
      pool: 1,
      minBackoff: 5,
      maxBackoff: 20,
    });
    await until(() => conns.length >= 3, "the listener to reconnect twice");
    void l;
  }
  listener.close();
  await serving;
  for (const c of conns) c.close();
});

Deno.test("names nobody owns are bounded: past maxNames a new name is refused with ERROR LIMIT", async () => {
  await using relay = startRelay({ names: owners(), limits: { maxNames: 2 } });
  for (const name of ["a", "b"]) {
    using raw = await Raw.open(relay.serverAddr.port);
    await raw.send(`RESERVE\n${name}\n`);
    strictEqual(await raw.text(), "SERVER\nOK\n");
  }
  for (const send of ["RESERVE\nc\n", "CONNECT\nc\n"]) {
    using raw = await Raw.open(relay.serverAddr.port);
    await raw.send(send);
    ok((await raw.text()).startsWith("SERVER\nERROR LIMIT too many names"));
  }
  // a reserved name is still served, and an owner always gets its name
  const { s: ps, c: pc } = await pair(relay, "a");
  using _ps = ps, _pc = pc;
  await sendAndClose(pc.conn, ps.conn, "q");
  const served = accept({ relay: relay.server, name: "owned", secret: SECRET });
  await until(() => relay.stats().parked.owned === 1, "the owner to park");
  using c = await connect({ relay: relay.client, name: "owned" });
  using s = await served;
  await sendAndClose(c, s, "x");
});
