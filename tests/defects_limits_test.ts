// Open registration bounded (issue 8, item 3): names it makes count toward
// maxNames, the owner's RELEASE frees the name, a per-address hourly rate, a
// registration racing a v1 reservation of the same name; and refusals at
// admission in words each version knows (item 8): a v1 client hears NOEXIST,
// a v1 server nothing, a v2 peer ERROR LIMIT after HELLO.

import {
  deepStrictEqual as assertEquals,
  ok,
  strictEqual,
} from "node:assert/strict";
import { join } from "node:path";
import { accept, connect, release, reserve } from "../mod.ts";
import { NameStore } from "../engine/_store.ts";
import {
  ask,
  park,
  Raw,
  rejectsWith,
  startRelay,
  tempDir,
  type TestRelay,
  until,
} from "./_helpers.ts";
import { within } from "./_hostile.ts";
import { Proc } from "./_proc.ts";

function hasRuby(): boolean {
  try {
    return new Deno.Command("ruby", { args: ["--version"] }).outputSync()
      .success;
  } catch {
    return false;
  }
}
const NO_RUBY = !hasRuby();

Deno.test("open registration: the owner's RELEASE frees the name, and registered names count toward maxNames", async () => {
  await using relay = startRelay({
    openRegistration: true,
    limits: { maxNames: 5 },
  });
  const at = { relay: relay.server };
  for (let i = 0; i < 12; i++) {
    const { secret } = await reserve({ ...at, name: `loop${i % 2}` });
    ok(secret, `registration ${i} got no secret`);
    await release({ ...at, name: `loop${i % 2}`, secret });
  }
  for (const name of ["a", "b", "c", "d"]) {
    ok((await reserve({ ...at, name })).secret, name);
  }
  // reservations nobody owns share the same bound
  using v1 = await Raw.open(relay.serverAddr.port);
  await v1.send("RESERVE\nunowned\n");
  strictEqual(await v1.text(), "SERVER\nOK\n");
  await rejectsWith(reserve({ ...at, name: "e" }), "LIMIT", /too many names/);
  using v1b = await Raw.open(relay.serverAddr.port);
  await v1b.send("CONNECT\nother\n");
  ok((await v1b.text()).startsWith("SERVER\nERROR LIMIT too many names"));
});

Deno.test("open registration: an address registers at most maxRegistrationsPerIp names an hour", async () => {
  await using relay = startRelay({
    openRegistration: true,
    limits: { maxRegistrationsPerIp: 3, limitLoopback: true },
  });
  for (const name of ["r1", "r2", "r3"]) {
    await reserve({ relay: relay.server, name });
  }
  await rejectsWith(
    reserve({ relay: relay.server, name: "r4" }),
    "LIMIT",
    /registered from 127\.0\.0\.1/,
  );
  // loopback is held to it only with limitLoopback
  await using local = startRelay({
    openRegistration: true,
    limits: { maxRegistrationsPerIp: 3 },
  });
  for (let i = 0; i < 5; i++) {
    await reserve({ relay: local.server, name: `l${i}` });
  }
});

Deno.test("open registration with a store: the owner's RELEASE removes the name from names.json", async () => {
  await using tmp = await tempDir("tcp-relay-defects-");
  const store = await NameStore.open(tmp.dir);
  await using relay = startRelay({ names: store, openRegistration: true });
  const { secret } = await reserve({ relay: relay.server, name: "gone" });
  assertEquals(store.names(), ["gone"]);
  await release({ relay: relay.server, name: "gone", secret });
  assertEquals(store.names(), []);
  const file = JSON.parse(await Deno.readTextFile(join(tmp.dir, "names.json")));
  assertEquals(file.names, {});
});

Deno.test("a v1 server parked while its name was being registered is closed once the name is owned", async () => {
  await using tmp = await tempDir("tcp-relay-defects-");
  const store = await NameStore.open(tmp.dir);
  await using relay = startRelay({
    names: store,
    openRegistration: true,
    wait: 0,
  });
  // the store's write waits while the test holds its lock
  using lock = await Deno.open(join(tmp.dir, "names.lock"), {
    write: true,
    create: true,
  });
  await lock.lock(true);
  const registering = reserve({ relay: relay.server, name: "x" });
  await new Promise((r) => setTimeout(r, 500)); // the RESERVE is waiting on the lock
  using squatter = await park(relay, "x");
  await until(() => relay.stats().parked.x === 1, "the v1 server to park");
  await lock.unlock();
  const { secret } = await registering;
  ok(secret);
  strictEqual(await within(squatter.text(), 5000, "closed"), "");
  using c = await ask(relay, "x");
  strictEqual(await within(c.text(), 5000, "an answer"), "OFFLINE\n");
});

/** A relay whose loopback address has its 2 connections taken (a parked server and a silent one). */
async function fullRelay(): Promise<
  { relay: TestRelay; held: Raw[] } & AsyncDisposable
> {
  const relay = startRelay({ limits: { maxPerIp: 2, limitLoopback: true } });
  const server = await park(relay, "n");
  await until(() => relay.stats().parked.n === 1, "the server to park");
  const silent = await Raw.open(relay.clientAddr.port);
  strictEqual(await silent.line(), "CLIENT");
  return {
    relay,
    held: [server, silent],
    async [Symbol.asyncDispose]() {
      for (const r of [server, silent]) r.close();
      await relay.shutdown();
    },
  };
}

Deno.test({
  name:
    "refused at admission, the seed's v1 client hears NOEXIST, not a line v1 does not have",
  ignore: NO_RUBY,
  fn: async () => {
    await using full = await fullRelay();
    const { relay } = full;
    const script = new URL("fixtures/seed_client.rb", import.meta.url).pathname;
    await using seed = new Proc("ruby", [
      script,
      "127.0.0.1",
      String(relay.clientAddr.port),
      String(relay.serverAddr.port),
      "n",
      "hello",
    ]);
    const { code } = await seed.status();
    strictEqual(code, 1);
    ok(/^NOEXIST \(name n\)$/m.test(seed.err), seed.err);
  },
});

Deno.test("refused at admission, a v2 peer hears ERROR LIMIT after HELLO, a v1 server nothing, and none counts toward the limit", async () => {
  await using full = await fullRelay();
  const { relay } = full;
  await rejectsWith(
    connect({ relay: relay.client, name: "n" }),
    "LIMIT",
    /too many connections from 127\.0\.0\.1/,
  );
  await rejectsWith(accept({ relay: relay.server, name: "n" }), "LIMIT");
  using raw = await Raw.open(relay.clientAddr.port);
  strictEqual(await raw.line(), "CLIENT");
  await raw.send("HELLO 2\n");
  ok(/^HELLO 2 [0-9a-f]{32}$/.test((await raw.line())!));
  strictEqual(
    await raw.text(),
    "ERROR LIMIT too many connections from 127.0.0.1\n",
  );
  using v1 = await Raw.open(relay.serverAddr.port);
  await v1.send("CONNECT\nn\n");
  strictEqual(await v1.text(), "SERVER\n");
  // a refused peer still in its first line does not hold a place
  using slow = await Raw.open(relay.clientAddr.port);
  strictEqual(await slow.line(), "CLIENT");
  full.held[1].close();
  await until(() => relay.stats().handshaking === 0, "the silent one to go");
  using c = await ask(relay, "n");
  strictEqual(await c.line(), "CONNECTED");
});
