// How a helper dials: the timeout bounds the TCP connect and the TLS
// handshake too, HELLO 2 goes out before the relay's greeting, the two ports
// are told apart, and the relay can be given as an address.

import { ok, rejects, strictEqual } from "node:assert/strict";
import { accept, connect, listen, release, reserve } from "../mod.ts";
import {
  localService,
  Raw,
  readAll,
  rejectsWith,
  sendAndClose,
  startRelay,
  until,
} from "./_helpers.ts";
import { Proc } from "./_proc.ts";

function hasRuby(): boolean {
  try {
    return new Deno.Command("ruby", { args: ["--version"], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}
const NO_RUBY = !hasRuby();

/**
 * A port where a TCP connect never completes: a listener (in Ruby, whose
 * `listen(0)` keeps a backlog of one) that never accepts, with its backlog
 * filled by one connection, so that the kernel drops every further SYN.
 */
async function blackHole(): Promise<{ port: number } & AsyncDisposable> {
  const proc = new Proc("ruby", [
    "-rsocket",
    "-e",
    `s = Socket.new(:INET, :STREAM); s.bind(Addrinfo.tcp("127.0.0.1", 0));
     s.listen(0); puts "port #{s.local_address.ip_port}"; $stdout.flush; sleep`,
  ]);
  const [, port] = await proc.wait(/port (\d+)/);
  const filler = await Deno.connect({
    hostname: "127.0.0.1",
    port: Number(port),
  });
  return {
    port: Number(port),
    async [Symbol.asyncDispose]() {
      filler.close();
      await proc[Symbol.asyncDispose]();
    },
  };
}

/** `p`, or a rejection if it has not settled within `ms` (a bound against hanging). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) =>
    timer = setTimeout(() => reject(new Error(`${what}: still pending`)), ms)
  );
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name:
    "the timeout bounds a TCP connect that never completes, plain and TLS: TIMEOUT",
  ignore: NO_RUBY,
  async fn() {
    await using hole = await blackHole();
    const relay = `127.0.0.1:${hole.port}`;
    for (const tls of [false, true]) {
      const e = await within(
        rejectsWith(
          connect({ relay, name: "x", tls, timeout: 300 }),
          "TIMEOUT",
        ),
        5000,
        `connect with tls: ${tls}`,
      );
      ok(e.message.includes(relay), e.message);
    }
    await within(
      rejectsWith(accept({ relay, name: "x", timeout: 300 }), "TIMEOUT"),
      5000,
      "accept",
    );
  },
});

Deno.test({
  name:
    "aborting a TLS dial during its TCP connect rejects at once with the signal's reason",
  ignore: NO_RUBY,
  async fn() {
    await using hole = await blackHole();
    const ac = new AbortController();
    const pending = connect({
      relay: `127.0.0.1:${hole.port}`,
      name: "x",
      tls: true,
      signal: ac.signal,
    });
    const reason = new Error("give up");
    setTimeout(() => ac.abort(reason), 100);
    await within(rejects(pending, (e) => e === reason), 5000, "the abort");
  },
});

Deno.test("a relay that accepts and never greets fails the dial with TIMEOUT within the timeout", async () => {
  await using fake = localService(async (conn) => {
    await readAll(conn);
  });
  const e = await within(
    rejectsWith(
      connect({ relay: fake.to, name: "x", timeout: 200 }),
      "TIMEOUT",
    ),
    5000,
    "connect",
  );
  ok(/greeting/.test(e.message), e.message);
});

Deno.test("a v2 helper sends HELLO 2 before the relay's greeting, saving a round trip", async () => {
  // This relay greets only once it has heard HELLO 2.
  await using fake = localService(async (conn) => {
    const raw = new Raw(conn);
    if (await raw.line() !== "HELLO 2") return;
    await raw.send("CLIENT\nHELLO 2 0123456789abcdef\n");
    if (await raw.line() !== "pipelined") return;
    await raw.send("CONNECTED\nhi");
    await conn.closeWrite();
    await readAll(conn);
  });
  using conn = await connect({
    relay: fake.to,
    name: "pipelined",
    timeout: 3000,
  });
  strictEqual(new TextDecoder().decode(await readAll(conn)), "hi");
});

Deno.test("a client at the servers' port, and a server at the clients' port, are told which port to use", async () => {
  await using relay = startRelay({ wait: 50 });
  const c = await rejectsWith(
    connect({ relay: relay.server, name: "x" }),
    "PROTOCOL",
  );
  ok(
    c.message.includes(
      `Relay ${relay.server} is the servers' port; clients use the clients' port (default 9010)`,
    ),
    c.message,
  );
  const s = await rejectsWith(
    accept({ relay: relay.client, name: "x" }),
    "PROTOCOL",
  );
  ok(
    s.message.includes(
      `Relay ${relay.client} is the clients' port; servers use the servers' port (default 8010)`,
    ),
    s.message,
  );
  // a listener at the wrong port fails for good instead of retrying
  await using listener = listen({ relay: relay.client, name: "x" });
  await rejectsWith(listener.ready, "PROTOCOL", /servers' port/);
  strictEqual(listener.state, "failed");
  await until(() => relay.stats().connections === 0, "connections at 0");
});

Deno.test("every helper takes the relay as a Deno.NetAddr or { hostname, port }", async () => {
  await using relay = startRelay({ wait: 50 });
  await reserve({ relay: relay.serverAddr, name: "addr" });
  await using listener = listen({
    relay: { hostname: "127.0.0.1", port: relay.serverAddr.port },
    name: "addr",
    pool: 1,
  });
  await listener.ready;
  using c = await connect({ relay: relay.clientAddr, name: "addr" });
  using s = await listener.accept();
  await sendAndClose(c, s, "by address");
  await release({ relay: relay.serverAddr, name: "addr" });
});

Deno.test("a bad relay address is a TypeError or RangeError at once, listen() included", async () => {
  const bad = [
    { relay: "host:99999", error: TypeError },
    { relay: "127.0.0.1:0", error: RangeError },
    { relay: { hostname: "127.0.0.1", port: 70000 }, error: RangeError },
    { relay: { hostname: "127.0.0.1", port: 1.5 }, error: RangeError },
    { relay: { port: 1 }, error: TypeError },
    { relay: 8010, error: TypeError },
  ];
  for (const { relay, error } of bad) {
    // deno-lint-ignore no-explicit-any
    const options = { relay, name: "x" } as any;
    await rejects(connect(options), error, JSON.stringify(relay));
    ok(
      (() => {
        try {
          listen(options);
        } catch (e) {
          return e instanceof error;
        }
      })(),
      `listen(${JSON.stringify(relay)})`,
    );
  }
});
