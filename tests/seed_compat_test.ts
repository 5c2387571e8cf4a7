// Wire compatibility with the seed, both ways, against Ruby stand-ins written
// from the spec (tests/fixtures/*.rb): the seed's helpers against our relay,
// and our helpers and executables against the seed's relay.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { accept, connect, RelayError, reserve } from "../mod.ts";
import {
  bytes,
  type LocalService,
  localService,
  rejectsWith,
  startRelay,
  type TestRelay,
} from "./_helpers.ts";
import { clientTs, Proc, serverTs } from "./_proc.ts";
import { readLineExact } from "../protocol/_wire.ts";

const FIXTURES = new URL("fixtures/", import.meta.url);

function hasRuby(): boolean {
  try {
    return new Deno.Command("ruby", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .outputSync().success;
  } catch {
    return false;
  }
}
const NO_RUBY = !hasRuby();
if (NO_RUBY) {
  console.log(
    "seed compatibility tests skipped: `ruby` is not on PATH (apt-get install ruby)",
  );
}

/** A Ruby stand-in from tests/fixtures/ with `args`, and `env` added. */
function ruby(
  fixture: string,
  args: (string | number)[],
  env: Record<string, string> = {},
): Proc {
  return new Proc("ruby", [
    new URL(fixture, FIXTURES).pathname,
    ...args.map(String),
  ], { env });
}

/** seed_server.rb serving `name` through `relay` (run on until stopped). */
function seedServer(
  relay: TestRelay,
  name: string,
  env: Record<string, string> = {},
): Proc {
  return ruby("seed_server.rb", [
    "127.0.0.1",
    relay.clientAddr.port,
    relay.serverAddr.port,
    name,
  ], env);
}

/** seed_client.rb against `relay`, to the end. */
async function seedClient(
  relay: TestRelay,
  name: string,
  message: string,
  env: Record<string, string> = {},
) {
  await using p = ruby("seed_client.rb", [
    "127.0.0.1",
    relay.clientAddr.port,
    relay.serverAddr.port,
    name,
    message,
  ], env);
  const { code } = await p.status();
  return { code, out: p.out, err: p.err };
}

/** The Ruby seed relay on free ports; disposing of it kills it. */
async function seedRelay() {
  const proc = ruby("seed_relay.rb", [0, 0]);
  const [, client, server] = await proc.wait(/ready (\d+) (\d+)/);
  return {
    proc,
    client: `127.0.0.1:${client}`,
    server: `127.0.0.1:${server}`,
    [Symbol.asyncDispose]: () => proc[Symbol.asyncDispose](),
  };
}

/**
 * A local line service: answers each line with "echo:" + the line. The seed
 * relay closes both sides when one ends, so an exchange through it must not
 * rely on a half-close.
 */
function lineService(): LocalService {
  return localService(async (conn) => {
    for (;;) {
      const l = await readLineExact(conn);
      if (l === null) return;
      await conn.write(bytes(`echo:${l}\n`));
    }
  });
}

/** Connects, retrying while the seed relay has no server parked yet. */
async function connectWhenParked(
  relay: string,
  name: string,
): Promise<Deno.TcpConn> {
  const end = Date.now() + 10_000;
  for (;;) {
    try {
      return await connect({ relay, name });
    } catch (e) {
      const early = e instanceof RelayError &&
        (e.code === "NOEXIST" || e.code === "OFFLINE");
      if (!early || Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: NO_RUBY, fn });

// --- The seed's helpers against our relay ---

test("seed's server helper reserves (our relay answers OK) and serves the seed's client, half-close carried", async () => {
  await using relay = startRelay();
  await using server = seedServer(relay, "seed-echo");
  await server.wait(/ready/);
  const client = await seedClient(
    relay,
    "seed-echo",
    "hello through the relay",
  );
  assertEquals(client, {
    code: 0,
    out: "echo:hello through the relay",
    err: "",
  });
  assertEquals((await server.status()).code, 0, server.err);
  // The seed's stop (RELEASE) took the name back.
  assertEquals(relay.stats().parked, {});
  await rejectsWith(
    connect({ relay: relay.client, name: "seed-echo" }),
    "NOEXIST",
  );
});

test("seed's helpers exchange lines without half-close through our relay", async () => {
  await using relay = startRelay();
  await using server = seedServer(relay, "seed-line", {
    SEED_SERVER_LINE: "1",
  });
  await server.wait(/ready/);
  const client = await seedClient(relay, "seed-line", "one line", {
    SEED_CLIENT_NO_HALF_CLOSE: "1",
  });
  assertEquals(client, { code: 0, out: "echo:one line\n", err: "" });
  assertEquals((await server.status()).code, 0, server.err);
});

test("seed's client hears NOEXIST for an unknown name and OFFLINE for a reserved name with no server", async () => {
  await using relay = startRelay({ wait: 50 });
  const unknown = await seedClient(relay, "nobody", "x");
  assertEquals(unknown.code, 1);
  ok(unknown.err.includes("NOEXIST"), unknown.err);
  await reserve({ relay: relay.server, name: "away" });
  const offline = await seedClient(relay, "away", "x");
  assertEquals(offline.code, 1);
  ok(offline.err.includes("OFFLINE"), offline.err);
});

test("seed's server helper hears USED for a name reserved already", async () => {
  await using relay = startRelay();
  await reserve({ relay: relay.server, name: "taken" });
  await using server = seedServer(relay, "taken");
  assertEquals((await server.status()).code, 1);
  ok(server.err.includes("USED"), server.err);
});

// --- Our helpers and executables against the seed's relay ---

test("our accept() and connect() pair through the seed relay", async () => {
  await using seed = await seedRelay();
  const served = accept({ relay: seed.server, name: "ours" });
  using c = await connectWhenParked(seed.client, "ours");
  using s = await served;
  await c.write(bytes("ping\n"));
  assertEquals(await readLineExact(s), "ping");
  await s.write(bytes("pong\n"));
  assertEquals(await readLineExact(c), "pong");
});

test("our reserve() succeeds on the seed relay's silent close, then hears USED", async () => {
  await using seed = await seedRelay();
  await reserve({ relay: seed.server, name: "mine" });
  await rejectsWith(
    reserve({ relay: seed.server, name: "mine" }),
    "USED",
  );
  await rejectsWith(
    connect({ relay: seed.client, name: "mine" }),
    "OFFLINE",
  );
});

test("our connect() to an unknown name at the seed relay throws RelayError NOEXIST", async () => {
  await using seed = await seedRelay();
  await rejectsWith(
    connect({ relay: seed.client, name: "unknown" }),
    "NOEXIST",
    /unknown/,
  );
});

test("server.ts and client.ts --stdio exchange lines through the seed relay", async () => {
  await using seed = await seedRelay();
  await using lines = lineService();
  await using server = serverTs(seed.server, "lines", lines.to);
  // A probe through the seed relay: server.ts is parked and answers.
  {
    using probe = await connectWhenParked(seed.client, "lines");
    await probe.write(bytes("probe\n"));
    assertEquals(await readLineExact(probe), "echo:probe");
  }
  // client.ts may still meet the seed's OFFLINE while server.ts re-parks.
  const end = Date.now() + 10_000;
  for (;;) {
    await using client = clientTs(seed.client, "lines", "--stdio");
    await client.write("over stdio\n").catch(() => {});
    while (!client.out.includes("\n") && !client.exited) {
      await new Promise((r) => setTimeout(r, 10));
    }
    if (!client.exited || client.out) {
      await client.closeStdin();
      assertEquals((await client.status()).code, 0, client.err);
      assertEquals(client.out, "echo:over stdio\n");
      break;
    }
    ok(
      /OFFLINE|No server|No name/.test(client.err) && Date.now() < end,
      client.err,
    );
  }
  ok(server.err.includes("lines"), server.err);
});

test("printf 'hi\\n' | client.ts --stdio through the seed relay prints hi: the client lingers instead of half-closing", async () => {
  await using seed = await seedRelay();
  // an echo of the bytes as they come, as `socat EXEC:cat` would be
  await using echo = localService(async (conn) => {
    const buf = new Uint8Array(1024);
    for (let n; (n = await conn.read(buf)) !== null;) {
      await conn.write(buf.subarray(0, n));
    }
  });
  await using server = serverTs(seed.server, "hi", echo.to);
  await server.waitErr(/Parked at relay/);
  const end = Date.now() + 10_000;
  for (;;) {
    await using client = clientTs(seed.client, "hi", "--stdio");
    await client.write("hi\n");
    await client.closeStdin(); // at once, as printf's pipe does
    const { code } = await client.status();
    if (/OFFLINE|No server|No name/.test(client.err) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 50)); // server.ts re-parks
      continue;
    }
    assertEquals(client.out, "hi\n", client.err);
    assertEquals(code, 0, client.err);
    break;
  }
});
