// client.ts --config forwards.toml, against real relay processes: several
// forwards from one process carrying bytes, one whose port is in use failing
// alone, a private name's key from a file, and bad files refused with the
// file, the line and the key.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { join } from "node:path";
import { listen } from "../mod.ts";
import { bytes, freePorts, readAll, tempDir, text } from "./_helpers.ts";
import { Proc, relayProc, run } from "./_proc.ts";

/** `toml` written as forwards.toml in a folder of its own (with `files` beside it). */
async function forwardsFile(
  toml: string,
  files: Record<string, string> = {},
): Promise<AsyncDisposable & { path: string; dir: string }> {
  const tmp = await tempDir("tcp-relay-forwards-");
  const path = join(tmp.dir, "forwards.toml");
  await Deno.writeTextFile(path, toml, { mode: 0o600 });
  for (const [name, content] of Object.entries(files)) {
    await Deno.writeTextFile(join(tmp.dir, name), content, { mode: 0o600 });
  }
  return {
    path,
    dir: tmp.dir,
    [Symbol.asyncDispose]: tmp[Symbol.asyncDispose],
  };
}

/** client.ts --config `path`, left running. */
function forwardsProc(path: string): Proc {
  return Proc.deno("client.ts", ["--config", path]);
}

/** Serves `name` at `relay` (a servers' port) with "NAME:" + what each client sent. */
function tagging(relay: string, name: string, secret?: string) {
  const listener = listen({ relay, name, secret, pool: 1 });
  const done = (async () => {
    for await (const conn of listener) {
      readAll(conn).then((got) => conn.write(bytes(`${name}:${text(got)}`)))
        .catch(() => {}).finally(() => conn.close());
    }
  })();
  return {
    listener,
    async [Symbol.asyncDispose]() {
      listener.close();
      await done;
      await listener[Symbol.asyncDispose]();
    },
  };
}

/** One request through the local port `port`: the answer. */
async function through(port: number, msg: string): Promise<string> {
  using local = await Deno.connect({ hostname: "127.0.0.1", port });
  await local.write(bytes(msg));
  await local.closeWrite();
  return text(await readAll(local));
}

Deno.test("client.ts --config runs two forwards from one process, both carrying bytes", async () => {
  await using relay = await relayProc();
  await using one = tagging(relay.server, "one");
  await using two = tagging(relay.server, "two");
  await one.listener.ready;
  await two.listener.ready;
  const [p1, p2] = freePorts(2);
  await using file = await forwardsFile(
    `relay = "${relay.client}"

[[forward]]
name = "one"
listen = ${p1}

[[forward]]
name = "two"
listen = "127.0.0.1:${p2}"
`,
  );
  await using proc = forwardsProc(file.path);
  await proc.waitErr(new RegExp(`Forwarding .*${p1}.* to "one"`));
  await proc.waitErr(new RegExp(`Forwarding .*${p2}.* to "two"`));
  assertEquals(await through(p1, "a"), "one:a");
  assertEquals(await through(p2, "b"), "two:b");
  assertEquals(await through(p1, "c"), "one:c");
  proc.kill("SIGTERM");
  assertEquals((await proc.status()).code, 0);
});

Deno.test("client.ts --config: a forward whose port is in use is logged by name; the other keeps working", async () => {
  await using relay = await relayProc();
  await using ok2 = tagging(relay.server, "free");
  await ok2.listener.ready;
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [free] = freePorts(1);
  await using file = await forwardsFile(
    `relay = "${relay.client}"

[[forward]]
name = "busy"
listen = ${taken.addr.port}

[[forward]]
name = "free"
listen = ${free}
`,
  );
  await using proc = forwardsProc(file.path);
  await proc.waitErr(
    new RegExp(
      `Forward "busy" stopped: .*Cannot listen on 127\\.0\\.0\\.1:${taken.addr.port}: address in use`,
    ),
  );
  await proc.waitErr(/Forwarding .* to "free"/);
  assertEquals(await through(free, "still"), "free:still");
  ok(!proc.exited, proc.err);
});

Deno.test("client.ts --config exits 1 when no forward can listen", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using file = await forwardsFile(
    `relay = "127.0.0.1:1"\n\n[[forward]]\nname = "x"\nlisten = ${taken.addr.port}\n`,
  );
  const r = await run("client.ts", "--config", file.path);
  assertEquals(r.code, 1, r.stderr);
  ok(r.stderr.includes(`error: no forward of ${file.path} could start`));
});

Deno.test("client.ts --config: a forward's key_file proves a private name; a forward with no key hears NOEXIST and the process goes on", async () => {
  await using data = await tempDir("tcp-relay-forwards-data-");
  const added = await run(
    "relay.ts",
    "names",
    "add",
    "nas",
    "--private",
    "--data",
    data.dir,
  );
  assertEquals(added.code, 0, added.stderr);
  const secret = /secret: +(\w+)/.exec(added.stdout)![1];
  const key = /key: +(\w+)/.exec(added.stdout)![1];
  await using relay = await relayProc("--data", data.dir);
  await using nas = tagging(relay.server, "nas", secret);
  await nas.listener.ready;
  const [withKey, without] = freePorts(2);
  await using file = await forwardsFile(
    `relay = "${relay.client}"

[[forward]]
name = "nas"
listen = ${withKey}
key_file = "nas.key"

[[forward]]
name = "nas"
listen = ${without}
`,
    { "nas.key": `${key}\n` },
  );
  await using proc = forwardsProc(file.path);
  await proc.waitErr(new RegExp(`Forwarding .*${without}`));
  await proc.waitErr(new RegExp(`Forwarding .*${withKey}`));
  assertEquals(await through(withKey, "private"), "nas:private");
  assertEquals(await through(without, "no key"), "");
  await proc.waitErr(/Cannot reach "nas": '?No name "nas"/);
  assertEquals(await through(withKey, "again"), "nas:again");
});

/** client.ts --config on a file of `toml` alone, run to the end. */
async function runWith(toml: string) {
  await using file = await forwardsFile(toml);
  return { path: file.path, ...await run("client.ts", "--config", file.path) };
}

Deno.test("client.ts --config exits 2 on an unknown key, a bad value or a port given twice, naming the file, the line and the key", async () => {
  const FORWARD = `[[forward]]\nname = "f"\nlisten = 2222\n`;
  const cases: [string, string][] = [
    [
      `relay = "r"\n${FORWARD}lisen = 1\n`,
      ":5: unknown key lisen in a [[forward]]",
    ],
    [
      `relay = "r"\n[forward]\nname = "f"\n`,
      ":2: forward takes tables, each one [[forward]]",
    ],
    [
      `relay = "r"\n[[forward]]\nname = "f"\nlisten = "h:x"\n`,
      ':4: listen takes [HOST:]PORT with a port from 1 to 65535, not "h:x"',
    ],
    [
      `relay = "r"\n[[forward]]\nname = "f"\nlisten = 70000\n`,
      ":4: listen takes [HOST:]PORT",
    ],
    [
      `relay = "r"\n${FORWARD}\n${FORWARD}`,
      ":8: listen 127.0.0.1:2222 is given twice (line 4)",
    ],
    [
      `relay = "r"\n${FORWARD}key = "a"\nkey_file = "b"\n`,
      ":6: give key or key_file, not both",
    ],
    [
      `relay = "r"\n${FORWARD}linger = -1\n`,
      ":5: linger takes a number of seconds from 0",
    ],
    [`relay = "r"\n[[forward]]\nlisten = 1\n`, ":2: [[forward]] has no name"],
    [`${FORWARD}`, ':1: [[forward]] "f" has no relay'],
    [`relay = "r"\nstdio = true\n${FORWARD}`, ":2: unknown key stdio"],
  ];
  const results = await Promise.all(cases.map(([t]) => runWith(t)));
  for (const [i, r] of results.entries()) {
    const [toml, message] = cases[i];
    assertEquals(r.code, 2, `${toml}: ${r.stderr}`);
    ok(r.stderr.includes(r.path + message), `${message}:\n${r.stderr}`);
  }
  const flagged = await run("client.ts", "--config", "f.toml", "--stdio");
  assertEquals(flagged.code, 2, flagged.stderr);
  ok(flagged.stderr.includes("--stdio cannot be given with --config"));
});
