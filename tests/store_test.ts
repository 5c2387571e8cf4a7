// The embedded credentials store in one process: real files in temporary
// directories, several instances, corrupt files and watch().

import {
  deepStrictEqual as assertEquals,
  ok,
  rejects,
  throws,
} from "node:assert/strict";
import { join } from "node:path";
import { NameStore } from "../engine/_store.ts";
import { tempDir, until } from "./_helpers.ts";

const posix = Deno.build.os !== "windows";

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

Deno.test("a corrupt file makes reload() throw, naming the file and what is wrong, and keeps the old content", async () => {
  await using tmp = await tempDir("store_test_");
  const store = await NameStore.open(tmp.dir);
  const web = await store.add("web");
  const record = '{"secret": "s", "created": "x"}';
  const bad: [string, string][] = [
    ['{"version": 1, "names": {"web": ', "not JSON: "],
    ["", "the file is empty"],
    ["\n", "the file is empty"],
    ["[]", "not a JSON object"],
    ['{"names": {}}', 'no "version": 1'],
    ['{"version": 2, "names": {}}', "version 2, this relay reads version 1"],
    [
      '{"version": "1", "names": {}}',
      'version "1", this relay reads version 1',
    ],
    ['{"version": 1}', '"names" is not an object'],
    ['{"version": 1, "names": []}', '"names" is not an object'],
    [
      '{"version": 1, "names": {"web": 3}}',
      "the record of web is not an object",
    ],
    [
      '{"version": 1, "names": {"web": {"created": "x"}}}',
      'the record of web has no "secret"',
    ],
    [
      '{"version": 1, "names": {"web": {"secret": "", "created": "x"}}}',
      'the record of web has no "secret"',
    ],
    [
      '{"version": 1, "names": {"web": {"secret": "s"}}}',
      'the record of web has no "created"',
    ],
    [
      '{"version": 1, "names": {"web": {"secret": "s", "created": "x", "clientKey": 1}}}',
      'the record of web has a "clientKey" that is not',
    ],
    [`{"version": 1, "names": {"a b": ${record}}}`, 'invalid name "a b": '],
  ];
  for (const [text, why] of bad) {
    await Deno.writeTextFile(store.path, text);
    const message = `Corrupt name store ${store.path}: ${why}`;
    const named = (e: unknown) => {
      ok(
        e instanceof Error && e.message.startsWith(message),
        `${JSON.stringify(text)}: ${e}`,
      );
      return true;
    };
    await rejects(store.reload(), named);
    assertEquals(store.names(), ["web"]);
    assertEquals(store.get("web"), web);
    await rejects(NameStore.open(tmp.dir), named);
    await rejects(store.add("db"), named); // not overwritten
    await rejects(store.remove("web"), named);
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
