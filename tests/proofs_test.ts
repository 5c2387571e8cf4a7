// Hostile peers against owned and private names: wrong, stale and replayed
// proofs, failed-proof limits, v1 peers on owned names, and a slow reader on an
// owned pair. Seeded; each test ends with a healthy pair and 0 connections.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { proof, verify } from "../protocol/_auth.ts";
import { accept, connect } from "../mod.ts";
import {
  firstDifference,
  healthyPairWorks,
  randomBytes,
  Raw,
  readAll,
  startRelay,
  until,
} from "./_helpers.ts";

import {
  connections0,
  exchange,
  hello,
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

// The README's worked proof: what protocol/_auth.ts computes, what an
// independent HMAC (WebCrypto, OpenSSL) computes, and what a live relay takes.

/** The worked example of the README's "A worked proof", line by line. */
async function workedProof() {
  const readme = await Deno.readTextFile(
    new URL("../README.md", import.meta.url),
  );
  const at = readme.indexOf("#### A worked proof");
  ok(at >= 0, "the README has no worked proof");
  const block = (lang: string) => {
    const start = readme.indexOf("```" + lang + "\n", at) + lang.length + 4;
    return readme.slice(start, readme.indexOf("\n```", start));
  };
  const [owner, client] = block("text").split("\n\n").map((para) =>
    Object.fromEntries(
      para.split("\n").map((line) => {
        const m = /^(.+?) {2,}(.+)$/.exec(line);
        ok(m, `not "label  value": ${line}`);
        return [m[1], m[2]];
      }),
    )
  );
  const nonce = (hello: string) => {
    const m = /^HELLO 2 ([0-9a-f]{32})$/.exec(hello);
    ok(m, `not a v2 greeting: ${hello}`);
    return m[1];
  };
  const [command, comment] = block("sh").split("\n");
  return {
    owner: {
      secret: owner["owner's secret"],
      nonce: nonce(owner["relay>"]),
      message: owner.message,
      proof: owner.proof,
      line: owner["server>"],
    },
    client: {
      key: client["clients' key"],
      nonce: nonce(client["relay>"]),
      message: client.message,
      proof: client.proof,
      line: client["client>"],
    },
    openssl: { command, output: comment.replace(/^# /, "") },
  };
}

const ascii = new TextEncoder();

/** Hex HMAC-SHA256 of `message` under the key bytes `key`, by WebCrypto. */
async function webHmac(
  key: Uint8Array<ArrayBuffer>,
  message: string,
): Promise<string> {
  const k = await crypto.subtle.importKey(
    "raw",
    key,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return hex(
    new Uint8Array(await crypto.subtle.sign("HMAC", k, ascii.encode(message))),
  );
}

/** Hex HMAC-SHA256 of `message` by `openssl dgst`: `key` as text, or as hex bytes. */
async function opensslHmac(
  key: string,
  message: string,
  keyAs: "text" | "hexkey" = "text",
): Promise<string> {
  const mac = keyAs === "text"
    ? ["-hmac", key]
    : ["-mac", "HMAC", "-macopt", `hexkey:${key}`];
  const child = new Deno.Command("openssl", {
    args: ["dgst", "-sha256", ...mac],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(ascii.encode(message));
  await writer.close();
  const out = await child.output();
  const said = new TextDecoder().decode(out.stdout);
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  const m = /= ([0-9a-f]{64})\n$/.exec(said);
  ok(m, `openssl said ${said}`);
  return m[1];
}

const fromHex = (h: string) =>
  Uint8Array.from(h.match(/../g)!, (b) => parseInt(b, 16));

Deno.test("the README's worked proof is what the relay computes, keyed with the secret's hex text as ASCII", async () => {
  const { owner, client } = await workedProof();
  ok(/^[0-9a-f]{64}$/.test(owner.secret) && /^[0-9a-f]{64}$/.test(client.key));
  assertEquals(
    owner.message,
    `tcp-relay/2 ${owner.nonce} CONNECT home-ssh`,
  );
  assertEquals(client.message, `tcp-relay/2 ${client.nonce} CLIENT nas`);
  assertEquals(
    owner.proof,
    proof(owner.secret, owner.nonce, "CONNECT", "home-ssh"),
  );
  assertEquals(client.proof, proof(client.key, client.nonce, "CLIENT", "nas"));
  assertEquals(owner.line, `CONNECT home-ssh ${owner.proof}`);
  assertEquals(client.line, `nas ${client.proof}`);
  ok(verify(owner.secret, owner.nonce, "CONNECT", "home-ssh", owner.proof));
  ok(verify(client.key, client.nonce, "CLIENT", "nas", client.proof));
  // An independent HMAC agrees when keyed with the 64 ASCII bytes of the
  // text, and not with the 32 bytes the text encodes.
  for (
    const [key, example] of [[owner.secret, owner], [
      client.key,
      client,
    ]] as const
  ) {
    assertEquals(ascii.encode(key).length, 64);
    assertEquals(
      await webHmac(ascii.encode(key), example.message),
      example.proof,
    );
    ok(await webHmac(fromHex(key), example.message) !== example.proof);
  }
});

Deno.test({
  name:
    "OpenSSL agrees with the README's worked proof, and a live relay takes proofs OpenSSL makes",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    const { owner, client, openssl } = await workedProof();
    // The README's own command, as a user would paste it.
    const pasted = await new Deno.Command("sh", {
      args: ["-c", openssl.command],
      stdout: "piped",
    }).output();
    assertEquals(
      new TextDecoder().decode(pasted.stdout),
      `${openssl.output}\n`,
    );
    ok(openssl.output.endsWith(`= ${owner.proof}`), openssl.output);
    assertEquals(await opensslHmac(owner.secret, owner.message), owner.proof);
    assertEquals(await opensslHmac(client.key, client.message), client.proof);
    ok(
      await opensslHmac(owner.secret, owner.message, "hexkey") !== owner.proof,
      "hexkey: the decoded bytes give another proof",
    );
    // A relay holding the example's secrets takes OpenSSL's proofs on its
    // own nonces, and refuses one keyed with the decoded bytes.
    const table: Record<string, { secret: string; clientKey?: string }> = {
      "home-ssh": { secret: owner.secret },
      nas: { secret: owner.secret, clientKey: client.key },
    };
    await using relay = startRelay({ names: { get: (n) => table[n] } });
    const sp = relay.serverAddr.port, cp = relay.clientAddr.port;
    const signed =
      (key: string, command: string, name: string, keyAs?: "hexkey") =>
      async (nonce: string) => {
        const message = `tcp-relay/2 ${nonce} ${command} ${name}`;
        return await opensslHmac(key, message, keyAs);
      };
    const decoded = await hello(sp);
    {
      using _r = decoded.raw;
      const p = await signed(owner.secret, "CONNECT", "home-ssh", "hexkey")(
        decoded.nonce,
      );
      await decoded.raw.send(`CONNECT home-ssh ${p}\n`);
      ok((await decoded.raw.line())?.startsWith("ERROR AUTH"), "decoded bytes");
    }
    const server = await hello(sp);
    using _s = server.raw;
    const sp1 = await signed(owner.secret, "CONNECT", "nas")(server.nonce);
    await server.raw.send(`CONNECT nas ${sp1}\n`);
    ok(
      (await server.raw.line())?.startsWith("PARKED"),
      "the owner is not parked",
    );
    const asker = await hello(cp);
    using _c = asker.raw;
    const cp1 = await signed(client.key, "CLIENT", "nas")(asker.nonce);
    await asker.raw.send(`nas ${cp1}\n`);
    assertEquals(await asker.raw.line(), "CONNECTED");
    assertEquals(await server.raw.line(), "CONNECTED");
    await exchange(asker.raw.conn, server.raw.conn, 9);
  },
});
