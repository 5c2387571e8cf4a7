// The embedded credentials store: real files in temporary directories, other
// instances and other processes writing the same store, and kill -9 mid-write.

import {
  deepStrictEqual as assertEquals,
  ok,
  rejects,
  throws,
} from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NameStore } from "../engine/_store.ts";
import { tempDir, until } from "./_helpers.ts";

const STORE = new URL("../engine/_store.ts", import.meta.url).href;
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const posix = Deno.build.os !== "windows";

/** A `deno eval` child running `code` with `NameStore` and `dir` in scope. */
function child(dir: string, code: string): Deno.ChildProcess {
  const script = `import { NameStore } from ${JSON.stringify(STORE)};\n` +
    `const dir = ${JSON.stringify(dir)};\n${code}`;
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    cwd: ROOT,
    env: { RUST_BACKTRACE: "0", DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

Deno.test("add, get and remove work and persist across open()", async () => {
  await using tmp = await tempDir("store_test_");
  const dir = join(tmp.dir, "store");
  const store = await NameStore.open(dir);
  assertEquals(store.path, join(dir, "names.json"));
  assertEquals(store.names(), []);
  const web = await store.add("web");
  ok(/^[0-9a-f]{64}$/.test(web.secret));
  ok(!("clientKey" in web));
  ok(!Number.isNaN(Date.parse(web.created)));
  await store.add("db");
  await store.add("api");
  assertEquals(store.get("web"), web);
  assertEquals(store.get("nope"), undefined);
  assertEquals(store.names(), ["api", "db", "web"]);
  assertEquals(await store.remove("db"), true);
  assertEquals(await store.remove("db"), false);
  assertEquals(store.names(), ["api", "web"]);

  const again = await NameStore.open(dir);
  assertEquals(again.names(), ["api", "web"]);
  assertEquals(again.get("web"), web);
  const file = JSON.parse(await Deno.readTextFile(store.path));
  assertEquals(file.version, 1);
  assertEquals(Object.keys(file.names), ["api", "web"]);
  assertEquals(file.names.web, web);
  ok((await Deno.readTextFile(store.path)).includes('\n  "names": {\n'));
  const left = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name);
  assertEquals(left, ["names.json"]); // no lock, no temporary file
});

Deno.test("a private add has a clientKey distinct from its secret", async () => {
  await using tmp = await tempDir("store_test_");
  const store = await NameStore.open(tmp.dir);
  const record = await store.add("secret-place", { private: true });
  ok(/^[0-9a-f]{64}$/.test(record.clientKey ?? ""));
  ok(record.clientKey !== record.secret);
  const again = await NameStore.open(tmp.dir);
  assertEquals(again.get("secret-place")?.clientKey, record.clientKey);
});

Deno.test("adding an existing name throws RangeError unless replace", async () => {
  await using tmp = await tempDir("store_test_");
  const store = await NameStore.open(tmp.dir);
  const first = await store.add("web");
  await rejects(store.add("web"), {
    name: "RangeError",
    message: "Name web exists",
  });
  assertEquals(store.get("web"), first);
  const second = await store.add("web", { replace: true, private: true });
  ok(second.secret !== first.secret);
  ok(second.clientKey);
  assertEquals((await NameStore.open(tmp.dir)).get("web"), second);
});

Deno.test("bad names throw RangeError and change nothing", async () => {
  await using tmp = await tempDir("store_test_");
  const store = await NameStore.open(tmp.dir);
  const bad = ["", "a b", " web", "tab\t", "new\nline", "é", "del\x7f"];
  for (const name of [...bad, "x".repeat(201)]) {
    throws(() => store.add(name), RangeError, JSON.stringify(name));
    throws(() => store.remove(name), RangeError, JSON.stringify(name));
  }
  await store.add("x".repeat(200));
  await store.add("!~{}[]\"'\\");
  await store.add("__proto__");
  const again = await NameStore.open(tmp.dir);
  assertEquals(again.names(), ["!~{}[]\"'\\", "__proto__", "x".repeat(200)]);
  ok(again.get("__proto__")?.secret);
});

Deno.test({
  name: "the file is mode 0600 and a created directory mode 0700",
  ignore: !posix,
  fn: async () => {
    await using tmp = await tempDir("store_test_");
    const dir = join(tmp.dir, "deep", "store");
    const store = await NameStore.open(dir);
    assertEquals((await Deno.stat(dir)).mode! & 0o777, 0o700);
    await store.add("web");
    assertEquals((await Deno.stat(store.path)).mode! & 0o777, 0o600);
    await store.add("db");
    assertEquals((await Deno.stat(store.path)).mode! & 0o777, 0o600);
  },
});

Deno.test("a corrupt file makes reload() throw and keeps the old content", async () => {
  await using tmp = await tempDir("store_test_");
  const store = await NameStore.open(tmp.dir);
  const web = await store.add("web");
  const bad = [
    '{"version": 1, "names": {"web": ',
    '{"version": 2, "names": {}}',
    '{"version": 1, "names": {"web": {"created": "x"}}}',
    '{"version": 1, "names": {"a b": {"secret": "s", "created": "x"}}}',
    "",
  ];
  for (const text of bad) {
    await Deno.writeTextFile(store.path, text);
    await rejects(store.reload(), /Corrupt name store/, text);
    assertEquals(store.names(), ["web"]);
    assertEquals(store.get("web"), web);
    await rejects(NameStore.open(tmp.dir), /Corrupt name store/);
    await rejects(store.add("db"), /Corrupt name store/); // not overwritten
    assertEquals(await Deno.readTextFile(store.path), text);
  }
});

Deno.test("watch() reports a change made by another instance", async () => {
  await using tmp = await tempDir("store_test_");
  const store = await NameStore.open(tmp.dir);
  await store.add("first");
  let changes = 0;
  {
    using _watching = store.watch(() => changes++);
    const other = await NameStore.open(tmp.dir);
    await other.add("web");
    await until(() => changes > 0, "the change to be reported", 5000);
    assertEquals(store.names(), ["first", "web"]);
    assertEquals(store.get("web"), other.get("web"));
    const seen = changes;
    await other.remove("first");
    await until(() => changes > seen, "the removal to be reported", 5000);
    assertEquals(store.names(), ["web"]);
  }
  const seen = changes;
  await (await NameStore.open(tmp.dir)).add("late");
  await new Promise((r) => setTimeout(r, 300));
  assertEquals(changes, seen); // disposed: no more calls
});

Deno.test("two processes adding 20 names each at once lose none", async () => {
  await using tmp = await tempDir("store_test_");
  const dir = join(tmp.dir, "store");
  await NameStore.open(dir);
  // Each child says it is ready, then all start together on "go".
  const sync = (file: string) => JSON.stringify(join(tmp.dir, file));
  const adder = (prefix: string) =>
    child(
      dir,
      `const store = await NameStore.open(dir);
       await Deno.writeTextFile(${sync(`ready-${prefix}`)}, "");
       while (!await Deno.stat(${sync("go")}).catch(() => null)) {
         await new Promise((r) => setTimeout(r, 1));
       }
       for (let i = 0; i < 20; i++) await store.add("${prefix}" + i);`,
    );
  const children = [adder("a"), adder("b")];
  const results = Promise.all(children.map((c) => c.output()));
  const ready = async (p: string) =>
    !!await Deno.stat(join(tmp.dir, `ready-${p}`)).catch(() => null);
  while (!(await ready("a") && await ready("b"))) {
    await new Promise((r) => setTimeout(r, 5));
  }
  await Deno.writeTextFile(join(tmp.dir, "go"), "");
  for (const r of await results) assertEquals(r.code, 0);
  const names = (await NameStore.open(dir)).names();
  assertEquals(names.length, 40);
  for (let i = 0; i < 20; i++) {
    ok(names.includes(`a${i}`) && names.includes(`b${i}`), `a${i}, b${i}`);
  }
});

for (const killAt of [25, 30, 37]) {
  Deno.test(`kill -9 after ${killAt} acknowledged changes keeps every one of them`, async () => {
    await using tmp = await tempDir("store_test_");
    // A big file (~1 MB) makes each write long enough for kills to land in it.
    const ballast = Object.fromEntries(
      Array.from({ length: 5000 }, (_, i) => [
        `ballast${i}`,
        { secret: "0".repeat(64), clientKey: "1".repeat(64), created: "x" },
      ]),
    );
    const file = join(tmp.dir, "names.json");
    await Deno.writeTextFile(
      file,
      JSON.stringify({ version: 1, names: ballast }),
    );
    // "+n<i>" once add() resolved, "-n<i>" once remove() resolved.
    const proc = child(
      tmp.dir,
      `const store = await NameStore.open(dir);
       for (let i = 0; ; i++) {
         await store.add("n" + i, { private: i % 2 === 1 });
         console.log("+n" + i);
         if (i % 3 === 2) {
           await store.remove("n" + (i - 1));
           console.log("-n" + (i - 1));
         }
       }`,
    );
    const acknowledged: string[] = [];
    let buffer = "";
    let killed = false;
    const lines = proc.stdout.pipeThrough(new TextDecoderStream());
    for await (const chunk of lines) {
      buffer += chunk;
      const done = buffer.split("\n");
      buffer = done.pop()!;
      acknowledged.push(...done);
      if (!killed && acknowledged.length >= killAt) {
        killed = true; // a little later, to land anywhere in the next change
        setTimeout(() => proc.kill("SIGKILL"), Math.random() * 20);
      }
    }
    const status = await proc.status;
    ok(killed, "the child was killed (it printed enough)");
    assertEquals(status.signal, posix ? "SIGKILL" : null);
    const store = await NameStore.open(tmp.dir); // parses
    assertEquals(
      store.names().filter((n) => n.startsWith("ballast")).length,
      5000,
    );
    const added = acknowledged.filter((a) => a[0] === "+").map((a) =>
      a.slice(1)
    );
    const removed = acknowledged.filter((a) => a[0] === "-").map((a) =>
      a.slice(1)
    );
    ok(added.length >= 15);
    for (const name of removed) ok(!store.get(name), `${name} stays removed`);
    for (const name of added) {
      const i = Number(name.slice(1));
      if (i % 3 === 1) continue; // may be being removed when killed
      ok(store.get(name)?.secret, `${name} is kept`);
      assertEquals(!!store.get(name)?.clientKey, i % 2 === 1);
    }
    // The store still works: the lock left by the kill (if any) is the only
    // leftover, besides perhaps a temporary file.
    const left = (await Array.fromAsync(Deno.readDir(tmp.dir))).map((e) =>
      e.name
    );
    ok(left.every((n) => /^names\.(json|lock|json\.tmp-[0-9a-f]+)$/.test(n)));
  });
}
