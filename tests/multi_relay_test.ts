// Several relays (issue 10, failover): listen() and server.ts keep their
// pool at each relay of a list, so that kill -9 of one relay process loses
// no service and the lost one is taken back once it returns; connect() and
// client.ts try the relays of a list in order, moving on while one is down
// or has no server for the name.

import {
  deepStrictEqual as assertEquals,
  ok,
  rejects,
  throws,
} from "node:assert/strict";
import { connect, listen, RelayError, reserve } from "../mod.ts";
import {
  bytes,
  echoService,
  freePort,
  freePorts,
  readAll,
  rejectsWith,
  startRelay,
  text,
  until,
} from "./_helpers.ts";
import { clientTs, Proc, relayProc, run, serverTs } from "./_proc.ts";

/** One request through `relay` (a client port, or a list) to `name`'s echo: its answer. */
async function ask(
  relay: string | string[],
  name: string,
  msg: string,
): Promise<string> {
  using conn = await connect({ relay, name, timeout: 5000 });
  await conn.write(bytes(msg));
  await conn.closeWrite();
  return text(await readAll(conn));
}

/** Serves every client of `listener` with an echo of what it sent. */
function echo(listener: AsyncIterable<Deno.TcpConn>): Promise<void> {
  return (async () => {
    for await (const conn of listener) {
      readAll(conn).then((got) => conn.write(got)).catch(() => {})
        .finally(() => conn.close());
    }
  })();
}

/** relay.ts on the given ports (a relay coming back where it was). */
async function relayAt(serverPort: number, clientPort: number): Promise<Proc> {
  const proc = Proc.deno("relay.ts", [
    "--host=127.0.0.1",
    `--server-port=${serverPort}`,
    `--client-port=${clientPort}`,
  ]);
  await proc.waitErr(/Relay listening/);
  return proc;
}

Deno.test("listen() over two relay processes keeps serving at one after kill -9 of the other, and takes the lost one back when it returns", async () => {
  await using a = await relayProc();
  await using b = await relayProc();
  const listener = listen({
    relay: [a.server, b.server],
    name: "spread",
    pool: 2,
    maxBackoff: 300,
  });
  const served = echo(listener);
  await listener.ready;
  // the pool is at both relays: each one's clients are served
  assertEquals(await ask(a.client, "spread", "at a"), "at a");
  assertEquals(await ask(b.client, "spread", "at b"), "at b");
  a.proc.kill("SIGKILL");
  await a.proc.status();
  for (let i = 0; i < 5; i++) {
    assertEquals(await ask(b.client, "spread", `b ${i}`), `b ${i}`);
  }
  await until(() => listener.lastError instanceof RelayError, "a's failure");
  assertEquals(listener.state, "parked");
  // relay a comes back on its ports: the listener parks there again
  await using _back = await relayAt(a.serverPort, a.clientPort);
  await until(() => listener.lastError === undefined, "a parked again", 10_000);
  assertEquals(await ask(a.client, "spread", "a again"), "a again");
  listener.close();
  await served;
  assertEquals(listener.state, "closed");
  await listener[Symbol.asyncDispose]();
});

Deno.test("listen() over two relays where one refuses for good serves at the other; it fails once both refuse", async () => {
  await using owned = startRelay({ openRegistration: true });
  await using open = startRelay();
  await reserve({ relay: owned.server, name: "half" }); // owned now: AUTH
  await using listener = listen({
    relay: [owned.server, open.server],
    name: "half",
    pool: 1,
  });
  const served = echo(listener);
  await listener.ready;
  assertEquals(await ask(open.client, "half", "still"), "still");
  await until(
    () => (listener.lastError as RelayError)?.code === "AUTH",
    "the refusal",
  );
  assertEquals(listener.state, "parked");
  listener.close();
  await served;

  await using other = startRelay({ openRegistration: true });
  await reserve({ relay: other.server, name: "half" });
  await using failing = listen({
    relay: [owned.server, other.server],
    name: "half",
    pool: 1,
  });
  await rejectsWith(failing.ready, "AUTH");
  await rejectsWith(echo(failing), "AUTH");
  assertEquals(failing.state, "failed");
});

Deno.test("listen() over several relays, as over one, parks no more at a relay while its clients wait for accept()", async () => {
  await using a = startRelay({ wait: 0 });
  await using b = startRelay({ wait: 0 });
  await using listener = listen({
    relay: [a.server, b.server],
    name: "idle",
    pool: 1,
  });
  const parkedAt = (r: typeof a) => r.stats().parked.idle ?? 0;
  await until(() => parkedAt(a) === 1 && parkedAt(b) === 1, "1 at each");
  using first = await connect({ relay: a.client, name: "idle" });
  // nobody accepted the first: nothing is parked at a again
  await new Promise((r) => setTimeout(r, 300));
  assertEquals(parkedAt(a), 0);
  await rejectsWith(connect({ relay: a.client, name: "idle" }), "OFFLINE");
  // once it is accepted, a has the pool back
  (await listener.accept()).close();
  await until(() => parkedAt(a) === 1, "a's pool back");
  using second = await connect({ relay: a.client, name: "idle" });
  (await listener.accept()).close();
  await readAll(first);
  await readAll(second);
});

Deno.test("connect() with a list reaches the first relay that has a server: past one that is down and one without the name", async () => {
  const down = `127.0.0.1:${freePort()}`;
  await using empty = await relayProc();
  await using serving = await relayProc();
  await using listener = listen({ relay: serving.server, name: "listed" });
  const served = echo(listener);
  await listener.ready;
  assertEquals(
    await ask([down, empty.client, serving.client], "listed", "found"),
    "found",
  );
  // the conn is a real Deno.TcpConn, as one from Deno.connect
  using conn = await connect({
    relay: [down, serving.client],
    name: "listed",
  });
  using plain = await Deno.connect({
    hostname: "127.0.0.1",
    port: serving.clientPort,
  });
  assertEquals(Object.getPrototypeOf(conn), Object.getPrototypeOf(plain));
  assertEquals(Object.getPrototypeOf(conn).constructor.name, "TcpConn");
  conn.close();
  listener.close();
  await served;
});

Deno.test("connect() with a list where no relay serves the name rejects with the most telling code and every relay's reason", async () => {
  const down = `127.0.0.1:${freePort()}`;
  await using relay = startRelay({ wait: 0 });
  const e = await rejectsWith(
    connect({ relay: [down, relay.client], name: "nobody" }),
    "NOEXIST",
  );
  ok(e.message.includes(`Cannot reach relay at ${down}`), e.message);
  ok(
    e.message.includes(`No name "nobody" at relay ${relay.client}`),
    e.message,
  );
  // a failure retrying cannot mend is not passed over: the servers' port
  await rejectsWith(
    connect({ relay: [relay.server, relay.client], name: "nobody" }),
    "PROTOCOL",
    /servers' port/,
  );
});

Deno.test("a list of relays is checked at once: empty, repeated or bad", async () => {
  const bad = (e: unknown) => e instanceof TypeError || e instanceof RangeError;
  const cases: [unknown, (e: unknown) => boolean][] = [
    [[], (e) => e instanceof RangeError && /lists no relay/.test(e.message)],
    [
      ["127.0.0.1:9010", "127.0.0.1:9010"],
      (e) =>
        e instanceof RangeError && /lists 127.0.0.1:9010 twice/.test(e.message),
    ],
    [["127.0.0.1:9010", "host:99999"], bad],
    [["127.0.0.1:9010", 7], bad],
  ];
  for (const [relay, check] of cases) {
    throws(() => listen({ relay: relay as string[], name: "x" }), check);
    await rejects(connect({ relay: relay as string[], name: "x" }), check);
  }
});

Deno.test("server.ts --relay a,b parks at both; client.ts --relay a,b goes on through b after kill -9 of a", async () => {
  await using a = await relayProc();
  await using b = await relayProc();
  await using service = echoService();
  await using server = serverTs(
    `${a.server},${b.server}`,
    "both",
    service.to,
    "--pool",
    "1",
  );
  await server.waitErr(new RegExp(`Parked at relay "?${a.server}`));
  await server.waitErr(new RegExp(`Parked at relay "?${b.server}`));
  const [port] = freePorts(1);
  await using client = clientTs(
    `${a.client},${b.client}`,
    "both",
    "--listen",
    String(port),
  );
  await client.waitErr(/Forwarding/);
  const through = async (msg: string) => {
    using local = await Deno.connect({ hostname: "127.0.0.1", port });
    await local.write(bytes(msg));
    await local.closeWrite();
    return text(await readAll(local));
  };
  assertEquals(await through("via a"), "echo:via a");
  a.proc.kill("SIGKILL");
  await a.proc.status();
  assertEquals(await through("via b"), "echo:via b");
  assertEquals(await through("via b again"), "echo:via b again");
  ok(!server.exited && !client.exited);
});

Deno.test("server.ts and client.ts exit 2 on a --relay list with an empty or repeated entry", async () => {
  const results = await Promise.all([
    run("server.ts", "--relay", "a,,b", "--name", "x", "--to", "127.0.0.1:1"),
    run("client.ts", "--relay", "a:9010,a", "--name", "x", "--stdio"),
  ]);
  assertEquals(results.map((r) => r.code), [2, 2]);
  ok(results[0].stderr.includes("--relay takes HOST[:PORT] or a list"));
  ok(
    results[1].stderr.includes("--relay lists a:9010 twice"),
    results[1].stderr,
  );
});
