// relay.ts --config FILE, against real relay processes: the file's settings
// taken, flags winning over it, bad keys and values refused with their line,
// and reloads (SIGHUP, a change of the file) that change what can change live
// without dropping a pair, leave what needs a restart, and survive a broken
// file.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { join } from "node:path";
import { reserve } from "../mod.ts";
import {
  freePorts,
  helperPair,
  Raw,
  readAll,
  send,
  tempDir,
} from "./_helpers.ts";
import { Proc, run } from "./_proc.ts";

/** A relay process started with `--config` on a file of its own, and flags. */
interface ConfigRelay extends AsyncDisposable {
  proc: Proc;
  /** The config file. */
  path: string;
  /** The folder the file is in (removed on disposal). */
  dir: string;
  server: string;
  client: string;
  serverPort: number;
  clientPort: number;
  /** Writes the file anew: the host, ports 0, then `toml`. */
  write(toml: string): Promise<void>;
}

/**
 * relay.ts with `--config` on a file that sets `host` (127.0.0.1), ports 0
 * (free ones, read from its log) and `toml`, with `flags`, once it listens.
 * With `link`, the file is a symbolic link to one in another folder, so that
 * editing it is not seen by the relay's watch: only a SIGHUP reloads it.
 */
async function configRelay(
  toml: string,
  { flags = [], link = false, host = "127.0.0.1" }: {
    flags?: string[];
    link?: boolean;
    host?: string;
  } = {},
): Promise<ConfigRelay> {
  const tmp = await tempDir("tcp-relay-config-");
  const head = `host = "${host}"\nserver-port = 0\nclient-port = 0\n`;
  const path = join(tmp.dir, "relay.toml");
  let target = path;
  if (link) {
    await Deno.mkdir(join(tmp.dir, "elsewhere"));
    target = join(tmp.dir, "elsewhere", "relay.toml");
    await Deno.symlink(target, path);
  }
  const write = (text: string) => Deno.writeTextFile(target, head + text);
  await write(toml);
  const proc = Proc.deno("relay.ts", ["--config", path, ...flags]);
  const dispose = async () => {
    await proc[Symbol.asyncDispose]();
    await tmp[Symbol.asyncDispose]();
  };
  let ports: number[];
  try {
    const m = await proc.wait(
      /Relay listening: servers on \D*127\.0\.0\.1:(\d+)\D+127\.0\.0\.1:(\d+)/,
      "err",
    );
    ports = [Number(m[1]), Number(m[2])];
  } catch (e) {
    await dispose();
    throw e;
  }
  const [serverPort, clientPort] = ports;
  return {
    proc,
    path,
    dir: tmp.dir,
    server: `127.0.0.1:${serverPort}`,
    client: `127.0.0.1:${clientPort}`,
    serverPort,
    clientPort,
    write,
    [Symbol.asyncDispose]: dispose,
  };
}

/** A connection to the client port that got its greeting and is held. */
async function held(port: number): Promise<Raw> {
  const raw = await Raw.open(port);
  assertEquals(await raw.line(), "CLIENT");
  return raw;
}

/** A connection to `port` the relay closes at once (refused): what it said. */
async function refused(port: number): Promise<string> {
  using raw = await Raw.open(port);
  return new TextDecoder().decode(await readAll(raw.conn));
}

/** How many lines of `proc`'s stderr match `re`. */
function count(proc: Proc, re: RegExp): number {
  return proc.err.split("\n").filter((l) => re.test(l)).length;
}

const TOO_MANY = /Refused .*too many connections from 127\.0\.0\.1/;
// held connections must outlive the test, whatever the default timeout
const LIMITED = "limit-loopback = true\nhandshake-timeout = 60\n";

Deno.test("a config file sets the relay's settings: its ports, a limit, the log format", async () => {
  await using relay = await configRelay(
    `${LIMITED}max-per-ip = 1\nlog-format = "json"\n`,
  );
  using _a = await held(relay.clientPort);
  await refused(relay.clientPort);
  await relay.proc.waitErr(/too many connections from 127\.0\.0\.1/);
  const lines = relay.proc.err.trim().split("\n");
  ok(lines.every((l) => JSON.parse(l).message), relay.proc.err);
});

Deno.test("a flag given on the command line wins over the config file", async () => {
  // the file's host is not one to listen on: the flag's is taken
  await using relay = await configRelay(`${LIMITED}max-per-ip = 1\n`, {
    flags: ["--host=127.0.0.1", "--max-per-ip=5"],
    host: "192.0.2.1",
  });
  await reserve({ relay: relay.server, name: "flag-wins" });
  using _a = await held(relay.clientPort);
  using _b = await held(relay.clientPort);
  assertEquals(count(relay.proc, TOO_MANY), 0, relay.proc.err);
});

/** relay.ts --config on a file of `toml` alone, run to the end. */
async function runWith(toml: string) {
  await using tmp = await tempDir("tcp-relay-config-");
  const path = join(tmp.dir, "relay.toml");
  await Deno.writeTextFile(path, toml);
  return { path, ...await run("relay.ts", "--config", path) };
}

Deno.test("an unknown key in the config file exits 2 naming the key and its line", async () => {
  const cases = [
    ["wait = 1\n# a comment\nmax-per-pi = 3\n", ":3: unknown key max-per-pi"],
    ['host = "127.0.0.1"\n\n[limits]\nmax = 1\n', ":3: unknown key limits"],
    ["config = 'other.toml'\n", ":1: unknown key config"],
  ];
  for (const [toml, message] of cases) {
    const r = await runWith(toml);
    assertEquals(r.code, 2, r.stderr);
    ok(r.stderr.includes(r.path + message), `${message}: ${r.stderr}`);
    ok(!r.stderr.includes("Relay listening"), r.stderr);
  }
});

Deno.test("a bad value in the config file exits 2 naming the key and its line", async () => {
  const cases = [
    ["wait = 1\nmax-per-ip = 0\n", ":2: max-per-ip takes a whole number"],
    [
      '\n\nwait = "soon"\n',
      ':3: wait takes a number of seconds from 0 to 10000000, not "soon"',
    ],
    ["limit-loopback = 'yes'\n", ":1: limit-loopback takes true or false"],
    ['data-path = "fast"\n', ":1: data-path takes loop or streams"],
    [
      "server-port = 70000\n",
      ":1: server-port takes a whole number from 0 to 65535",
    ],
    [
      "server-port = 8123\nclient-port = 8123\n",
      "--server-port and --client-port must differ",
    ],
    ["wait = 1\nheartbeat = = 2\n", ":2:13: "],
  ];
  const results = await Promise.all(cases.map(([toml]) => runWith(toml)));
  for (const [i, r] of results.entries()) {
    const message = cases[i][1];
    assertEquals(r.code, 2, `${cases[i][0]}: ${r.stderr}`);
    ok(r.stderr.includes(message), `${message}: ${r.stderr}`);
    ok(r.stderr.includes("Usage:"), r.stderr);
  }
});

Deno.test("a missing config file exits 2 and says which", async () => {
  const r = await run("relay.ts", "--config", "/nonexistent/relay.toml");
  assertEquals(r.code, 2, r.stderr);
  ok(r.stderr.includes("cannot read /nonexistent/relay.toml"), r.stderr);
});

Deno.test("file and folder names in a config file are taken relative to its folder", async () => {
  await using relay = await configRelay('data = "store"\n');
  ok(
    relay.proc.err.includes(join(relay.dir, "store", "names.json")),
    relay.proc.err,
  );
});

Deno.test("SIGHUP reloads a limit live while a pair stays open and carries bytes", async () => {
  // A link: the relay's watch does not see the edit, only the signal reloads.
  await using relay = await configRelay(`${LIMITED}max-per-ip = 3\n`, {
    link: true,
  });
  await reserve({ relay: relay.server, name: "stays" });
  const { s, c } = await helperPair(relay, "stays");
  using _s = s, _c = c;
  await send(c, s, "before");
  using _a = await held(relay.clientPort);
  (await held(relay.clientPort)).close(); // two of 3: admitted
  await relay.write(`${LIMITED}max-per-ip = 1\n`);
  relay.proc.kill("SIGHUP");
  await relay.proc.waitErr(/Reloaded .*relay\.toml: max-per-ip 3 -> 1$/m);
  await refused(relay.clientPort);
  await relay.proc.waitErr(TOO_MANY);
  await send(c, s, "after the reload");
  await send(s, c, "and back");
});

Deno.test("a change of the config file reloads it without a signal", async () => {
  await using relay = await configRelay(`${LIMITED}max-per-ip = 3\n`);
  using _a = await held(relay.clientPort);
  (await held(relay.clientPort)).close();
  await relay.write(`${LIMITED}max-per-ip = 1\n`);
  await relay.proc.waitErr(/Reloaded .*relay\.toml: max-per-ip 3 -> 1$/m);
  await refused(relay.clientPort);
  await relay.proc.waitErr(TOO_MANY);
});

Deno.test("a port changed in the config file is logged as needing a restart and left as it was", async () => {
  await using relay = await configRelay(`max-per-ip = 3\n`, { link: true });
  const [newPort] = freePorts(1);
  const toml = await Deno.readTextFile(relay.path);
  await Deno.writeTextFile(
    await Deno.realPath(relay.path),
    toml.replace("server-port = 0", `server-port = ${newPort}`)
      .replace("max-per-ip = 3", "max-per-ip = 4"),
  );
  relay.proc.kill("SIGHUP");
  await relay.proc.waitErr(
    new RegExp(`needs a restart: server-port 0 -> ${newPort}$`, "m"),
  );
  ok(/Reloaded .*: max-per-ip 3 -> 4$/m.test(relay.proc.err), relay.proc.err);
  // the old port serves on; nothing listens on the new one
  await reserve({ relay: relay.server, name: "old-port" });
  let listening = true;
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port: newPort })).close();
  } catch {
    listening = false;
  }
  assertEquals(listening, false);
});

Deno.test("a broken config file on reload is logged; the running settings stay and the relay serves on", async () => {
  await using relay = await configRelay(`${LIMITED}max-per-ip = 2\n`, {
    link: true,
  });
  const broken = [
    [
      "max-per-ip = = 1\n",
      /Cannot reload .*relay\.toml, kept the running settings: .*relay\.toml:6:14: /,
    ],
    [
      "max-per-ip = 0\n",
      /Cannot reload .*: .*relay\.toml:6: max-per-ip takes a whole number/,
    ],
    [
      "max-per-pi = 1\n",
      /Cannot reload .*: .*relay\.toml:6: unknown key max-per-pi/,
    ],
  ] as const;
  for (const [i, [toml, logged]] of broken.entries()) {
    await relay.write(LIMITED + toml);
    relay.proc.kill("SIGHUP");
    await relay.proc.waitErr(logged);
    assertEquals(count(relay.proc, /Cannot reload/), i + 1, relay.proc.err);
  }
  assertEquals(count(relay.proc, /Reloaded/), 0, relay.proc.err);
  await reserve({ relay: relay.server, name: "serves-on" });
  const { s, c } = await helperPair(relay, "serves-on");
  using _s = s, _c = c;
  await send(c, s, "still relaying");
  // still max-per-ip 2: two held connections are admitted, a third is not
  using _a = await held(relay.clientPort);
  using _b = await held(relay.clientPort);
  await refused(relay.clientPort);
  await relay.proc.waitErr(TOO_MANY);
});

Deno.test("the log level reloads live", async () => {
  await using relay = await configRelay(`wait = 5\n`, { link: true });
  const reloads = [
    // logged before it takes effect
    ['log-level = "warning"\n', /Reloaded .*: log-level info -> warning$/m],
    // the info line is not logged, the warning is
    ['log-level = "warning"\nwait = 6\n', /needs a restart: wait 5 -> 6$/m],
    [
      'log-level = "info"\nwait = 6\n',
      /Reloaded .*: log-level warning -> info$/m,
    ],
  ] as const;
  for (const [toml, logged] of reloads) {
    await relay.write(toml);
    relay.proc.kill("SIGHUP");
    await relay.proc.waitErr(logged);
  }
  assertEquals(count(relay.proc, /Reloaded/), 2, relay.proc.err);
});
