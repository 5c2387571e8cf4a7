// The credentials store through the relay's command line: `relay.ts names`,
// a running relay picking up changes (file change, SIGHUP) without dropping
// active pairs, open registration persisted across a restart, and kill -9
// losing no acknowledged registration.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { join } from "node:path";
import { accept, RelayError, reserve } from "../mod.ts";
import {
  bytes,
  helperPair,
  readExactly,
  rejectsWith,
  send,
  sendAndClose,
  tempDir,
} from "./_helpers.ts";
import { relayProc, run } from "./_proc.ts";

const HEX64 = /^[0-9a-f]{64}$/;

/** `relay.ts args` run to the end. */
const relayCli = (...args: string[]) => run("relay.ts", ...args);

/** `relay.ts names args --data dir`, expected to exit 0; its stdout. */
async function names(dir: string, ...args: string[]): Promise<string> {
  const r = await relayCli("names", ...args, "--data", dir);
  assertEquals(r.code, 0, r.stderr);
  return r.stdout;
}

/** The value printed on the line `label: value` of `out`. */
function field(out: string, label: string): string | undefined {
  return new RegExp(`^${label}:\\s*(\\S+)$`, "m").exec(out)?.[1];
}

/** A request and its answer through a pair, each side half-closing. */
async function exchange(
  relay: { server: string; client: string },
  name: string,
  secret?: string,
) {
  const { s, c } = await helperPair(relay, name, secret);
  using _s = s, _c = c;
  await sendAndClose(c, s, "request");
  await sendAndClose(s, c, "answer");
}

Deno.test("names add prints a secret (and with --private a key), list marks private names, remove removes", async () => {
  await using tmp = await tempDir("tcp-relay-names-");
  const added = await names(tmp.dir, "add", "home-ssh");
  const secret = field(added, "secret");
  ok(secret && HEX64.test(secret), added);
  assertEquals(field(added, "key"), undefined);
  const priv = await names(tmp.dir, "add", "nas", "--private");
  const [s2, key] = [field(priv, "secret"), field(priv, "key")];
  ok(s2 && HEX64.test(s2) && key && HEX64.test(key), priv);
  ok(new Set([secret, s2, key]).size === 3, "secrets and key all differ");
  assertEquals(await names(tmp.dir, "list"), "home-ssh\nnas (private)\n");
  assertEquals(
    await names(tmp.dir, "remove", "home-ssh"),
    `Removed home-ssh from ${join(tmp.dir, "names.json")}\n`,
  );
  assertEquals(await names(tmp.dir, "list"), "nas (private)\n");
  const mode = (await Deno.stat(join(tmp.dir, "names.json"))).mode! & 0o777;
  assertEquals(mode.toString(8), "600");
});

Deno.test("names add of an existing name, bad names and a missing --data exit 2 with a clear message", async () => {
  await using tmp = await tempDir("tcp-relay-names-");
  const first = field(await names(tmp.dir, "add", "taken"), "secret");
  const again = await relayCli("names", "add", "taken", "--data", tmp.dir);
  assertEquals(again.code, 2, again.stderr);
  ok(
    again.stderr.startsWith(
      "error: Name taken exists (use --replace to give it a new secret)\n",
    ),
    again.stderr,
  );
  assertEquals(again.stdout, "");
  const bad = await relayCli("names", "add", "a b", "--data", tmp.dir);
  assertEquals(bad.code, 2, bad.stderr);
  ok(/Invalid name/.test(bad.stderr), bad.stderr);
  const noData = await relayCli("names", "add", "other");
  assertEquals(noData.code, 2, noData.stderr);
  ok(/--data/.test(noData.stderr), noData.stderr);
  const missing = await relayCli(
    "names",
    "remove",
    "nobody",
    "--data",
    tmp.dir,
  );
  assertEquals(missing.code, 1, missing.stderr);
  assertEquals(
    missing.stderr,
    `error: no name nobody in ${join(tmp.dir, "names.json")}\n`,
  );
  assertEquals(missing.stdout, "");
  // Nothing of that changed the store.
  const stored = JSON.parse(
    await Deno.readTextFile(join(tmp.dir, "names.json")),
  );
  assertEquals(Object.keys(stored.names), ["taken"]);
  assertEquals(stored.names.taken.secret, first);
});

Deno.test("names add --replace gives an existing name a new secret", async () => {
  await using tmp = await tempDir("tcp-relay-names-");
  const first = field(await names(tmp.dir, "add", "web"), "secret");
  const out = await names(tmp.dir, "add", "web", "--replace", "--private");
  const second = field(out, "secret");
  ok(second && HEX64.test(second) && second !== first, out);
  ok(field(out, "key"), out);
  assertEquals(await names(tmp.dir, "list"), "web (private)\n");
});

Deno.test("names list of a missing or an empty store prints nothing and exits 0, creating nothing", async () => {
  await using tmp = await tempDir("tcp-relay-names-");
  const missing = join(tmp.dir, "not", "there");
  const r = await relayCli("names", "list", "--data", missing);
  assertEquals([r.code, r.stdout, r.stderr], [0, "", ""]);
  assertEquals(await Deno.stat(join(tmp.dir, "not")).catch(() => null), null);
  assertEquals(await names(tmp.dir, "list"), ""); // a folder, no names.json
  await names(tmp.dir, "add", "gone");
  await names(tmp.dir, "remove", "gone");
  assertEquals(await names(tmp.dir, "list"), ""); // a store with no names
});

Deno.test("names on a corrupt names.json exits 1 naming the file and what is wrong, and leaves it as it was", async () => {
  await using tmp = await tempDir("tcp-relay-names-");
  const file = join(tmp.dir, "names.json");
  const cases: [string, string][] = [
    ['{"version": 1, "names": {"web": ', "not JSON: "],
    ["", "the file is empty"],
    ['{"version": 1, "names": {"web": {"created": "x"}}}', "the record of web"],
  ];
  for (const [text, why] of cases) {
    await Deno.writeTextFile(file, text);
    for (const args of [["list"], ["add", "db"], ["remove", "web"]]) {
      const r = await relayCli("names", ...args, "--data", tmp.dir);
      const what = `${args.join(" ")} on ${JSON.stringify(text)}`;
      assertEquals(r.code, 1, `${what}: ${r.stderr}`);
      assertEquals(r.stdout, "", what);
      const line = `error: Corrupt name store ${file}: ${why}`;
      ok(r.stderr.startsWith(line), `${what}: ${r.stderr}`);
      assertEquals(r.stderr.split("\n").length, 2, `one line: ${r.stderr}`);
      assertEquals(await Deno.readTextFile(file), text, what);
    }
  }
});

Deno.test("a running relay picks up a name added by another process, and an active pair on it keeps relaying", async () => {
  await using tmp = await tempDir("tcp-relay-names-");
  await using relay = await relayProc("--data", tmp.dir);
  // An active pair on the name while it is still open to anyone.
  await reserve({ relay: relay.server, name: "home" });
  const { s, c } = await helperPair(relay, "home");
  using _s = s, _c = c;
  await send(c, s, "before");
  const secret = field(await names(tmp.dir, "add", "home"), "secret")!;
  await relay.proc.waitErr(/Credentials reloaded from/);
  // No drop on reload: the pair goes on both ways, half-close included.
  await send(s, c, "after, from the server");
  await send(c, s, "after, from the client");
  await sendAndClose(c, s, "");
  await sendAndClose(s, c, "bye");
  // The name is now owned: its secret is needed to serve it.
  await rejectsWith(accept({ relay: relay.server, name: "home" }), "AUTH");
  await rejectsWith(
    accept({ relay: relay.server, name: "home", secret: "ab".repeat(32) }),
    "AUTH",
  );
  await exchange(relay, "home", secret);
});

Deno.test("SIGHUP makes the relay reload its credentials and it keeps serving", async () => {
  await using tmp = await tempDir("tcp-relay-names-");
  const secret = field(await names(tmp.dir, "add", "hup"), "secret")!;
  await using relay = await relayProc("--data", tmp.dir);
  ok(/1 owned names/.test(relay.proc.err), relay.proc.err);
  relay.proc.kill("SIGHUP");
  await relay.proc.waitErr(/Credentials reloaded(?! from)/);
  ok(!relay.proc.exited, "the relay exited on SIGHUP");
  await exchange(relay, "hup", secret);
  await rejectsWith(accept({ relay: relay.server, name: "hup" }), "AUTH");
});

Deno.test("a running relay keeps its names when names.json turns corrupt, and logs which file and what is wrong", async () => {
  await using tmp = await tempDir("tcp-relay-names-");
  const secret = field(await names(tmp.dir, "add", "kept"), "secret")!;
  await using relay = await relayProc("--data", tmp.dir);
  const file = join(tmp.dir, "names.json");
  await Deno.writeTextFile(file, '{"version": 1, "names": {');
  const why = `Corrupt name store ${file}: not JSON: `;
  await relay.proc.waitErr(new RegExp(`Kept the old names: .*${why}`));
  relay.proc.kill("SIGHUP");
  await relay.proc.waitErr(new RegExp(`Cannot reload credentials: .*${why}`));
  ok(!relay.proc.exited, "the relay exited");
  await rejectsWith(accept({ relay: relay.server, name: "kept" }), "AUTH");
  await exchange(relay, "kept", secret);
});

Deno.test("open registration persists: after a restart the name is still owned by the secret reserve() returned", async () => {
  await using tmp = await tempDir("tcp-relay-names-");
  let secret: string | undefined;
  {
    await using relay = await relayProc(
      ...["--data", tmp.dir, "--open-registration"],
    );
    ({ secret } = await reserve({ relay: relay.server, name: "mine" }));
    ok(secret && HEX64.test(secret), `secret ${secret}`);
    await rejectsWith(reserve({ relay: relay.server, name: "mine" }), "USED");
    relay.proc.kill("SIGTERM");
    assertEquals((await relay.proc.status()).code, 0, relay.proc.err);
  }
  await using relay = await relayProc("--data", tmp.dir);
  await rejectsWith(accept({ relay: relay.server, name: "mine" }), "AUTH");
  await exchange(relay, "mine", secret);
  assertEquals(await names(tmp.dir, "list"), "mine\n");
});

Deno.test("kill -9 during open registrations loses no acknowledged name", async () => {
  await using tmp = await tempDir("tcp-relay-names-");
  await using relay = await relayProc(
    ...["--data", tmp.dir, "--open-registration"],
  );
  const acknowledged = new Map<string, string>();
  const KILL_AFTER = 24;
  const silent: string[] = []; // resolved without a secret: no acknowledgement
  let next = 0, killed = false;
  // Four registrations in flight at a time, so the kill lands mid-write.
  await Promise.all(Array.from({ length: 4 }, async () => {
    for (;;) {
      const name = `k${next++}`;
      try {
        const { secret } = await reserve({
          relay: relay.server,
          name,
          timeout: 5000,
        });
        if (secret) acknowledged.set(name, secret);
        else silent.push(name);
      } catch (e) {
        if (killed && e instanceof RelayError) return; // the relay is gone
        throw e;
      }
      if (acknowledged.size === KILL_AFTER && !killed) {
        killed = true;
        relay.proc.kill("SIGKILL");
      }
    }
  }));
  assertEquals((await relay.proc.status()).signal, "SIGKILL");
  ok(acknowledged.size >= KILL_AFTER, `${acknowledged.size} acknowledged`);
  const listed = new Set((await names(tmp.dir, "list")).trim().split("\n"));
  const lost = [...acknowledged.keys()].filter((n) => !listed.has(n));
  assertEquals(lost, [], `acknowledged but lost: ${lost.join(" ")}`);
  const stored = JSON.parse(
    await Deno.readTextFile(join(tmp.dir, "names.json")),
  ).names;
  for (const [name, secret] of acknowledged) {
    assertEquals(stored[name].secret, secret, `secret of ${name}`);
  }
  // A relay that dies before answering must not look like a success.
  assertEquals(
    silent,
    [],
    "reserve() resolved (no secret, no error) though the relay died before answering",
  );
});

Deno.test("reserve() rejects with CLOSED when a v2 relay closes without answering, instead of resolving", async () => {
  // A v2 relay that reads the request and dies before its answer.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const relay = (async () => {
    using conn = await listener.accept();
    await conn.write(bytes("SERVER\n"));
    await readExactly(conn, "HELLO 2\n".length);
    await conn.write(bytes(`HELLO 2 ${"0".repeat(32)}\n`));
    await readExactly(conn, "RESERVE dies\n".length);
  })();
  try {
    const server = `127.0.0.1:${listener.addr.port}`;
    await rejectsWith(reserve({ relay: server, name: "dies" }), "CLOSED");
  } finally {
    await relay;
    listener.close();
  }
});
