// Hostile peers against an in-process relay with owned names (issue 4): random
// bytes, resets at every handshake step, idle handshakes, endless lines (the
// proofs, v1 peers on owned names and a slow reader are in proofs_test.ts).
// All randomness is seeded (the seed is in each test's name); each test ends
// with a healthy pair and the relay's connections back to 0.

import { ok } from "node:assert/strict";
import { once } from "node:events";
import type net from "node:net";
import { proof } from "../protocol/_auth.ts";
import { writeAll } from "../protocol/_wire.ts";
import {
  healthyPairWorks,
  inParallel,
  randomBytes,
  Raw,
  reset,
  resettable,
  type TestRelay,
  until,
} from "./_helpers.ts";

import {
  bytesOf,
  connections0,
  hex,
  hostileRelay,
  KEY,
  latin1,
  livePair,
  prng,
  SECRET,
  within,
} from "./_hostile.ts";

const FUZZ_SEED = 0x5eed01;
const WORDS = ["CONNECT", "RESERVE", "RELEASE", "STOP", "HELLO 2", "owned"]
  .concat(["private", "fz", "PONG", " ", "\n", "\n", "\r\n", "\x00", "é"])
  .concat(["CONNECT\nfz\n", "CONNECT fz\n", "fz\n", "RESERVE\nfz\n"])
  .concat(["WATCH fz\n", "WATCH owned\n", "PONG\n"]);

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
  /^(OK( [0-9a-f]{64})?|USED|UNKNOWN COMMAND|NOEXIST|OFFLINE|HELLO 2 [0-9a-f]{32}|PARKED [\d.]+|WATCHING [\d.]+|NEED \d+|PING|ERROR [A-Z]+ .*)$/;

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
