// server.ts --config services.toml, against real relay processes: several
// services from one process, each failing alone (a wrong secret, a dead
// `to`), secrets from files, a warning for a secret inline in a file every
// user can read, and bad files refused with the file, the line and the key.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { join } from "node:path";
import { connect, reserve } from "../mod.ts";
import {
  bytes,
  echoService,
  freePort,
  readAll,
  tempDir,
  text,
} from "./_helpers.ts";
import { Proc, relayProc, run } from "./_proc.ts";

/** A wrong owner's secret: 64 hex digits, as a real one. */
const WRONG = "0".repeat(64);

/** `toml` written as services.toml in a folder of its own (with `files` beside it). */
async function servicesFile(
  toml: string,
  files: Record<string, string> = {},
  mode = 0o600,
): Promise<AsyncDisposable & { path: string; dir: string }> {
  const tmp = await tempDir("tcp-relay-services-");
  const path = join(tmp.dir, "services.toml");
  await Deno.writeTextFile(path, toml);
  await Deno.chmod(path, mode);
  for (const [name, content] of Object.entries(files)) {
    await Deno.writeTextFile(join(tmp.dir, name), content, { mode: 0o600 });
  }
  return {
    path,
    dir: tmp.dir,
    [Symbol.asyncDispose]: tmp[Symbol.asyncDispose],
  };
}

/** server.ts --config `path`, left running. */
function servicesProc(path: string, ...flags: string[]): Proc {
  return Proc.deno("server.ts", ["--config", path, ...flags]);
}

/** One request to `name`'s echo service through the relay's client port: its answer. */
async function ask(relay: string, name: string, msg: string): Promise<string> {
  using conn = await connect({ relay, name, timeout: 5000 });
  await conn.write(bytes(msg));
  await conn.closeWrite();
  return text(await readAll(conn));
}

Deno.test("server.ts --config offers two services; one refused for good (a wrong secret) stops alone and is logged by name, the other serves and the process runs on", async () => {
  await using relay = await relayProc("--open-registration");
  await using service = echoService();
  const { secret } = await reserve({ relay: relay.server, name: "owned-ok" });
  await reserve({ relay: relay.server, name: "owned-bad" });
  await using file = await servicesFile(
    `relay = "${relay.server}"

[[service]]
name = "owned-bad"
to = "${service.to}"
secret = "${WRONG}"

[[service]]
name = "owned-ok"
to = "${service.to}"
secret_file = "ok.secret"
pool = 1
`,
    { "ok.secret": `${secret}\n` },
  );
  await using proc = servicesProc(file.path);
  await proc.waitErr(/Service "owned-bad" stopped: .*wrong proof/);
  await proc.waitErr(/Parked at relay .* as "owned-ok"/);
  assertEquals(await ask(relay.client, "owned-ok", "one"), "echo:one");
  assertEquals(await ask(relay.client, "owned-ok", "two"), "echo:two");
  ok(!proc.exited, proc.err);
  ok(/1 of 2 services still offered/.test(proc.err), proc.err);
  // a file only its owner can read holds its secrets without a warning
  ok(!/every user/.test(proc.err), proc.err);
  proc.kill("SIGTERM");
  assertEquals((await proc.status()).code, 0);
});

Deno.test("server.ts --config: a service whose to is dead closes its clients, logged by name, while another serves", async () => {
  await using relay = await relayProc();
  await using service = echoService();
  await using file = await servicesFile(
    `relay = "${relay.server}"
pool = 1

[[service]]
name = "dead-to"
to = "127.0.0.1:${freePort()}"

[[service]]
name = "live-to"
to = "${service.to}"
`,
  );
  await using proc = servicesProc(file.path);
  await proc.waitErr(/Service "dead-to": nothing answers at to/);
  await proc.waitErr(/Parked at relay .* as "dead-to"/);
  await proc.waitErr(/Parked at relay .* as "live-to"/);
  assertEquals(await ask(relay.client, "dead-to", "lost"), "");
  await proc.waitErr(/Service "dead-to": cannot reach to .*client closed/);
  assertEquals(await ask(relay.client, "live-to", "fine"), "echo:fine");
  ok(!proc.exited, proc.err);
});

Deno.test("server.ts --config exits 1 once every service is refused for good", async () => {
  await using relay = await relayProc("--open-registration");
  await reserve({ relay: relay.server, name: "bad-1" });
  await reserve({ relay: relay.server, name: "bad-2" });
  await using file = await servicesFile(
    `relay = "${relay.server}"\n\n` +
      ["bad-1", "bad-2"].map((name) =>
        `[[service]]\nname = "${name}"\nto = "127.0.0.1:1"\nsecret = "${WRONG}"\n`
      ).join("\n"),
  );
  const r = await run("server.ts", "--config", file.path);
  assertEquals(r.code, 1, r.stderr);
  ok(r.stderr.includes('Service "bad-1" stopped'), r.stderr);
  ok(r.stderr.includes('Service "bad-2" stopped'), r.stderr);
  ok(
    r.stderr.includes(`error: every service of ${file.path} failed`),
    r.stderr,
  );
});

Deno.test("server.ts --config warns of a secret written inline in a file every user can read", async () => {
  await using relay = await relayProc("--open-registration");
  await using service = echoService();
  const { secret } = await reserve({ relay: relay.server, name: "shown" });
  await using file = await servicesFile(
    `relay = "${relay.server}"\n\n[[service]]\nname = "shown"\nto = "${service.to}"\nsecret = "${secret}"\n`,
    {},
    0o644,
  );
  await using proc = servicesProc(file.path);
  await proc.waitErr(
    /services\.toml:6: the secret of "shown" is written inline in a file every user can read: move it to secret_file/,
  );
  await proc.waitErr(/Parked at relay .* as "shown"/);
  assertEquals(await ask(relay.client, "shown", "x"), "echo:x");
});

Deno.test("server.ts --config takes a service's relay over the top level's, and the logging keys from the file unless given as flags", async () => {
  await using relay = await relayProc();
  await using service = echoService();
  // "away" retries its dead relay: a warning, then a debug line per retry
  await using file = await servicesFile(
    `relay = "127.0.0.1:${freePort()}"
log-format = "json"
log-level = "debug"
max_backoff = 0.05

[[service]]
name = "away"
to = "${service.to}"

[[service]]
name = "own-relay"
to = "${service.to}"
relay = ["${relay.server}"]
`,
  );
  await using quiet = servicesProc(file.path, "--log-level", "info");
  await using verbose = servicesProc(file.path);
  for (const proc of [quiet, verbose]) {
    await proc.waitErr(/Parked at relay/);
    await proc.waitErr(/Relay connection for \\?"?away/);
  }
  assertEquals(await ask(relay.client, "own-relay", "j"), "echo:j");
  await verbose.waitErr(/"level":"DEBUG"/);
  const lines = quiet.err.trim().split("\n").map((l) => JSON.parse(l));
  ok(lines.every((l) => l.level !== "DEBUG"), quiet.err);
});

/** server.ts --config on a file of `toml` alone (and `files` beside it), run to the end. */
async function runWith(toml: string, files: Record<string, string> = {}) {
  await using file = await servicesFile(toml, files);
  return { path: file.path, ...await run("server.ts", "--config", file.path) };
}

const SERVICE = `[[service]]\nname = "s"\nto = "127.0.0.1:22"\n`;

Deno.test("server.ts --config exits 2 on an unknown key or a bad value, naming the file, the line and the key", async () => {
  const cases: [string, string][] = [
    [`relya = "r"\n${SERVICE}`, ":1: unknown key relya"],
    [
      `relay = "r"\n${SERVICE}secrte = "x"\n`,
      ":5: unknown key secrte in a [[service]]",
    ],
    [
      `relay = "r"\n${SERVICE}pool = 2\n\n${SERVICE}pool = 0\n`,
      ":10: pool takes a whole number from 1 to 1000, not 0",
    ],
    [
      `relay = "r"\n${SERVICE}pool = 4\nmax_pool = 3\n`,
      ":6: max_pool (3) is below pool (4)",
    ],
    [
      `relay = "r"\n${SERVICE}max_backoff = "soon"\n`,
      ':5: max_backoff takes a number of seconds above 0 to 10000000, not "soon"',
    ],
    [`relay = "r:99999"\n${SERVICE}`, ":1: relay takes HOST[:PORT]"],
    [
      `relay = ["a", 1]\n${SERVICE}`,
      ':1: relay takes "HOST[:PORT]" or a list of them',
    ],
    [
      `relay = "r"\n[[service]]\nname = "s"\nto = "nowhere"\n`,
      ':4: to takes HOST:PORT with a port from 1 to 65535, not "nowhere"',
    ],
    [`relay = "r"\n[[service]]\nname = "s p"\nto = "h:1"\n`, ":3: name: "],
    [`relay = "r"\n\n[[service]]\nname = "s"\n`, ":3: [[service]] has no to"],
    [`${SERVICE}`, ':1: [[service]] "s" has no relay'],
    [
      `relay = "r"\n${SERVICE}secret = "a"\nsecret_file = "b"\n`,
      ":6: give secret or secret_file, not both",
    ],
    [
      `relay = "r"\n${SERVICE}secret_file = "missing"\n`,
      ":5: secret_file: cannot read ",
    ],
    [`relay = "r"\n${SERVICE}secret_file = "empty"\n`, ":5: secret_file: "],
    [
      `relay = "r"\n${SERVICE}ca_file = "ca.pem"\n`,
      ":5: ca_file goes with tls = true",
    ],
    [
      `relay = "r"\ntls = "yes"\n${SERVICE}`,
      ':2: tls takes true or false, not "yes"',
    ],
    [
      `relay = "r"\nlog-level = "loud"\n${SERVICE}`,
      ":2: log-level takes one of trace",
    ],
    [`relay = "r"\n`, ": no [[service]] to offer"],
    [`relay = "r"\nservice = 3\n`, ":2: service takes tables"],
    [`relay = "r"\n${SERVICE}pool = = 1\n`, ":5:8: "],
  ];
  const files = { "empty": "\n", "ca.pem": "-----BEGIN CERTIFICATE-----\n" };
  const results = await Promise.all(cases.map(([t]) => runWith(t, files)));
  for (const [i, r] of results.entries()) {
    const [toml, message] = cases[i];
    assertEquals(r.code, 2, `${toml}: ${r.stderr}`);
    ok(r.stderr.includes(r.path + message), `${message}:\n${r.stderr}`);
    ok(r.stderr.includes("Usage:"), r.stderr);
  }
});

Deno.test("server.ts --config with --name, --to, --relay or --pool exits 2: the file gives them", async () => {
  const results = await Promise.all(
    [["--name", "x"], ["--to", "h:1"], ["--relay", "r"], ["--pool", "3"]].map(
      (flag) => run("server.ts", "--config", "services.toml", ...flag),
    ),
  );
  for (const r of results) {
    assertEquals(r.code, 2, r.stderr);
    ok(/cannot be given with --config/.test(r.stderr), r.stderr);
  }
  const missing = await run("server.ts", "--config", "/nonexistent/s.toml");
  assertEquals(missing.code, 2);
  ok(
    missing.stderr.includes("cannot read /nonexistent/s.toml"),
    missing.stderr,
  );
});
