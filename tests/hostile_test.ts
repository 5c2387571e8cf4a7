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
import type { NameOwners, RelayOptions } from "../relay.ts";
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
const TABLE: Record<string, { secret: string; clientKey?: string }> = {
  owned: { secret: SECRET },
  spare: { secret: SECRET },
  private: { secret: SECRET, clientKey: KEY },
};
/** "owned" and "spare" (secret only), "private" (secret and clients' key). */
const NAMES: NameOwners = { get: (name) => TABLE[name] };

/** A relay with those names and its limits applied to loopback peers too. */
const hostileRelay = (o: RelayOptions = {}) =>
  startRelay({
    names: NAMES,
    ...o,
    limits: { limitLoopback: true, ...o.limits },
  });

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

const hex = (b: Uint8Array) =>
  Array.from(b, (x) => (x + 256).toString(16).slice(1)).join("");
const bytesOf = (s: string) =>
  Uint8Array.from(s, (ch) => ch.charCodeAt(0) & 0xff);

/** `p`, or a rejection naming `what` after `ms`: a regression fails, not hangs. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) =>
    timer = setTimeout(() => reject(new Error(`Timed out: ${what}`)), ms)
  );
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
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

/** A nonce the relay issued on a connection that was then dropped. */
const staleNonce = (port: number) =>
  hello(port).then((h) => (h.raw.close(), h.nonce));

/** Sends the v2 request `request(nonce)` on `port`; the rest of the stream as text. */
async function v2Say(port: number, request: (nonce: string) => string) {
  const { raw, nonce } = await hello(port);
  using _r = raw;
  const sent = request(nonce);
  await raw.send(`${sent}\n`);
  const reading = raw.text().catch((e) => String(e));
  return {
    sent,
    answer: await within(reading, 3000, "no answer").catch(String),
  };
}

/** The owner of "owned" parked over v2 (PARKED read), with the line it sent. */
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
  await connections0(relay);
}

/** A live v2 pair through the helpers under `name` (with its secrets), bytes checked. */
async function livePair(relay: TestRelay, name: string, seed: number) {
  const ac = new AbortController();
  const { secret, clientKey: key } = TABLE[name] ?? {};
  const opts = { name, timeout: 3000, signal: ac.signal };
  const served = accept({ ...opts, relay: relay.server, secret });
  try {
    using c = await connect({ ...opts, relay: relay.client, key });
    using s = await within(served, 3000, "the live server to be paired");
    await exchange(c, s, seed);
  } finally {
    ac.abort();
    await served.catch(() => {});
  }
}

// 1. Random bytes.

const FUZZ_SEED = 0x5eed01;
const WORDS = ["CONNECT", "RESERVE", "RELEASE", "STOP", "HELLO 2", "owned"]
  .concat(["private", "fz", "PONG", " ", "\n", "\n", "\r\n", "\x00", "é"])
  .concat(["CONNECT\nfz\n", "CONNECT fz\n", "fz\n", "RESERVE\nfz\n"]);

/** Random bytes (after HELLO 2 or not), or a soup of protocol words, hex and lines. */
function fuzzInput(next: (n: number) => number, seed: number): Uint8Array {
  const length = next(601), kind = next(4);
  if (kind === 0) return randomBytes(length, seed);
  if (kind === 1) {
    const rest = randomBytes(Math.max(length - 8, 0), seed);
    return new Uint8Array([...bytesOf("HELLO 2\n"), ...rest]);
  }
  let s = kind === 3 ? "HELLO 2\n" : "";
  while (s.length < length) {
    const w = next(WORDS.length + 2);
    s += WORDS[w] ??
      hex(randomBytes(w === WORDS.length ? 32 : 3, seed + s.length));
  }
  return bytesOf(s.slice(0, length));
}

/** Sends `input`, maybe half-closes, reads until EOF or a short while; the text read. */
async function fuzzOne(port: number, input: Uint8Array, half: boolean) {
  const raw = await Raw.open(port), conn = raw.conn;
  let got = "";
  const timer = setTimeout(() => raw.close(), half ? 1000 : 40);
  const reading = (async () => {
    const buf = new Uint8Array(4096);
    for (let n; (n = await conn.read(buf)) !== null;) {
      got += latin1.decode(buf.subarray(0, n));
    }
  })().catch(() => {}); // reset, or closed by us
  try {
    await writeAll(conn, input);
    if (half) await conn.closeWrite();
  } catch { /* the relay closed first */ }
  await reading;
  clearTimeout(timer);
  raw.close();
  return got;
}

const NONCE = "HELLO 2 [0-9a-f]{32}\n";
const RELAY_LINE =
  /^(OK( [0-9a-f]{64})?|USED|UNKNOWN COMMAND|NOEXIST|OFFLINE|HELLO 2 [0-9a-f]{32}|PARKED [\d.]+|PING|ERROR [A-Z]+ .*)$/;

Deno.test(`2,000 random inputs per port never stop the relay (seed ${FUZZ_SEED})`, async () => {
  await using relay = hostileRelay({ wait: 200 });
  const next = prng(FUZZ_SEED);
  const inputs = Array.from({ length: 4000 }, (_, i) => ({
    input: fuzzInput(next, FUZZ_SEED + i),
    half: next(4) > 0,
  }));
  await inParallel(inputs.length, 64, async (i) => {
    const server = i % 2 === 0, { input, half } = inputs[i];
    const port = server ? relay.serverAddr.port : relay.clientAddr.port;
    const got = await fuzzOne(port, input, half);
    const lines = got.split("\n").slice(0, -1).map((l) => l.replace(/\r$/, ""));
    const what = `input ${i} (seed ${FUZZ_SEED}) ${
      JSON.stringify(latin1.decode(input))
    } got ${JSON.stringify(got.slice(0, 300))}`;
    if (lines.length === 0) return;
    const greeting = server
      ? /^(SERVER|ERROR LIMIT .*)$/
      : /^(CLIENT|ERROR LIMIT .*)$/;
    ok(greeting.test(lines[0]), what);
    for (const line of lines.slice(1)) {
      if (line === "CONNECTED") break; // application data follows
      ok(RELAY_LINE.test(line), what);
    }
  });
  await connections0(relay);
  await livePair(relay, "owned", FUZZ_SEED);
  await healthyPairWorks(relay);
});

// 2. Resets at every handshake step.

/** A node socket (able to reset) that keeps what it reads. */
class Peer {
  text = "";
  constructor(readonly sock: net.Socket) {
    sock.on("data", (d: Uint8Array) => this.text += latin1.decode(d));
  }
  async line(re: RegExp): Promise<string> {
    const find = () =>
      this.text.split("\n").slice(0, -1).find((l) => re.test(l));
    await until(() => find() !== undefined, `a line ${re}`, 3000);
    return find()!;
  }
}

/**
 * [where, the name a live pair then uses, steps before the abort, by "|"]:
 * `nonce` (greeting read, HELLO 2 sent, nonce read), `>text` (sent), `proof`
 * (the request with a valid proof), `parked`/`waiting` (seen in the stats),
 * or a line to read.
 */
const SCRIPTS: [string, string, string][] = [
  ["server port, after connect", "open", ""],
  ["server v1, after the greeting", "open", "SERVER"],
  ["server v1, mid-line", "open", ">CONN"],
  ["server v1, after the command line", "open", ">CONNECT\n"],
  ["server v1, mid-name", "open", ">CONNECT\nop"],
  ["server v1, while parked", "open", ">CONNECT\nopen\n|parked"],
  ["server v2, after HELLO 2", "owned", ">HELLO 2\n"],
  ["server v2, after the nonce", "owned", "nonce"],
  ["server v2, mid-request", "owned", "nonce|>CONNECT ow"],
  ["server v2, after the request line", "owned", "nonce|proof"],
  ["server v2, while parked", "owned", "nonce|proof|PARKED"],
  ["server v2, while a PING is out", "owned", "nonce|proof|PARKED|PING"],
  ["client port, after connect", "owned", ""],
  ["client v1, after the greeting", "owned", "CLIENT"],
  ["client v1, mid-line", "owned", ">own"],
  ["client v1, while waiting", "owned", ">owned\n|waiting"],
  ["client v2, after HELLO 2", "owned", ">HELLO 2\n"],
  ["client v2, after the nonce", "owned", "nonce"],
  ["client v2, mid-request", "owned", "nonce|>owned 0f"],
  ["client v2, while waiting", "owned", "nonce|>owned\n|waiting"],
  ["client v2, while waiting (private)", "private", "nonce|proof|waiting"],
];

async function play(p: Peer, relay: TestRelay, server: boolean, steps: string) {
  const stats = () => relay.stats();
  let nonce = "";
  for (const step of steps.split("|").filter(Boolean)) {
    if (step === "nonce") {
      await p.line(/^(SERVER|CLIENT)$/);
      p.sock.write("HELLO 2\n");
      nonce = (await p.line(/^HELLO 2 /)).slice(8);
    } else if (step.startsWith(">")) p.sock.write(step.slice(1));
    else if (step === "proof") {
      p.sock.write(
        server
          ? `CONNECT owned ${proof(SECRET, nonce, "CONNECT", "owned")}\n`
          : `private ${proof(KEY, nonce, "CLIENT", "private")}\n`,
      );
    } else if (step === "parked") {
      await until(() => stats().parked.open === 1, "the v1 server to park");
    } else if (step === "waiting") {
      await until(() => stats().waiting === 1, "the client to wait");
    } else await p.line(new RegExp(`^${step}`));
  }
}

Deno.test("resets and closes at every handshake step, v1 and v2, never leave a dead peer to pair with (seed 2)", async () => {
  await using relay = hostileRelay({ heartbeat: 100, wait: 200 });
  let seed = 2;
  for (const [label, name, steps] of SCRIPTS) {
    for (const how of ["reset", "close"]) {
      const caseSeed = seed++;
      try {
        const server = label.startsWith("server");
        const port = server ? relay.serverAddr.port : relay.clientAddr.port;
        const peer = new Peer(await resettable(port, ""));
        await play(peer, relay, server, steps);
        if (how === "reset") await reset(peer.sock);
        else {
          const closed = once(peer.sock, "close");
          peer.sock.destroy();
          await closed;
        }
        // A FIN from a waiting client is a half-close the relay keeps until
        // its wait ends; a reset is dropped at once. A parked server that ends
        // either way is dropped at once: the live pair below must not get it.
        if (how === "close" && /waiting/.test(label)) {
          await until(() => relay.stats().waiting === 0, "the client to go");
        }
        await livePair(relay, name, caseSeed);
        await connections0(relay);
      } catch (e) {
        const what = `${label}, then ${how} (seed ${caseSeed})`;
        throw new Error(`${what}: ${e}`, { cause: e });
      }
    }
  }
  await healthyPairWorks(relay);
});

// 3. Idle handshakes.

Deno.test("1,000 idle handshakes at once are closed by the handshake timeout while the relay serves on (seed 3)", async () => {
  await using relay = hostileRelay({
    handshakeTimeout: 500,
    limits: { maxPerIp: 5000 },
  });
  const sp = relay.serverAddr.port, cp = relay.clientAddr.port;
  const late = "ERROR TIMEOUT handshake timed out\n", v2 = `${NONCE}${late}`;
  const want = [`SERVER\n${late}`, `SERVER\n${v2}`, "CLIENT\nNOEXIST\n"]
    .concat(`CLIENT\n${v2}`).map((re) => new RegExp(`^${re}$`));
  const answers: Promise<string>[] = [], conns: Raw[] = [];
  try {
    await inParallel(1000, 100, async (i) => {
      const raw = await Raw.open(i % 4 < 2 ? sp : cp);
      conns.push(raw);
      if (i % 2 === 1) await raw.send("HELLO 2\n");
      answers[i] = raw.text().catch((e) => `read failed: ${e}`);
    });
    await livePair(relay, "owned", 3); // responsive meanwhile
    const got = await within(Promise.all(answers), 5000, "their close");
    got.forEach((text, i) => ok(want[i % 4].test(text), `${i}: ${text}`));
  } finally {
    conns.forEach((c) => c.close());
  }
  await connections0(relay);
  await healthyPairWorks(relay);
});

// 4. Endless lines.

Deno.test("endless lines on both ports are cut at 256 bytes with an error line (seed 4)", async () => {
  await using relay = hostileRelay();
  const sp = relay.serverAddr.port, cp = relay.clientAddr.port;
  const err = "ERROR PROTOCOL Line longer than 256 bytes\n", nonce = NONCE;
  const cases: [string, number, string, string][] = [
    ["server v1", sp, "", `SERVER\n${err}`],
    ["server v1 name", sp, "CONNECT\n", `SERVER\n${err}`],
    ["server v2", sp, "HELLO 2\n", `SERVER\n${nonce}${err}`],
    ["client v1", cp, "", "CLIENT\nNOEXIST\n"],
    ["client v2", cp, "HELLO 2\n", `CLIENT\n${nonce}${err}`],
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
    const got = await within(answer, 3000, `${label}: the relay's answer`);
    ok(new RegExp(`^${want}$`).test(got), `${label}: ${JSON.stringify(got)}`);
  }
  await connections0(relay);
  await healthyPairWorks(relay);
});

// 5. Proofs.

Deno.test("wrong, stale and replayed proofs are refused for every command, and the owner stays parked (seed 5)", async () => {
  await using relay = hostileRelay({
    wait: 50,
    limits: { maxFailedProofs: 1000 },
  });
  const sp = relay.serverAddr.port, cp = relay.clientAddr.port, next = prng(5);
  const random = () => randomBytes(32, next(1e9));
  using owner = await parkOwner(relay);
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
    // A valid proof works, once (CONNECT's is the parked owner's).
    const captured = command === "CONNECT"
      ? { sent: owner.sent, answer: valid }
      : await v2Say(port, (n) => line(proof(secret, n, command, name)));
    ok(captured.answer.startsWith(valid), `${command}: ${captured.answer}`);
    const stale = await staleNonce(port), client = command === "CLIENT";
    const other = client ? "CONNECT" : "CLIENT",
      refused = client ? "NOEXIST\n" : "ERROR AUTH ";
    const attempts: [string, (n: string) => string][] = [
      ["missing", () => line("")],
      ["wrong secret", (n) => line(proof(hex(random()), n, command, name))],
      ["random", () => line(hex(random()))],
      ["malformed", () => line("zz" + "0".repeat(62))],
      ["other command", (n) => line(proof(secret, n, other, name))],
      ["other name", (n) => line(proof(secret, n, command, "fz"))],
      ["stale", () => line(proof(secret, stale, command, name))],
      ["replayed", () => captured.sent],
    ];
    for (const [kind, request] of attempts) {
      const { answer, sent } = await v2Say(port, request);
      const want = kind === "missing" && command === "RESERVE"
        ? "USED"
        : refused;
      ok(answer.startsWith(want), `${kind} proof (seed 5) ${sent}: ${answer}`);
    }
  }
  await ownerPairs(relay, owner, 5);
  await healthyPairWorks(relay);
});

Deno.test("after 5 failed proofs the 6th attempt, even valid, hears ERROR RATE; the owner stays parked (seed 6)", async () => {
  await using relay = hostileRelay({ limits: { maxFailedProofs: 5 } });
  const sp = relay.serverAddr.port, cp = relay.clientAddr.port;
  using owner = await parkOwner(relay);
  const valid = (command: string) => (n: string) =>
    `${command} owned ${proof(SECRET, n, command, "owned")}`;
  const reserved = await v2Say(sp, valid("RESERVE"));
  assertEquals(reserved.answer, "OK\n");
  const stale = await staleNonce(sp);
  const wrong = (n: string) =>
    proof(hex(randomBytes(32, 6)), n, "CONNECT", "owned");
  const failures: [number, (n: string) => string, string][] = [
    [sp, (n) => `CONNECT owned ${wrong(n)}`, "ERROR AUTH"],
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
    ok(answer.startsWith("ERROR RATE"), `valid ${command}: ${answer}`);
  }
  const key = (n: string) => `private ${proof(KEY, n, "CLIENT", "private")}`;
  assertEquals((await v2Say(cp, key)).answer, "NOEXIST\n");
  await ownerPairs(relay, owner, 6);
  await healthyPairWorks(relay);
});

// 6. v1 peers on owned names.

Deno.test("a v1 peer cannot take an owned name or reach a private one; the owner stays parked (seed 7)", async () => {
  await using relay = hostileRelay();
  using owner = await parkOwner(relay);
  const sp = relay.serverAddr.port, auth = /^SERVER\nERROR AUTH owned is owned/;
  const cases: [number, string, RegExp][] = [
    [sp, "CONNECT\nowned\n", auth],
    [sp, "connect\r\nowned\r\n", auth],
    [sp, "RELEASE\nowned\n", auth],
    [sp, "RESERVE\nowned\n", /^SERVER\nUSED\n$/],
    [relay.clientAddr.port, "private\n", /^CLIENT\nNOEXIST\n$/],
  ];
  for (const [port, input, want] of cases) {
    using raw = await Raw.open(port);
    await raw.send(input);
    const got = await within(raw.text(), 3000, JSON.stringify(input));
    ok(want.test(got), `${JSON.stringify(input)}: ${JSON.stringify(got)}`);
  }
  await ownerPairs(relay, owner, 7);
  await healthyPairWorks(relay);
});

// 7. A slow reader.

Deno.test("a slow reader stalls the writer with bounded buffering, then gets every byte (seed 8)", async () => {
  await using relay = hostileRelay();
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
  // The server reads nothing: wait until the writer makes no progress for a while.
  let last = -1, still = 0;
  const stalled = () => {
    still = written === last ? still + 1 : 0;
    last = written;
    return still >= 60;
  };
  await until(stalled, "the writer to stall", 20_000);
  ok(written < payload.length, `all ${written} bytes taken: unbounded`);
  const got = await readAll(s);
  await writing;
  const at = firstDifference(got, payload);
  ok(at === -1, `${got.length} bytes, first difference at ${at}`);
  s.close();
  c.close();
  await connections0(relay);
  await healthyPairWorks(relay);
});
