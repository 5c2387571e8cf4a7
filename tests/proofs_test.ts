// Hostile peers against owned and private names: wrong, stale and replayed
// proofs, failed-proof limits, v1 peers on owned names, and a slow reader on an
// owned pair. Seeded; each test ends with a healthy pair and 0 connections.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { proof } from "../protocol/_auth.ts";
import { accept, connect } from "../mod.ts";
import {
  firstDifference,
  healthyPairWorks,
  randomBytes,
  Raw,
  readAll,
  until,
} from "./_helpers.ts";

import {
  connections0,
  hex,
  hostileRelay,
  KEY,
  ownerPairs,
  parkOwner,
  prng,
  SECRET,
  staleNonce,
  v2Say,
  within,
} from "./_hostile.ts";

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
