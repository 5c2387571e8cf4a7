// The three executables as real processes: flags, exit codes, logs, signals,
// and forwarding through server.ts and client.ts end to end.

import {
  deepStrictEqual as assertEquals,
  ok,
  rejects,
} from "node:assert/strict";
import { accept, connect, RelayError, reserve } from "../mod.ts";
import { bytes, readAll, readExactly, startRelay, text } from "./_helpers.ts";
import { Proc } from "./_proc.ts";

const ROOT = new URL("..", import.meta.url);
const VERSION: string = JSON.parse(
  Deno.readTextFileSync(new URL("deno.json", ROOT)),
).version;

/** Runs `script args` to the end (killed after 20 s, so a wrong start cannot hang the test). */
async function run(script: string, ...args: string[]) {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 20_000);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1" },
    signal: ac.signal,
  }).output().finally(() => clearTimeout(timer));
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** relay.ts on fixed free ports, once it logs that it listens; disposing of it kills it. */
async function relayProc(...extra: string[]) {
  const [server, client] = [freePort(), freePort()];
  const proc = Proc.deno("relay.ts", [
    "--host=127.0.0.1",
    `--server-port=${server}`,
    `--client-port=${client}`,
    ...extra,
  ]);
  await proc.waitErr(/Relay listening/);
  return {
    proc,
    server: `127.0.0.1:${server}`,
    client: `127.0.0.1:${client}`,
    clientPort: client,
    [Symbol.asyncDispose]: () => proc[Symbol.asyncDispose](),
  };
}

/** The lines of `proc`'s stderr that match `re`. */
function logLines(proc: Proc, re: RegExp): string[] {
  return proc.err.split("\n").filter((l) => re.test(l));
}

/** server.ts serving `name` at `relay` for the local service at `to`. */
function serverTs(relay: string, name: string, to: string): Proc {
  return Proc.deno("server.ts", ["--relay", relay, "--name", name, "--to", to]);
}

/** client.ts for `name` at `relay`, in `mode` (stdin piped for `--stdio`). */
function clientTs(relay: string, name: string, ...mode: string[]): Proc {
  const args = ["--relay", relay, "--name", name, ...mode];
  return Proc.deno("client.ts", args, mode.includes("--stdio"));
}

/** A server and a client paired through `relay` under `name`. */
async function pair(relay: { server: string; client: string }, name: string) {
  await reserve({ relay: relay.server, name });
  const served = accept({ relay: relay.server, name });
  const c = await connect({ relay: relay.client, name });
  return { s: await served, c };
}

/** Writes `msg` on `from`; `to` reads exactly that much, and it is `msg`. */
async function send(from: Deno.Conn, to: Deno.Conn, msg: string) {
  const data = bytes(msg);
  await from.write(data);
  assertEquals(text(await readExactly(to, data.length)), msg);
}

/** Writes `msg` on `from` and half-closes it; `to` reads `msg`, then EOF. */
async function sendAndClose(from: Deno.Conn, to: Deno.Conn, msg: string) {
  await from.write(bytes(msg));
  await from.closeWrite();
  assertEquals(text(await readAll(to)), msg);
}

/** Waits until nothing accepts connections on `port` any more. */
async function untilRefused(port: number, what: string) {
  for (const end = Date.now() + 10_000;;) {
    ok(Date.now() < end, what);
    try {
      const probe = await Deno.connect({ hostname: "127.0.0.1", port });
      probe.close();
      await new Promise((r) => setTimeout(r, 10));
    } catch {
      return;
    }
  }
}

/** A local service: reads to EOF, then answers "echo:" + what it read. */
function echoService() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const handled: Promise<void>[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      handled.push(
        (async () => {
          using c = conn;
          const got = await readAll(c);
          await c.write(bytes("echo:" + text(got)));
        })().catch(() => {}),
      );
    }
  })();
  return {
    to: `127.0.0.1:${listener.addr.port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await loop;
      await Promise.all(handled);
    },
  };
}

Deno.test("relay.ts --help exits 0 and describes the flags", async () => {
  const r = await run("relay.ts", "--help");
  assertEquals(r.code, 0);
  ok(r.stdout.includes("--server-port"), r.stdout);
  ok(r.stdout.includes("--client-port"), r.stdout);
});

Deno.test("relay.ts --version prints the version of deno.json", async () => {
  const r = await run("relay.ts", "--version");
  assertEquals(r.code, 0);
  assertEquals(r.stdout.trim(), VERSION);
});

Deno.test("relay.ts exits 2 on an unknown flag and names it", async () => {
  const r = await run("relay.ts", "--nope");
  assertEquals(r.code, 2);
  ok(r.stderr.includes("--nope"), r.stderr);
});

Deno.test("relay.ts exits 2 on a bad flag value and names the flag", async () => {
  const cases = [
    ["--server-port", "abc"],
    ["--client-port", "70000"],
    ["--wait", "-1"],
    ["--handshake-timeout", "soon"],
    ["--log-format", "xml"],
    ["--log-level", "loud"],
  ];
  // Ports 0, so that a value wrongly taken cannot clash with anything.
  const results = await Promise.all(
    cases.map((c) =>
      run("relay.ts", "--server-port=0", "--client-port=0", ...c)
    ),
  );
  for (const [i, r] of results.entries()) {
    assertEquals(r.code, 2, `${cases[i].join(" ")}: ${r.stderr}`);
    ok(r.stderr.includes(cases[i][0]), r.stderr);
  }
  for (const r of results) ok(!r.stderr.includes("Relay listening"), r.stderr);
});

Deno.test("relay process pairs a server with a client and logs the pairing with the name", async () => {
  await using relay = await relayProc();
  const { s, c } = await pair(relay, "cli-pair");
  using _s = s, _c = c;
  await sendAndClose(c, s, "ping");
  await sendAndClose(s, c, "pong");
  await relay.proc.waitErr(/Paired.*cli-pair/);
  assertEquals(logLines(relay.proc, /Paired/).length, 1);
});

Deno.test("relay process logs a refusal on one text line that names the name asked for", async () => {
  await using relay = await relayProc();
  await rejects(
    connect({ relay: relay.client, name: "ghost-name" }),
    (e) => e instanceof RelayError && e.code === "NOEXIST",
  );
  await relay.proc.waitErr(/Refused/);
  const lines = logLines(relay.proc, /Refused/);
  assertEquals(lines.length, 1, relay.proc.err);
  ok(
    lines[0].includes("ghost-name"),
    `refusal line lacks the name: ${lines[0]}`,
  );
});

Deno.test("relay --log-format json writes JSON lines; the pairing record carries the name", async () => {
  await using relay = await relayProc("--log-format=json");
  {
    const { s, c } = await pair(relay, "json-pair");
    using _s = s, _c = c;
    await send(c, s, "x");
  }
  await rejects(connect({ relay: relay.client, name: "json-ghost" }));
  await relay.proc.waitErr(/json-ghost/);
  relay.proc.kill("SIGTERM");
  assertEquals((await relay.proc.status()).code, 0);
  const records = logLines(relay.proc, /\S/).map((l) => JSON.parse(l));
  ok(records.length >= 3, relay.proc.err);
  const paired = records.filter((r) =>
    r.properties?.name === "json-pair" && /Paired/.test(r.message)
  );
  assertEquals(paired.length, 1, relay.proc.err);
  ok(
    records.some((r) =>
      r.properties?.name === "json-ghost" && /Refused/.test(r.message)
    ),
    relay.proc.err,
  );
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`relay process exits 0 on ${signal}`, async () => {
    await using relay = await relayProc();
    relay.proc.kill(signal);
    const status = await relay.proc.status();
    assertEquals(status.code, 0, relay.proc.err);
    ok(/Relay stopped/.test(relay.proc.err), relay.proc.err);
  });
}

Deno.test("relay process on SIGTERM lets an active pair finish within --drain-timeout, then exits 0", async () => {
  await using relay = await relayProc("--drain-timeout=20");
  const { s, c } = await pair(relay, "draining");
  using _s = s, _c = c;
  await send(c, s, "before");
  relay.proc.kill("SIGTERM");
  // The signal is seen once the client port refuses new connections.
  await untilRefused(
    relay.clientPort,
    "the relay kept accepting after SIGTERM",
  );
  await sendAndClose(c, s, "after");
  await sendAndClose(s, c, "reply after the signal");
  assertEquals((await relay.proc.status()).code, 0, relay.proc.err);
});

Deno.test("server.ts and client.ts --listen forward a local service, half-close carried end to end", async () => {
  await using relay = startRelay();
  await using echo = echoService();
  await reserve({ relay: relay.server, name: "fwd" });
  const port = freePort();
  await using server = serverTs(relay.server, "fwd", echo.to);
  await using client = clientTs(relay.client, "fwd", "--listen", String(port));
  await client.waitErr(/Forwarding/);
  for (const msg of ["first request", "second request"]) {
    using local = await Deno.connect({ hostname: "127.0.0.1", port });
    await local.write(bytes(msg));
    await local.closeWrite();
    assertEquals(text(await readAll(local)), "echo:" + msg);
  }
  ok(server.err.includes("fwd"), server.err);
});

Deno.test("client.ts --stdio sends stdin to the server and its answer to stdout, then exits 0", async () => {
  await using relay = startRelay();
  await using echo = echoService();
  await reserve({ relay: relay.server, name: "stdio" });
  await using _server = serverTs(relay.server, "stdio", echo.to);
  await using client = clientTs(relay.client, "stdio", "--stdio");
  await client.write("request over stdin");
  await client.closeStdin();
  const status = await client.status();
  assertEquals(status.code, 0, client.err);
  assertEquals(client.out, "echo:request over stdin");
});

Deno.test("client.ts exits 1 with a clear message for a name the relay does not know", async () => {
  await using relay = startRelay();
  const r = await run(
    "client.ts",
    "--relay",
    relay.client,
    "--name",
    "nobody",
    "--stdio",
  );
  assertEquals(r.code, 1, r.stderr);
  ok(/No name "nobody"/.test(r.stderr), r.stderr);
  assertEquals(r.stdout, "");
});

Deno.test("server.ts and client.ts --help exit 0 and describe their flags", async () => {
  const [s, c] = await Promise.all([
    run("server.ts", "--help"),
    run("client.ts", "--help"),
  ]);
  assertEquals([s.code, c.code], [0, 0]);
  for (const flag of ["--relay", "--name", "--to", "--pool"]) {
    ok(s.stdout.includes(flag), s.stdout);
  }
  for (const flag of ["--relay", "--name", "--listen", "--stdio"]) {
    ok(c.stdout.includes(flag), c.stdout);
  }
});

Deno.test("server.ts and client.ts without --name exit 2 and say so", async () => {
  const [s, c] = await Promise.all([
    run("server.ts", "--relay", "127.0.0.1:1", "--to", "127.0.0.1:2"),
    run("client.ts", "--relay", "127.0.0.1:1", "--stdio"),
  ]);
  assertEquals([s.code, c.code], [2, 2]);
  ok(s.stderr.includes("--name"), s.stderr);
  ok(c.stderr.includes("--name"), c.stderr);
});

Deno.test("client.ts with both or neither of --listen and --stdio exits 2", async () => {
  const base = ["--relay", "127.0.0.1:1", "--name", "n"];
  const [both, neither] = await Promise.all([
    run("client.ts", ...base, "--listen", "0", "--stdio"),
    run("client.ts", ...base),
  ]);
  assertEquals([both.code, neither.code], [2, 2]);
  for (const r of [both, neither]) {
    ok(/--listen/.test(r.stderr) && /--stdio/.test(r.stderr), r.stderr);
  }
});
