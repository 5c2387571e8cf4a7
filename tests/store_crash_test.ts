// The embedded credentials store across processes: other processes writing
// the same store, kill -9 in the middle of a change, and the lock a dead or a
// live process holds.

import {
  deepStrictEqual as assertEquals,
  ok,
  rejects,
} from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type NameRecord, NameStore } from "../engine/_store.ts";
import { tempDir, until } from "./_helpers.ts";
import { Proc, run } from "./_proc.ts";

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

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const gone = new Deno.Command(Deno.execPath(), {
    args: ["eval", ""],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await gone.status;
  return gone.pid;
}

/** `relay.ts names args --data dir`, run to the end. */
const names = (dir: string, ...args: string[]) =>
  run("relay.ts", "names", ...args, "--data", dir);

/** The secrets in `dir`'s names.json, by name. */
async function secrets(dir: string): Promise<Record<string, string>> {
  const file = JSON.parse(await Deno.readTextFile(join(dir, "names.json")));
  return Object.fromEntries(
    Object.entries(file.names).map(([n, r]) => [n, (r as NameRecord).secret]),
  );
}

Deno.test("a lock file left by a dead process is taken over at once, and every acknowledged name is kept", async () => {
  await using tmp = await tempDir("store_test_");
  const store = await NameStore.open(tmp.dir);
  await store.add("first");
  await store.add("second", { private: true });
  const before = await secrets(tmp.dir);
  // What a `names add` killed with -9 leaves: its pid and the time, just now.
  const lock = join(tmp.dir, "names.lock");
  await Deno.writeTextFile(
    lock,
    `${await deadPid()} ${new Date().toISOString()}\n`,
  );
  const added = await names(tmp.dir, "add", "third");
  assertEquals(added.code, 0, added.stderr); // not "Timed out ... lock"
  ok(/^secret: [0-9a-f]{64}$/m.test(added.stdout), added.stdout);
  await store.add("fourth"); // and in this process too
  const after = await secrets(tmp.dir);
  assertEquals(Object.keys(after), ["first", "fourth", "second", "third"]);
  for (const [name, secret] of Object.entries(before)) {
    assertEquals(after[name], secret, `${name} is kept`);
  }
  if (posix) await rejects(Deno.stat(lock), Deno.errors.NotFound);
});

Deno.test({
  name:
    "a lock held by a live process is waited for, and taken at once when that process is killed -9",
  ignore: !posix,
  fn: async () => {
    await using tmp = await tempDir("store_test_");
    const store = await NameStore.open(tmp.dir);
    const kept = await store.add("kept");
    // A process in the middle of a change: it holds the store's lock (an OS
    // lock on names.lock, as NameStore takes it) and never lets go.
    const holder = child(
      tmp.dir,
      `const file = await Deno.open(dir + "/names.lock",
         { read: true, write: true, create: true });
       if (!await file.tryLock(true)) throw new Error("not locked");
       await file.write(new TextEncoder().encode(Deno.pid + " now\\n"));
       console.log("held");
       setInterval(() => {}, 1000);`,
    );
    const out = proc(holder);
    try {
      await until(
        () => out.text.includes("held"),
        "the lock to be held",
        20_000,
      );
      const refused = await names(tmp.dir, "add", "web");
      assertEquals(refused.code, 1, refused.stderr);
      const why = `error: Timed out after 5 s waiting for the lock ${
        join(tmp.dir, "names.lock")
      }: process ${holder.pid} holds it\n`;
      assertEquals(refused.stderr, why);
      assertEquals(refused.stdout, "");
      assertEquals(await secrets(tmp.dir), { kept: kept.secret });
      // Another add waits for the holder, which dies with the lock held.
      await using waiting = Proc.deno(
        "relay.ts",
        ["names", "add", "web", "--data", tmp.dir],
      );
      await new Promise((r) => setTimeout(r, 500));
      holder.kill("SIGKILL");
      assertEquals((await waiting.status()).code, 0, waiting.err);
      const secret = /^secret: ([0-9a-f]{64})$/m.exec(waiting.out)?.[1];
      assertEquals(await secrets(tmp.dir), { kept: kept.secret, web: secret });
    } finally {
      try {
        holder.kill("SIGKILL");
      } catch { /* killed already */ }
      await holder.status;
      await out.done;
    }
  },
});

/** A child's stdout collected as text, as it comes. */
function proc(c: Deno.ChildProcess): { text: string; done: Promise<void> } {
  const out = { text: "", done: Promise.resolve() };
  out.done = (async () => {
    for await (const t of c.stdout.pipeThrough(new TextDecoderStream())) {
      out.text += t;
    }
  })();
  return out;
}

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
    // The lock left by the kill (if any) is the only leftover, besides
    // perhaps a temporary file; the next change takes the lock at once and
    // cleans up.
    const files = async () =>
      (await Array.fromAsync(Deno.readDir(tmp.dir))).map((e) => e.name).sort();
    const left = await files();
    ok(left.every((n) => /^names\.(json|lock|json\.tmp-[0-9a-f]+)$/.test(n)));
    const late = await store.add("after-the-kill");
    assertEquals((await NameStore.open(tmp.dir)).get("after-the-kill"), late);
    if (posix) assertEquals(await files(), ["names.json"]);
  });
}
