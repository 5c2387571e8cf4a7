// The three executables as real processes: flags, exit codes, logs, signals,
// and forwarding through server.ts and client.ts end to end.

import {
  deepStrictEqual as assertEquals,
  ok,
  rejects,
} from "node:assert/strict";
import { join } from "node:path";
import { connect, reserve } from "../mod.ts";
import {
  bytes,
  echoService,
  freePort,
  freePorts,
  helperPair,
  readAll,
  rejectsWith,
  send,
  sendAndClose,
  startRelay,
  tempDir,
  text,
  until,
} from "./_helpers.ts";
import { clientTs, Proc, relayProc, run, serverTs } from "./_proc.ts";
import { getTextFormatter, type LogRecord } from "@logtape/logtape";
import { textLine } from "../cli/_common.ts";
import { LOG_LEVELS, SETTINGS } from "../engine/_settings.ts";

const ROOT = new URL("..", import.meta.url);
const VERSION: string = JSON.parse(
  Deno.readTextFileSync(new URL("deno.json", ROOT)),
).version;

/** The lines of `proc`'s stderr that match `re`. */
function logLines(proc: Proc, re: RegExp): string[] {
  return proc.err.split("\n").filter((l) => re.test(l));
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

Deno.test("relay.ts --help exits 0 and lists every setting of the table, with --config", async () => {
  const r = await run("relay.ts", "--help");
  assertEquals(r.code, 0);
  for (const s of SETTINGS) {
    ok(
      new RegExp(`^  --(\\[no-\\])?${s.flag}\\b`, "m").test(r.stdout),
      `--${s.flag} missing:\n${r.stdout}`,
    );
  }
  ok(/^ {2}--config FILE/m.test(r.stdout), r.stdout);
  ok(/per source IP\s+\(default 256;\s+live\)/.test(r.stdout), r.stdout);
  const flat = r.stdout.replace(/\s+/g, " ");
  ok(flat.includes(`logged: ${LOG_LEVELS.join(", ")}`), r.stdout);
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
    ["--max-per-ip", "0"],
    ["--max-names", "1.5"],
    ["--heartbeat", "0"],
    ["--drain-timeout", ""],
    ["--data-path", "fast"],
    ["--tls-cert", "/nonexistent/cert.pem"],
    ["--tls-key", "/nonexistent/key.pem"],
    ["--config", "/nonexistent/relay.toml"],
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
    ok(r.stderr.includes("Usage:"), r.stderr);
  }
  for (const r of results) ok(!r.stderr.includes("Relay listening"), r.stderr);
});

Deno.test("text log lines are exactly LogTape's text format (with its timestamps and quoting)", () => {
  const theirs = getTextFormatter({ timestamp: "date-time-timezone" });
  const record = (
    level: LogRecord["level"],
    message: unknown[],
    timestamp: number,
  ): LogRecord => ({
    category: ["tcp-relay", "relay"],
    level,
    message,
    rawMessage: "",
    properties: {},
    timestamp,
  });
  const at = Date.UTC(2026, 10, 24, 21, 23, 2, 7);
  for (
    const r of [
      record("info", ["Paired ", "bench", ": client ", "127.0.0.1:1"], at),
      record("warning", ["Refused ", 'a"b', " (", 3, ")"], at + 993),
      record("error", ["Failed: ", { code: "X" }, ""], at + 60_000),
      record("debug", ["Pair ", "n", " closed"], at + 86_400_000 + 1),
      record("trace", ["", null, " and ", undefined, ""], at - 1),
      record("info", ["", "tab\there", " ", "ünï", " ", "x'y", ""], at),
      record("info", ["", 0.125, " s, ", 5, " up, ", -0, " ", 1e21, ""], at),
      record(
        "info",
        ["", NaN, " ", -Infinity, " ", 12345678901234567890, ""],
        at,
      ),
    ]
  ) assertEquals(textLine(r), theirs(r));
});

Deno.test("relay process pairs a server with a client and logs the pairing with the name", async () => {
  await using relay = await relayProc();
  await reserve({ relay: relay.server, name: "cli-pair" });
  const { s, c } = await helperPair(relay, "cli-pair");
  using _s = s, _c = c;
  await sendAndClose(c, s, "ping");
  await sendAndClose(s, c, "pong");
  await relay.proc.waitErr(/Paired.*cli-pair/);
  assertEquals(logLines(relay.proc, /Paired/).length, 1);
});

Deno.test("relay process logs one closing line per pair: name, peers, duration, bytes each way", async () => {
  await using relay = await relayProc();
  await reserve({ relay: relay.server, name: "closing" });
  const { s, c } = await helperPair(relay, "closing");
  using _s = s, _c = c;
  await sendAndClose(c, s, "12345");
  await sendAndClose(s, c, "123");
  await relay.proc.waitErr(/Closed "closing"/);
  const [closed] = logLines(relay.proc, /Closed "closing"/);
  ok(
    /Closed "closing": client "127\.0\.0\.1:\d+", server "127\.0\.0\.1:\d+", [\d.]+ s, 5 bytes up, 3 bytes down/
      .test(closed),
    closed,
  );
  // parking is logged at debug only
  ok(!/Parked/.test(relay.proc.err), relay.proc.err);
});

Deno.test("relay process logs a refusal on one text line that names the name asked for", async () => {
  await using relay = await relayProc();
  await rejectsWith(
    connect({ relay: relay.client, name: "ghost-name" }),
    "NOEXIST",
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
    await reserve({ relay: relay.server, name: "json-pair" });
    const { s, c } = await helperPair(relay, "json-pair");
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
  await reserve({ relay: relay.server, name: "draining" });
  const { s, c } = await helperPair(relay, "draining");
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

Deno.test("server.ts and client.ts exit 2 on a name the protocol does not allow", async () => {
  for (
    const [script, extra] of [["server.ts", ["--to", "127.0.0.1:1"]], [
      "client.ts",
      ["--stdio"],
    ]] as const
  ) {
    const { code, stderr } = await run(
      script,
      "--relay",
      "127.0.0.1:1",
      "--name",
      "two words",
      ...extra,
    );
    assertEquals(code, 2);
    ok(stderr.includes("--name: name with spaces"), stderr);
  }
});

Deno.test("relay.ts takes every flag at once (TLS aside: tls_test) and serves with them", async () => {
  await using tmp = await tempDir("tcp-relay-flags-");
  await using relay = await relayProc(
    ...["--wait=1", "--handshake-timeout=5", "--drain-timeout=1"],
    ...["--heartbeat=2", `--data=${tmp.dir}`, "--open-registration"],
    ...["--max-connections=100", "--max-per-ip=10", "--max-parked-per-name=3"],
    ...["--max-failed-proofs=2", "--max-names=10", "--limit-loopback"],
    ...["--data-path=streams", "--no-reclaim", "--log-level=debug"],
    "--log-format=json",
  );
  // open registration: the reservation makes us the owner
  const { secret } = await reserve({ relay: relay.server, name: "all-flags" });
  ok(secret, "no secret from open registration");
  {
    const { s, c } = await helperPair(relay, "all-flags", secret);
    using _s = s, _c = c;
    await sendAndClose(c, s, "ping");
    await sendAndClose(s, c, "pong");
  }
  // debug records are written, as JSON lines: a server parks (at debug)
  const parked = await Deno.connect({
    hostname: "127.0.0.1",
    port: relay.serverPort,
  });
  await parked.write(new TextEncoder().encode("CONNECT\nparks-here\n"));
  await relay.proc.waitErr(/"level":"DEBUG"/);
  parked.close();
  for (const l of logLines(relay.proc, /\S/)) JSON.parse(l);
  ok(relay.proc.err.includes(join(tmp.dir, "names.json")), relay.proc.err);
});

Deno.test("relay.ts says which address it cannot listen on, for either port, and exits 1 without a stack", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = taken.addr.port, free = freePort();
  for (
    const ports of [
      [`--server-port=${port}`, `--client-port=${free}`],
      [`--server-port=${free}`, `--client-port=${port}`],
    ]
  ) {
    const r = await run("relay.ts", "--host=127.0.0.1", ...ports);
    assertEquals(r.code, 1, r.stderr);
    assertEquals(
      r.stderr.trim(),
      `error: Cannot listen on 127.0.0.1:${port}: address in use`,
    );
  }
});

Deno.test("relay.ts with equal --server-port and --client-port exits 2 (0 for both is fine)", async () => {
  const r = await run("relay.ts", "--server-port=8123", "--client-port=8123");
  assertEquals(r.code, 2, r.stderr);
  ok(
    r.stderr.includes(
      "error: --server-port and --client-port must differ (both 8123)",
    ),
    r.stderr,
  );
  ok(r.stderr.includes("Usage:"), r.stderr);
  await using relay = Proc.deno("relay.ts", [
    "--host=127.0.0.1",
    "--server-port=0",
    "--client-port=0",
  ]);
  await relay.waitErr(/Relay listening/);
});

Deno.test("Ctrl-C with pairs open logs the drain; a second Ctrl-C stops at once", async () => {
  await using relay = await relayProc("--drain-timeout=30");
  await reserve({ relay: relay.server, name: "draining" });
  const first = await helperPair(relay, "draining");
  const second = await helperPair(relay, "draining");
  using _s1 = first.s, _c1 = first.c, _s2 = second.s, _c2 = second.c;
  await send(first.c, first.s, "before");
  relay.proc.kill("SIGINT");
  await relay.proc.waitErr(
    /Draining 2 pairs for up to 30 s; Ctrl-C again to stop now/,
  );
  // still draining: the pairs carry bytes
  await send(second.c, second.s, "while draining");
  relay.proc.kill("SIGINT");
  const status = await relay.proc.status();
  assertEquals(status.code, 130, relay.proc.err);
  ok(/Stopping now: 2 pairs cut/.test(relay.proc.err), relay.proc.err);
  assertEquals(text(await readAll(first.c)), "");
});

Deno.test("server.ts warns at start when nothing answers at --to; client.ts --stdio then exits 1 saying the server closed before sending anything", async () => {
  await using relay = startRelay();
  await reserve({ relay: relay.server, name: "nothing" });
  const closed = freePort();
  await using server = serverTs(
    relay.server,
    "nothing",
    `127.0.0.1:${closed}`,
  );
  await server.waitErr(
    new RegExp(`Nothing answers at --to "?127.0.0.1:${closed}`),
  );
  await server.waitErr(/Parked at relay/);
  await using client = clientTs(relay.client, "nothing", "--stdio");
  await client.write("anyone?");
  await client.closeStdin();
  assertEquals((await client.status()).code, 1, client.err);
  ok(
    /The server of "nothing" closed the connection before sending anything/
      .test(client.err),
    client.err,
  );
  assertEquals(client.out, "");
});

Deno.test("server.ts logs when it is parked, and again once a restarted relay has it back within --max-backoff", async () => {
  const [serverPort, clientPort] = freePorts(2);
  const first = startRelay({ serverPort, clientPort });
  await using echo = echoService();
  await using server = serverTs(
    `127.0.0.1:${serverPort}`,
    "back",
    echo.to,
    ...["--max-backoff", "0.2", "--pool", "3"],
  );
  const parkedLine = new RegExp(
    `Parked at relay "?127\\.0\\.0\\.1:${serverPort}"? as "?back"? \\(pool 3\\)`,
    "g",
  );
  await server.waitErr(parkedLine);
  await first.shutdown();
  await server.waitErr(/Relay connection for "?back"? failed/);
  await using second = startRelay({ serverPort, clientPort });
  await until(
    () => (server.err.match(parkedLine) ?? []).length === 2,
    server.err,
  );
  using conn = await connect({ relay: second.client, name: "back" });
  await conn.write(bytes("still here"));
  await conn.closeWrite();
  assertEquals(text(await readAll(conn)), "echo:still here");
});

Deno.test("server.ts and client.ts exit 2 with the usage on a flag given twice", async () => {
  const results = await Promise.all([
    run("server.ts", ...["--relay", "127.0.0.1:1", "--to", "127.0.0.1:2"], ...[
      "--name",
      "a",
      "--name",
      "b",
    ]),
    run(
      "client.ts",
      "--relay",
      "127.0.0.1:1",
      "--name",
      "a",
      "--stdio",
      "--stdio",
    ),
    run(
      "client.ts",
      "--relay=127.0.0.1:1",
      "--relay",
      "127.0.0.1:2",
      "--name",
      "a",
      "--stdio",
    ),
    run(
      "client.ts",
      "--relay",
      "127.0.0.1:1",
      "--name",
      "a",
      "--stdio",
      "--tls",
      "--no-tls",
    ),
  ]);
  for (const [i, flag] of ["--name", "--stdio", "--relay", "--tls"].entries()) {
    const r = results[i];
    assertEquals(r.code, 2, r.stderr);
    ok(r.stderr.includes(`${flag} is given more than once`), r.stderr);
    ok(r.stderr.includes("Usage:"), r.stderr);
  }
});

Deno.test("server.ts and client.ts exit 2 with the usage on a bad --relay, --to, --listen, --pool or --max-backoff", async () => {
  const server = (...extra: string[]) => [
    "server.ts",
    ...["--name", "n"],
    ...extra,
  ];
  const client = (...extra: string[]) => ["client.ts", "--name", "n", ...extra];
  const cases: [string[], RegExp][] = [
    [
      server("--relay", "host:99999", "--to", "127.0.0.1:1"),
      /--relay takes HOST\[:PORT\]/,
    ],
    [server("--relay", "host:0", "--to", "127.0.0.1:1"), /--relay takes/],
    [server("--relay", "", "--to", "127.0.0.1:1"), /--relay takes/],
    [server("--relay", "h", "--to", "22"), /--to takes HOST:PORT/],
    [server("--relay", "h", "--to", "h:70000"), /--to takes HOST:PORT/],
    [server("--relay", "h", "--to", "h:1", "--pool", "0"), /--pool/],
    [
      server("--relay", "h", "--to", "h:1", "--max-backoff", "0"),
      /--max-backoff/,
    ],
    [client("--relay", "host:99999", "--stdio"), /--relay takes HOST\[:PORT\]/],
    [client("--relay", "h", "--listen", "abc"), /--listen takes \[HOST:\]PORT/],
    [
      client("--relay", "h", "--listen", "70000"),
      /--listen takes \[HOST:\]PORT/,
    ],
    [client("--relay", "h", "--listen", "h:"), /--listen takes \[HOST:\]PORT/],
    [client("--relay", "h", "--stdio", "--linger", "soon"), /--linger/],
  ];
  const results = await Promise.all(
    cases.map(([args]) => run(...args as [string, ...string[]])),
  );
  for (const [i, r] of results.entries()) {
    const [args, message] = cases[i];
    assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    ok(message.test(r.stderr), `${args.join(" ")}: ${r.stderr}`);
    ok(r.stderr.includes("Usage:"), r.stderr);
  }
});

Deno.test("server.ts and client.ts --help list every log level they accept", async () => {
  const levels = ["trace", "debug", "info", "warning", "error", "fatal"];
  const [s, c] = await Promise.all([
    run("server.ts", "--help"),
    run("client.ts", "--help"),
  ]);
  for (const r of [s, c]) {
    const line = r.stdout.split("\n").find((l) => l.includes("--log-level"));
    ok(line, r.stdout);
    for (const level of levels) ok(line.includes(level), line);
  }
  ok(s.stdout.includes("--max-backoff"), s.stdout);
  ok(c.stdout.includes("--linger"), c.stdout);
  // and what they list is accepted (the bad value exits 2 on --to, not on the level)
  const runs = await Promise.all(
    levels.map((level) =>
      run(
        "server.ts",
        "--relay",
        "h",
        "--name",
        "n",
        "--to",
        "bad",
        "--log-level",
        level,
      )
    ),
  );
  for (const r of runs) {
    assertEquals(r.code, 2, r.stderr);
    ok(/--to takes/.test(r.stderr), r.stderr);
  }
});

Deno.test("client.ts --listen on a port in use exits 1: Cannot listen on 127.0.0.1:PORT: address in use", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = taken.addr.port;
  const r = await run(
    "client.ts",
    ...["--relay", "127.0.0.1:1", "--name", "n", "--listen", String(port)],
  );
  assertEquals(r.code, 1, r.stderr);
  ok(
    r.stderr.includes(`Cannot listen on 127.0.0.1:${port}: address in use`),
    r.stderr,
  );
  ok(!/ at .*\.ts:\d+/.test(r.stderr), `a stack trace: ${r.stderr}`);
});

Deno.test("client.ts at the servers' port and server.ts at the clients' port are told which port to use", async () => {
  await using relay = startRelay();
  await using echo = echoService();
  const c = await run(
    "client.ts",
    "--relay",
    relay.server,
    "--name",
    "n",
    "--stdio",
  );
  assertEquals(c.code, 1, c.stderr);
  ok(
    c.stderr.includes(
      `${relay.server} is the servers' port; clients use the clients' port (default 9010)`,
    ),
    c.stderr,
  );
  await using server = serverTs(relay.client, "n", echo.to);
  assertEquals((await server.status()).code, 1, server.err);
  ok(
    server.err.includes(
      `${relay.client} is the clients' port; servers use the servers' port (default 8010)`,
    ),
    server.err,
  );
});

Deno.test("deno task server and deno task client run the executables from a checkout", async () => {
  const task = (name: string) =>
    new Deno.Command(Deno.execPath(), {
      args: ["task", "-q", name, "--help"],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
    }).output();
  const [s, c] = await Promise.all([task("server"), task("client")]);
  assertEquals([s.code, c.code], [0, 0], text(s.stderr) + text(c.stderr));
  ok(text(s.stdout).includes("tcp-relay server"), text(s.stdout));
  ok(text(c.stdout).includes("tcp-relay client"), text(c.stdout));
});
