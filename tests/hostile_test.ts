// Hostile peers against an in-process relay with owned names (issue 4): random
// bytes, resets at every handshake step, idle handshakes, endless lines,
// wrong/stale/replayed proofs, v1 peers on owned names, a slow reader. All
// randomness is seeded (the seed is in each test's name); each test ends with
// a healthy pair and the relay's connections back to 0.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { once } from "node:events";
import type net from "node:net";
import { proof } from "../_auth.ts";
import { writeAll } from "../_protocol.ts";
import { accept, connect } from "../mod.ts";
import type { NameOwners } from "../relay.ts";
import {
  firstDifference,
  healthyPairWorks,
  inParallel,
  randomBytes,
  Raw,
  readAll,
  reset,
  resettable,
  startRelay,
  type TestRelay,
  until,
} from "./_helpers.ts";

const SECRET = "a1".repeat(32), KEY = "b2".repeat(32);
const latin1 = new TextDecoder("latin1");

/** "owned" and "spare" (secret only), "private" (secret and clients' key). */
function owners(): NameOwners {
  const table: Record<string, { secret: string; clientKey?: string }> = {
    owned: { secret: SECRET },
    spare: { secret: SECRET },
    private: { secret: SECRET, clientKey: KEY },
  };
  return { get: (name) => table[name] };
}

/** A seeded xorshift32 generator of whole numbers below `n`. */
function prng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const connections0 = (relay: TestRelay) =>
  until(() => relay.stats().connections === 0, "connections to return to 0");

/** A raw v2 handshake on `port`: greeting read, HELLO 2 sent, nonce read. */
async function hello(port: number): Promise<{ raw: Raw; nonce: string }> {
  const raw = await Raw.open(port);
  await raw.line();
  await raw.send("HELLO 2\n");
  const reply = (await raw.line()) ?? "";
  ok(/^HELLO 2 [0-9a-f]{32}$/.test(reply), `bad HELLO reply ${reply}`);
  return { raw, nonce: reply.slice(8) };
}

/** Sends the v2 request `request(nonce)` on `port`; the rest of the stream as text. */
async function v2Say(port: number, request: (nonce: string) => string) {
  const { raw, nonce } = await hello(port);
  using _r = raw;
  const sent = request(nonce);
  await raw.send(`${sent}\n`);
  return { sent, nonce, answer: await raw.text().catch((e) => String(e)) };
}

/** The owner of "owned" parked over v2 (PARKED read). */
async function parkOwner(relay: TestRelay) {
  const { raw, nonce } = await hello(relay.serverAddr.port);
  const sent = `CONNECT owned ${proof(SECRET, nonce, "CONNECT", "owned")}`;
  await raw.send(`${sent}\n`);
  ok((await raw.line())?.startsWith("PARKED"), "the owner is not parked");
  return Object.assign(raw, { sent });
}

/** Seeded bytes both ways over a paired client `c` and server `s`, with half-closes. */
async function exchange(c: Deno.TcpConn, s: Deno.TcpConn, seed: number) {
  const up = randomBytes(3000, seed), down = randomBytes(2000, seed + 1);
  await writeAll(c, up);
  await c.closeWrite();
  assertEquals(await readAll(s), up, `client to server, seed ${seed}`);
  await writeAll(s, down);
  await s.closeWrite();
  assertEquals(await readAll(c), down, `server to client, seed ${seed}`);
}

/** A v1 client pairs with the parked owner, whose next line is CONNECTED. */
async function ownerPairs(relay: TestRelay, owner: Raw, seed: number) {
  ok(relay.stats().parked.owned === 1, "the owner is no longer parked");
  using c = await Raw.open(relay.clientAddr.port);
  await c.send("owned\n");
  assertEquals([await c.line(), await c.line()], ["CLIENT", "CONNECTED"]);
  assertEquals(await owner.line(), "CONNECTED");
  await exchange(c.conn, owner.conn, seed);
}

/** A live v2 pair through the helpers under `name`, bytes checked. */
async function livePair(
  relay: TestRelay,
  name: string,
  seed: number,
  secret?: string,
  key?: string,
) {
  const ac = new AbortController();
  const opts = { name, timeout: 3000, signal: ac.signal };
  const served = accept({ ...opts, relay: relay.server, secret });
  try {
    using c = await connect({ ...opts, relay: relay.client, key });
    using s = await served;
    await exchange(c, s, seed);
  } finally {
    ac.abort();
    await served.catch(() => {});
  }
}

// 1. Random bytes.

const FUZZ_SEED = 0x5eed01;
const WORDS = ["CONNECT", "RESERVE", "RELEASE", "STOP", "HELLO 2", "owned"]
  .concat(["private", "fz", "PONG", " ", "\n", "\n", "\r\n", "\x00", "é"]);

/** Input `i`: random bytes, or HELLO 2 and random bytes, or a soup of protocol words. */
function fuzzInput(next: (n: number) => number, seed: number): Uint8Array {
  const length = next(601), kind = next(4);
  if (kind < 2) {
    const rest = randomBytes(length, seed);
    return kind === 0
      ? rest
      : new Uint8Array([...bytesOf("HELLO 2\n"), ...rest])
        .subarray(0, Math.max(length, 8));
  }
  let s = kind === 3 ? "HELLO 2\n" : "";
  while (s.length < length) {
    const w = next(WORDS.length + 2);
    s += w < WORDS.length
      ? WORDS[w]
      : hex(randomBytes(w === WORDS.length ? 32 : 3, seed + s.length));
  }
  return bytesOf(s.slice(0, length));
}

function bytesOf(s: string): Uint8Array {
  return Uint8Array.from(s, (ch) => ch.charCodeAt(0) & 0xff);
}

/** Sends `input`, maybe half-closes, reads until EOF or a short while; the text read. */
async function fuzzOne(port: number, input: Uint8Array, half: boolean) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const got: Uint8Array[] = [];
  const timer = setTimeout(() => closeQuietly(conn), half ? 1000 : 40);
  const reading = (async () => {
    try {
      for (;;) {
        const buf = new Uint8Array(4096);
        const n = await conn.read(buf);
        if (n === null) return;
        got.push(buf.subarray(0, n));
      }
    } catch { /* reset, or closed by us */ }
  })();
  try {
    await writeAll(conn, input);
    if (half) await conn.closeWrite();
  } catch { /* the relay closed first */ }
  await reading;
  clearTimeout(timer);
  closeQuietly(conn);
  return got.map((b) => latin1.decode(b)).join("");
}

function closeQuietly(c: { close(): void }) {
  try {
    c.close();
  } catch { /* closed already */ }
}

const RELAY_LINE =
  /^(OK( [0-9a-f]{64})?|USED|UNKNOWN COMMAND|NOEXIST|OFFLINE|HELLO 2 [0-9a-f]{32}|PARKED [\d.]+|PING|ERROR [A-Z]+ .*)$/;

Deno.test(`2,000 random inputs per port never stop the relay (seed ${FUZZ_SEED})`, async () => {
  await using relay = startRelay({
    names: owners(),
    wait: 200,
    limits: { limitLoopback: true },
  });
  const next = prng(FUZZ_SEED);
  const inputs = Array.from({ length: 4000 }, (_, i) => ({
    input: fuzzInput(next, FUZZ_SEED + i),
    half: next(4) > 0,
  }));
  await inParallel(inputs.length, 64, async (i) => {
    const server = i % 2 === 0;
    const port = server ? relay.serverAddr.port : relay.clientAddr.port;
    const got = await fuzzOne(port, inputs[i].input, inputs[i].half);
    const lines = got.split("\n").slice(0, -1).map((l) => l.replace(/\r$/, ""));
    const what = `input ${i} (seed ${FUZZ_SEED}) ${
      JSON.stringify(latin1.decode(inputs[i].input).slice(0, 80))
    } got ${JSON.stringify(got.slice(0, 200))}`;
    if (lines.length === 0) return;
    ok(
      lines[0] === (server ? "SERVER" : "CLIENT") ||
        lines[0].startsWith("ERROR LIMIT"),
      what,
    );
    for (const line of lines.slice(1)) {
      if (line === "CONNECTED") break; // application data follows
      ok(RELAY_LINE.test(line), what);
    }
  });
  await connections0(relay);
  await livePair(relay, "owned", FUZZ_SEED, SECRET);
  await healthyPairWorks(relay);
});

// 2. Resets at every handshake step.

/** A node socket (able to reset) that keeps what it reads. */
class Peer {
  text = "";
  constructor(readonly sock: net.Socket) {
    sock.on("data", (d: Uint8Array) => this.text += latin1.decode(d));
  }
  send(s: string) {
    this.sock.write(s);
  }
  async line(re: RegExp): Promise<string> {
    const find = () =>
      this.text.split("\n").slice(0, -1).find((l) => re.test(l));
    await until(() => find() !== undefined, `a line ${re}`, 3000);
    return find()!;
  }
  async nonce(): Promise<string> {
    await this.line(/^(SERVER|CLIENT)$/);
    this.send("HELLO 2\n");
    return (await this.line(/^HELLO 2 /)).slice(8);
  }
}

type Step = (p: Peer, relay: TestRelay) => Promise<unknown> | void;
const connectProof = (n: string) => proof(SECRET, n, "CONNECT", "owned");
const waiting = (relay: TestRelay) =>
  until(() => relay.stats().waiting === 1, "the client to wait");
const v2Parked: Step = async (p) => {
  p.send(`CONNECT owned ${connectProof(await p.nonce())}\n`);
  await p.line(/^PARKED /);
};

/** [label, server port?, the name a live pair then uses, steps before the abort]. */
const SCRIPTS: [string, boolean, string, Step][] = [
  ["server port, after connect", true, "open", () => {}],
  ["server v1, after the greeting", true, "open", (p) => p.line(/^SERVER$/)],
  ["server v1, mid-line", true, "open", (p) => p.send("CONN")],
  [
    "server v1, after the command line",
    true,
    "open",
    (p) => p.send("CONNECT\n"),
  ],
  ["server v1, mid-name", true, "open", (p) => p.send("CONNECT\nop")],
  ["server v1, while parked", true, "open", (p, r) => {
    p.send("CONNECT\nopen\n");
    return until(() => r.stats().parked.open === 1, "the v1 server to park");
  }],
  ["server v2, after HELLO 2", true, "owned", (p) => p.send("HELLO 2\n")],
  ["server v2, after the nonce", true, "owned", (p) => p.nonce()],
  ["server v2, mid-request", true, "owned", async (p) => {
    await p.nonce();
    p.send("CONNECT ow");
  }],
  ["server v2, after the request line", true, "owned", async (p) => {
    p.send(`CONNECT owned ${connectProof(await p.nonce())}\n`);
  }],
  ["server v2, while parked", true, "owned", v2Parked],
  ["server v2, while a PING is outstanding", true, "owned", async (p, r) => {
    await v2Parked(p, r);
    await p.line(/^PING$/);
  }],
  ["client port, after connect", false, "owned", () => {}],
  ["client v1, after the greeting", false, "owned", (p) => p.line(/^CLIENT$/)],
  ["client v1, mid-line", false, "owned", (p) => p.send("own")],
  ["client v1, while waiting", false, "owned", (p, r) => {
    p.send("owned\n");
    return waiting(r);
  }],
  ["client v2, after HELLO 2", false, "owned", (p) => p.send("HELLO 2\n")],
  ["client v2, after the nonce", false, "owned", (p) => p.nonce()],
  ["client v2, mid-request", false, "owned", async (p) => {
    await p.nonce();
    p.send("owned 0f");
  }],
  ["client v2, while waiting", false, "owned", async (p, r) => {
    await p.nonce();
    p.send("owned\n");
    await waiting(r);
  }],
  [
    "client v2, while waiting for a private name",
    false,
    "private",
    async (p, r) => {
      p.send(`private ${proof(KEY, await p.nonce(), "CLIENT", "private")}\n`);
      await waiting(r);
    },
  ],
];

Deno.test("resets and closes at every handshake step, v1 and v2, never leave a dead peer to pair with (seed 2)", async () => {
  await using relay = startRelay({
    names: owners(),
    heartbeat: 100,
    wait: 200,
    limits: { limitLoopback: true },
  });
  let seed = 2;
  for (const [label, server, name, steps] of SCRIPTS) {
    for (const how of ["reset", "close"]) {
      const what = `${label}, then ${how} (seed ${seed})`;
      try {
        const port = server ? relay.serverAddr.port : relay.clientAddr.port;
        const peer = new Peer(await resettable(port, ""));
        await steps(peer, relay);
        if (how === "reset") await reset(peer.sock);
        else {
          const closed = once(peer.sock, "close");
          peer.sock.destroy();
          await closed;
        }
        // A FIN from a waiting client is a half-close the relay keeps until
        // its wait ends; a reset is dropped at once. Parked servers that end
        // either way are dropped at once: the live pair below must not get one.
        if (how === "close" && /waiting/.test(label)) {
          await until(() => relay.stats().waiting === 0, "the client to go");
        }
        await livePair(
          relay,
          name,
          seed++,
          name === "open" ? undefined : SECRET,
          name === "private" ? KEY : undefined,
        );
        await connections0(relay);
      } catch (e) {
        throw new Error(`${what}: ${(e as Error).message}`, { cause: e });
      }
    }
  }
  await healthyPairWorks(relay);
});

// 3. Idle handshakes.

Deno.test("1,000 idle handshakes at once are closed by the handshake timeout while the relay serves on (seed 3)", async () => {
  await using relay = startRelay({
    names: owners(),
    handshakeTimeout: 500,
    limits: { limitLoopback: true, maxPerIp: 5000 },
  });
  const sp = relay.serverAddr.port, cp = relay.clientAddr.port;
  const want = [
    /^SERVER\nERROR TIMEOUT handshake timed out\n$/,
    /^SERVER\nHELLO 2 [0-9a-f]{32}\nERROR TIMEOUT handshake timed out\n$/,
    /^CLIENT\nNOEXIST\n$/,
    /^CLIENT\nHELLO 2 [0-9a-f]{32}\nERROR TIMEOUT handshake timed out\n$/,
  ];
  const answers: Promise<string>[] = [];
  const conns: Raw[] = [];
  try {
    await inParallel(1000, 100, async (i) => {
      const raw = await Raw.open(i % 4 < 2 ? sp : cp);
      conns.push(raw);
      if (i % 2 === 1) await raw.send("HELLO 2\n");
      answers[i] = raw.text().catch((e) => `read failed: ${e}`);
    });
    // Responsive meanwhile: a pair made while they are open works.
    await livePair(relay, "owned", 3, SECRET);
    const got = await Promise.all(answers);
    got.forEach((text, i) => ok(want[i % 4].test(text), `${i}: ${text}`));
  } finally {
    conns.forEach((c) => c.close());
  }
  await connections0(relay);
  await healthyPairWorks(relay);
});

// 4. Endless lines.

Deno.test("endless lines on both ports are cut at 256 bytes with an error line (seed 4)", async () => {
  await using relay = startRelay({ limits: { limitLoopback: true } });
  const sp = relay.serverAddr.port, cp = relay.clientAddr.port;
  const err = "ERROR PROTOCOL Line longer than 256 bytes\n",
    nonce = "HELLO 2 [0-9a-f]{32}\n";
  const cases: [string, number, string, RegExp][] = [
    ["server v1", sp, "", new RegExp(`^SERVER\n${err}$`)],
    ["server v1 name", sp, "CONNECT\n", new RegExp(`^SERVER\n${err}$`)],
    ["server v2", sp, "HELLO 2\n", new RegExp(`^SERVER\n${nonce}${err}$`)],
    ["client v1", cp, "", /^CLIENT\nNOEXIST\n$/],
    ["client v2", cp, "HELLO 2\n", new RegExp(`^CLIENT\n${nonce}${err}$`)],
  ];
  const stream = randomBytes(64 * 1024, 4).map((b) => b === 10 ? 32 : b);
  for (const [label, port, head, want] of cases) {
    using raw = await Raw.open(port);
    await raw.send(head);
    const answer = raw.text().catch((e) => `read failed: ${e}`);
    let sent = 0, stopped = false;
    try {
      // No "\n", ever: the relay must cut it short (64 MiB would be a failure).
      while (sent < 64 * 1024 * 1024) sent += await raw.conn.write(stream);
    } catch {
      stopped = true;
    }
    ok(stopped, `${label}: ${sent} bytes sent and the relay still reads`);
    const got = await answer;
    ok(want.test(got), `${label}: ${JSON.stringify(got)}`);
  }
  await connections0(relay);
  await healthyPairWorks(relay);
});

// 5. Proofs.

Deno.test("wrong, stale and replayed proofs are refused for every command, and the owner stays parked (seed 5)", async () => {
  await using relay = startRelay({
    names: owners(),
    wait: 50,
    limits: { limitLoopback: true, maxFailedProofs: 1000 },
  });
  const sp = relay.serverAddr.port, cp = relay.clientAddr.port, next = prng(5);
  const owner = await parkOwner(relay);
  using _o = owner;
  const commands: [string, number, string, string, string][] = [
    // command, port, name, secret, the answer to a valid proof
    ["CONNECT", sp, "owned", SECRET, "PARKED"],
    ["RESERVE", sp, "owned", SECRET, "OK"],
    ["RELEASE", sp, "spare", SECRET, "OK"],
    ["CLIENT", cp, "private", KEY, "OFFLINE"],
  ];
  for (const [command, port, name, secret, valid] of commands) {
    const line = (p: string) =>
      (command === "CLIENT" ? `${name} ${p}` : `${command} ${name} ${p}`)
        .trim();
    const refused = command === "CLIENT" ? "NOEXIST\n" : "ERROR AUTH ";
    // A valid proof works once (not for CONNECT owned: the owner is parked).
    const captured = command === "CONNECT"
      ? { sent: owner.sent }
      : await v2Say(port, (n) => line(proof(secret, n, command, name)));
    if ("answer" in captured) {
      ok(
        captured.answer.startsWith(valid),
        `valid ${command}: ${captured.answer}`,
      );
    }
    const stale = await hello(port).then((h) => (h.raw.close(), h.nonce));
    const other = command === "CLIENT" ? "CONNECT" : "CLIENT";
    const attempts: [string, (n: string) => string][] = [
      ["missing", () => line("")],
      [
        "wrong-secret",
        (n) => line(proof(hex(randomBytes(32, next(1e9))), n, command, name)),
      ],
      ["random", () => line(hex(randomBytes(32, next(1e9))))],
      ["malformed", () => line("zz" + "0".repeat(62))],
      ["other-command", (n) => line(proof(secret, n, other, name))],
      ["other-name", (n) => line(proof(secret, n, command, "fz"))],
      ["stale", () => line(proof(secret, stale, command, name))],
      ["replayed", () => captured.sent],
    ];
    for (const [kind, request] of attempts) {
      const { answer, sent } = await v2Say(port, request);
      const want = command === "RESERVE" && kind === "missing"
        ? "USED\n"
        : refused;
      ok(
        answer.startsWith(want),
        `${command} ${kind} (seed 5) ${sent}: ${answer}`,
      );
    }
  }
  await ownerPairs(relay, owner, 5);
  await connections0(relay);
  await healthyPairWorks(relay);
});

Deno.test("after 5 failed proofs the 6th attempt, even valid, hears ERROR RATE; the owner stays parked (seed 6)", async () => {
  await using relay = startRelay({
    names: owners(),
    limits: { limitLoopback: true, maxFailedProofs: 5 },
  });
  const sp = relay.serverAddr.port, cp = relay.clientAddr.port;
  const owner = await parkOwner(relay);
  using _o = owner;
  const valid = (command: string) => (n: string) =>
    `${command} owned ${proof(SECRET, n, command, "owned")}`;
  const reserved = await v2Say(sp, valid("RESERVE"));
  assertEquals(reserved.answer, "OK\n");
  const stale = await hello(sp).then((h) => (h.raw.close(), h.nonce));
  const failures: [number, (n: string) => string, string][] = [
    [
      sp,
      (n) =>
        `CONNECT owned ${
          proof(hex(randomBytes(32, 6)), n, "CONNECT", "owned")
        }`,
      "ERROR AUTH",
    ],
    [sp, () => valid("RESERVE")(stale), "ERROR AUTH"],
    [sp, () => reserved.sent, "ERROR AUTH"],
    [cp, (n) => `private ${proof(SECRET, n, "CLIENT", "private")}`, "NOEXIST"],
    [sp, () => `RELEASE owned ${hex(randomBytes(32, 7))}`, "ERROR AUTH"],
  ];
  for (const [port, request, want] of failures) {
    const { answer, sent } = await v2Say(port, request);
    ok(answer.startsWith(want), `${sent}: ${answer}`);
  }
  for (const command of ["CONNECT", "RESERVE", "RELEASE"]) {
    const { answer } = await v2Say(sp, valid(command));
    ok(
      answer.startsWith("ERROR RATE"),
      `valid ${command} after 5 failures: ${answer}`,
    );
  }
  const client = await v2Say(
    cp,
    (n) => `private ${proof(KEY, n, "CLIENT", "private")}`,
  );
  assertEquals(client.answer, "NOEXIST\n");
  await ownerPairs(relay, owner, 6);
  await connections0(relay);
  await healthyPairWorks(relay);
});

// 6. v1 peers on owned names.

Deno.test("a v1 peer cannot take an owned name or reach a private one; the owner stays parked (seed 7)", async () => {
  await using relay = startRelay({
    names: owners(),
    limits: { limitLoopback: true },
  });
  const owner = await parkOwner(relay);
  using _o = owner;
  const cases: [number, string, RegExp][] = [
    [
      relay.serverAddr.port,
      "CONNECT\nowned\n",
      /^SERVER\nERROR AUTH owned is owned/,
    ],
    [
      relay.serverAddr.port,
      "connect\r\nowned\r\n",
      /^SERVER\nERROR AUTH owned is owned/,
    ],
    [
      relay.serverAddr.port,
      "RELEASE\nowned\n",
      /^SERVER\nERROR AUTH owned is owned/,
    ],
    [relay.serverAddr.port, "RESERVE\nowned\n", /^SERVER\nUSED\n$/],
    [relay.clientAddr.port, "private\n", /^CLIENT\nNOEXIST\n$/],
  ];
  for (const [port, input, want] of cases) {
    using raw = await Raw.open(port);
    await raw.send(input);
    const got = await raw.text();
    ok(want.test(got), `${JSON.stringify(input)}: ${JSON.stringify(got)}`);
  }
  await ownerPairs(relay, owner, 7);
  await connections0(relay);
  await healthyPairWorks(relay);
});

// 7. A slow reader.

Deno.test("a slow reader stalls the writer with bounded buffering, then gets every byte (seed 8)", async () => {
  await using relay = startRelay({
    names: owners(),
    limits: { limitLoopback: true },
  });
  const payload = randomBytes(64 * 1024 * 1024, 8);
  const served = accept({ relay: relay.server, name: "owned", secret: SECRET });
  const c = await connect({ relay: relay.client, name: "owned" });
  const s = await served;
  let written = 0;
  const writing = (async () => {
    while (written < payload.length) {
      written += await c.write(payload.subarray(written, written + 256 * 1024));
    }
    await c.closeWrite();
  })();
  // Wait until the writer makes no progress for a while: it is stalled.
  let last = -1, still = 0;
  await until(
    () => {
      still = written === last ? still + 1 : 0;
      last = written;
      return still >= 60;
    },
    "the writer to stall",
    20_000,
  );
  ok(written < payload.length, `all ${written} bytes buffered: not bounded`);
  const got = await readAll(s);
  await writing;
  const at = firstDifference(got, payload);
  ok(
    at === -1,
    `${got.length} of ${payload.length} bytes, first difference at ${at}`,
  );
  s.close();
  c.close();
  await connections0(relay);
  await healthyPairWorks(relay);
});
