// The library helpers (accept, connect, reserve, release, listen) against an
// in-process relay, and against fake relays written here where a relay must
// misbehave or behave like the seed.

import {
  deepStrictEqual as assertEquals,
  ok,
  rejects,
  strictEqual,
  throws,
} from "node:assert/strict";
import {
  accept,
  connect,
  type HelperOptions,
  listen,
  RelayError,
  release,
  reserve,
} from "../mod.ts";
import {
  bytes,
  freePorts,
  localService,
  Raw,
  readAll,
  readExactly,
  rejectsWith,
  sendAndClose,
  startRelay,
  type TestRelay,
  text,
  until,
} from "./_helpers.ts";

/** A relay written by hand: `handle` runs for each connection, then it is closed. */
interface FakeRelay extends AsyncDisposable {
  addr: string;
  /** Lines the fake read, in order, across connections. */
  seen: string[];
}

function fakeRelay(
  handle: (raw: Raw, seen: string[]) => Promise<void>,
): FakeRelay {
  const seen: string[] = [];
  const service = localService((conn) => handle(new Raw(conn), seen));
  return {
    addr: service.to,
    seen,
    [Symbol.asyncDispose]: () => service[Symbol.asyncDispose](),
  };
}

/** Reads one line and records it. */
async function expectLine(raw: Raw, seen: string[]): Promise<string | null> {
  const got = await raw.line();
  if (got !== null) seen.push(got);
  return got;
}

/**
 * Deno 2.9 does not expose `Deno.TcpConn` as a value, so `instanceof` takes
 * the runtime's own class from a conn made by `Deno.connect`.
 */
async function isRealTcpConn(conn: unknown): Promise<boolean> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  using ref = await Deno.connect({ hostname: "127.0.0.1", port: l.addr.port });
  using peer = await l.accept();
  l.close();
  const TcpConn = Object.getPrototypeOf(ref).constructor;
  return TcpConn.name === "TcpConn" && peer instanceof TcpConn &&
    conn instanceof TcpConn;
}

function parked(relay: TestRelay, name: string): number {
  return relay.stats().parked[name] ?? 0;
}

Deno.test("accept and connect pair into real Deno.TcpConns carrying bytes both ways", async () => {
  await using relay = startRelay();
  const served = accept({ relay: relay.server, name: "echo" });
  await until(() => parked(relay, "echo") === 1, "the server to park");
  using client = await connect({ relay: relay.client, name: "echo" });
  using server = await served;
  ok(await isRealTcpConn(client), `${client} is not a Deno TcpConn`);
  ok(await isRealTcpConn(server), `${server} is not a Deno TcpConn`);
  await sendAndClose(client, server, "ping");
  await sendAndClose(server, client, "pong");
});

Deno.test("accept leaves application bytes sent in the same write as CONNECTED on the conn", async () => {
  await using fake = fakeRelay(async (raw, seen) => {
    await raw.send("SERVER\n");
    await expectLine(raw, seen);
    await raw.send("HELLO 2 0123456789abcdef\n");
    await expectLine(raw, seen);
    await raw.send("PARKED 15\nPING\n");
    await expectLine(raw, seen);
    await raw.send("CONNECTED\nHELLO from the client");
    await raw.conn.closeWrite();
    await readAll(raw.conn);
  });
  using conn = await accept({ relay: fake.addr, name: "svc" });
  ok(await isRealTcpConn(conn), `${conn} is not a Deno TcpConn`);
  assertEquals(text(await readExactly(conn, 5)), "HELLO");
  assertEquals(text(await readAll(conn)), " from the client");
  assertEquals(fake.seen, ["HELLO 2", "CONNECT svc", "PONG"]);
});

Deno.test("connect leaves application bytes sent in the same write as CONNECTED on the conn", async () => {
  await using fake = fakeRelay(async (raw, seen) => {
    await raw.send("CLIENT\n");
    await expectLine(raw, seen);
    await raw.send("HELLO 2 0123456789abcdef\n");
    await expectLine(raw, seen);
    await raw.send("CONNECTED\nDATA");
    await raw.conn.closeWrite();
    await readAll(raw.conn);
  });
  using conn = await connect({ relay: fake.addr, name: "svc" });
  ok(await isRealTcpConn(conn), `${conn} is not a Deno TcpConn`);
  assertEquals(text(await readAll(conn)), "DATA");
  assertEquals(fake.seen, ["HELLO 2", "svc"]);
});

Deno.test("connect to an unknown name rejects with NOEXIST", async () => {
  await using relay = startRelay({ wait: 50 });
  const e = await rejectsWith(
    connect({ relay: relay.client, name: "nobody" }),
    "NOEXIST",
  );
  ok(e.message.includes("nobody"), e.message);
});

Deno.test("connect to a reserved name with no server rejects with OFFLINE after the wait", async () => {
  await using relay = startRelay({ wait: 50 });
  await reserve({ relay: relay.server, name: "home" });
  await rejectsWith(connect({ relay: relay.client, name: "home" }), "OFFLINE");
});

Deno.test("connect to a closed port rejects with UNREACHABLE naming the relay", async () => {
  const [port] = freePorts(1);
  const e = await rejectsWith(
    connect({ relay: `127.0.0.1:${port}`, name: "x" }),
    "UNREACHABLE",
  );
  ok(e.message.includes(`Cannot reach relay at 127.0.0.1:${port}`), e.message);
});

Deno.test("connect to a relay answering garbage rejects with PROTOCOL", async () => {
  await using fake = fakeRelay(async (raw, seen) => {
    await raw.send("CLIENT\n");
    await expectLine(raw, seen);
    await raw.send("WHAT IS THIS\n");
    await readAll(raw.conn);
  });
  const e = await rejectsWith(
    connect({ relay: fake.addr, name: "x" }),
    "PROTOCOL",
  );
  ok(e.message.includes("WHAT IS THIS"), e.message);
});

Deno.test("connect to a relay greeting with garbage rejects with PROTOCOL", async () => {
  await using fake = fakeRelay(async (raw) => {
    await raw.send("SSH-2.0-OpenSSH\n");
    await readAll(raw.conn);
  });
  await rejectsWith(connect({ relay: fake.addr, name: "x" }), "PROTOCOL");
});

Deno.test("connect to a relay closing mid-handshake rejects with CLOSED", async () => {
  await using fake = fakeRelay(async (raw, seen) => {
    await raw.send("CLIENT\n");
    await expectLine(raw, seen);
  });
  await rejectsWith(connect({ relay: fake.addr, name: "x" }), "CLOSED");
});

Deno.test("connect to a relay that never answers rejects with TIMEOUT", async () => {
  await using fake = fakeRelay(async (raw) => {
    await readAll(raw.conn);
  });
  await rejectsWith(
    connect({ relay: fake.addr, name: "x", timeout: 100 }),
    "TIMEOUT",
  );
});

Deno.test("reserve rejects with USED when the name is reserved already", async () => {
  await using relay = startRelay();
  await reserve({ relay: relay.server, name: "home" });
  await rejectsWith(reserve({ relay: relay.server, name: "home" }), "USED");
});

Deno.test("release frees a name: reserve works again and clients hear NOEXIST", async () => {
  await using relay = startRelay({ wait: 50 });
  await reserve({ relay: relay.server, name: "home" });
  await release({ relay: relay.server, name: "home" });
  await rejectsWith(connect({ relay: relay.client, name: "home" }), "NOEXIST");
  await reserve({ relay: relay.server, name: "home" });
  await rejectsWith(connect({ relay: relay.client, name: "home" }), "OFFLINE");
});

Deno.test("reserve succeeds against a seed relay that answers nothing and closes", async () => {
  await using fake = fakeRelay(async (raw, seen) => {
    await raw.send("SERVER\n");
    const command = await expectLine(raw, seen);
    if (!/^(RESERVE|RELEASE|CONNECT)$/i.test(command ?? "")) {
      return await raw.send("UNKNOWN COMMAND\n");
    }
    await expectLine(raw, seen);
  });
  await reserve({ relay: fake.addr, name: "home" });
  await release({ relay: fake.addr, name: "home" });
  // "HELLO 2" once: the helper then remembers that this relay speaks v1.
  assertEquals(fake.seen, ["HELLO 2", "RESERVE", "home", "RELEASE", "home"]);
});

Deno.test("aborting a pending accept rejects with the signal's reason and unparks it", async () => {
  await using relay = startRelay();
  const ac = new AbortController();
  const pending = accept({ relay: relay.server, name: "n", signal: ac.signal });
  await until(() => parked(relay, "n") === 1, "the server to park");
  const reason = new Error("stop waiting");
  ac.abort(reason);
  await rejects(pending, (e) => e === reason);
  await until(() => parked(relay, "n") === 0, "the relay to drop the conn");
});

Deno.test("helpers given an already-aborted signal reject at once with its reason", async () => {
  await using relay = startRelay();
  const reason = new Error("too late");
  const signal = AbortSignal.abort(reason);
  const opts = { relay: relay.server, name: "n", signal };
  await rejects(accept(opts), (e) => e === reason);
  await rejects(reserve(opts), (e) => e === reason);
  await rejects(connect({ ...opts, relay: relay.client }), (e) => e === reason);
  strictEqual(relay.stats().connections, 0);
  assertEquals(relay.stats().parked, {});
});

Deno.test("helpers reject a missing relay with TypeError and a bad name with RangeError", async () => {
  // deno-lint-ignore no-explicit-any
  const noRelay = { name: "x" } as any;
  const helpers: ((o: HelperOptions) => Promise<unknown>)[] = [
    accept,
    connect,
    reserve,
    release,
  ];
  for (const helper of helpers) {
    await rejects(helper(noRelay), TypeError);
    await rejects(helper({ relay: "127.0.0.1:1", name: "" }), RangeError);
    await rejects(helper({ relay: "127.0.0.1:1", name: "a\nb" }), RangeError);
    await rejects(helper({ relay: "127.0.0.1:1", name: "tab\t" }), RangeError);
  }
  throws(() => listen(noRelay), TypeError);
  throws(() => listen({ relay: "127.0.0.1:1", name: "\x00" }), RangeError);
  throws(
    () => listen({ relay: "127.0.0.1:1", name: "x", pool: 0 }),
    RangeError,
  );
});

Deno.test("listen keeps pool conns parked and replaces a used one at once", async () => {
  await using relay = startRelay();
  await using listener = listen({ relay: relay.server, name: "pool", pool: 3 });
  await until(() => parked(relay, "pool") === 3, "3 parked conns");
  using client = await connect({ relay: relay.client, name: "pool" });
  using server = await listener.accept();
  ok(await isRealTcpConn(server), `${server} is not a Deno TcpConn`);
  await until(() => parked(relay, "pool") === 3, "the pool to refill");
  await sendAndClose(client, server, "hi");
});

Deno.test("listen yields each client in for await, and close() ends the loop cleanly", async () => {
  await using relay = startRelay();
  const listener = listen({ relay: relay.server, name: "loop", pool: 1 });
  const got: string[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      got.push(text(await readAll(conn)));
      conn.close();
    }
  })();
  for (const word of ["one", "two", "three"]) {
    await until(() => parked(relay, "loop") === 1, "a parked conn");
    using client = await connect({ relay: relay.client, name: "loop" });
    await client.write(bytes(word));
    await client.closeWrite();
    await readAll(client);
  }
  await until(() => got.length === 3, "three clients served");
  listener.close();
  await loop;
  assertEquals(got, ["one", "two", "three"]);
  await listener[Symbol.asyncDispose]();
});

Deno.test("listen disposed by await using leaves nothing parked or open", async () => {
  await using relay = startRelay();
  {
    await using listener = listen({ relay: relay.server, name: "d", pool: 2 });
    await until(() => parked(relay, "d") === 2, "2 parked conns");
    ok(listener);
  }
  await until(() => parked(relay, "d") === 0, "the relay to drop them");
  strictEqual(relay.stats().connections, 0);
});

Deno.test("listener accept() after close rejects with RelayError CLOSED", async () => {
  await using relay = startRelay();
  const listener = listen({ relay: relay.server, name: "c", pool: 1 });
  const pending = listener.accept();
  listener.close();
  await rejectsWith(pending, "CLOSED");
  await rejectsWith(listener.accept(), "CLOSED");
  await listener[Symbol.asyncDispose]();
});

Deno.test("listen reconnects to a restarted relay without restarting the server", async () => {
  const [serverPort, clientPort] = freePorts(2);
  const first = startRelay({ serverPort, clientPort });
  await using listener = listen({
    relay: first.server,
    name: "back",
    pool: 2,
    minBackoff: 20,
    maxBackoff: 200,
  });
  await until(() => parked(first, "back") === 2, "2 parked at the first relay");
  await first.shutdown();
  await new Promise((r) => setTimeout(r, 100)); // let it retry into nothing
  await using second = startRelay({ serverPort, clientPort });
  await until(() => parked(second, "back") === 2, "2 parked at the new relay");
  using client = await connect({ relay: second.client, name: "back" });
  using server = await listener.accept();
  await sendAndClose(server, client, "still here");
});

Deno.test("listen against a relay that does not know CONNECT fails with UNKNOWN_COMMAND", async () => {
  await using fake = fakeRelay(async (raw, seen) => {
    await raw.send("SERVER\n");
    // read all it sent, so that closing is no reset
    if (await expectLine(raw, seen) !== "HELLO 2") await expectLine(raw, seen);
    await raw.send("UNKNOWN COMMAND\n");
  });
  await using listener = listen({ relay: fake.addr, name: "x", pool: 2 });
  const err = await (async () => {
    try {
      for await (const conn of listener) conn.close();
    } catch (e) {
      return e;
    }
  })();
  ok(err instanceof RelayError, `expected a RelayError, got ${err}`);
  strictEqual(err.code, "UNKNOWN_COMMAND");
  await rejectsWith(listener.accept(), "UNKNOWN_COMMAND");
});
