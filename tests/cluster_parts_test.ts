// The cluster's parts on their own, against a real redis-server: the
// registry's keys and leases, and the authenticated node-to-node link.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { leaseKey, parkedKey, Registry } from "../cluster/_registry.ts";
import { forward, type Forwarded, LinkListener } from "../cluster/_link.ts";
import { bytes, Raw, readAll, text } from "./_helpers.ts";
import { eventually, hasRedis, TestRedis } from "./_redis.ts";

const ignore = !hasRedis();
const SECRET = "s".repeat(32);

Deno.test({
  name:
    "registry: a node's lease and parked counts are in Redis under a 3 s TTL, found by other nodes, withdrawn together",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    const counts = new Map([["web", 2], ["idle", 0]]);
    const a = new Registry({
      url: redis.url(),
      node: "a",
      addr: "127.0.0.1:1",
      snapshot: () => counts,
    });
    const b = new Registry({
      url: redis.url(),
      node: "b",
      addr: "127.0.0.1:2",
      snapshot: () => new Map(),
    });
    try {
      await eventually(() => a.up && b.up, "both up");
      await b.refresh();
      assertEquals(b.members(), [{ node: "a", addr: "127.0.0.1:1" }]);
      const ttl = Number(await redis.cli("PTTL", leaseKey("a")));
      ok(ttl > 0 && ttl <= 3000, `lease TTL ${ttl}`);
      const pttl = Number(await redis.cli("PTTL", parkedKey("a")));
      ok(pttl > 0 && pttl <= 3000, `parked TTL ${pttl}`);
      assertEquals(await b.find("web"), {
        known: true,
        nodes: [{ node: "a", addr: "127.0.0.1:1", parked: 2 }],
      });
      assertEquals(await b.find("idle"), { known: true, nodes: [] });
      assertEquals(await b.find("nope"), { known: false, nodes: [] });
      counts.set("web", 0);
      a.publish("web", 0);
      await eventually(
        async () => (await b.find("web")).nodes.length === 0,
        "web unparked",
      );
      await a.withdraw();
      assertEquals((await redis.cli("EXISTS", leaseKey("a"))).trim(), "0");
      assertEquals((await redis.cli("EXISTS", parkedKey("a"))).trim(), "0");
    } finally {
      await a.close();
      await b.close();
    }
  },
});

Deno.test({
  name:
    "registry: after Redis restarts empty, a node registers its lease and counts again",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    const a = new Registry({
      url: redis.url(),
      node: "a",
      addr: "127.0.0.1:1",
      snapshot: () => new Map([["web", 1]]),
    });
    try {
      await eventually(() => a.up, "a up");
      await redis.stop();
      await eventually(() => !a.up, "a down");
      await redis.restart();
      await eventually(
        async () =>
          (await redis.cli("HGET", parkedKey("a"), "web")).trim() === "1",
        "re-registered",
      );
      ok(a.up);
    } finally {
      await a.close();
    }
  },
});

/** A peer port whose forwarded requests are answered CONNECTED and echoed. */
function echoPeer(node: string, seen: Forwarded[]): LinkListener {
  return new LinkListener(
    { hostname: "127.0.0.1", port: 0, node, secret: SECRET },
    async (req) => {
      seen.push(req);
      await req.conn.write(bytes("CONNECTED\n"));
      const got = await readAll(req.conn);
      await req.conn.write(got);
      req.conn.close();
    },
  );
}

Deno.test("link: a forwarded request with the cluster secret is paired and carries bytes", async () => {
  const seen: Forwarded[] = [];
  const peer = echoPeer("b", seen);
  try {
    const got = await forward({
      addr: `127.0.0.1:${peer.addr.port}`,
      to: "b",
      name: "web",
      node: "a",
      secret: SECRET,
    });
    ok(got.paired);
    await got.conn.write(bytes("ping"));
    await got.conn.closeWrite();
    assertEquals(text(await readAll(got.conn)), "ping");
    got.conn.close();
    assertEquals(seen.map((r) => [r.name, r.from]), [["web", "a"]]);
  } finally {
    peer.close();
  }
});

Deno.test("link: a stranger on the peer port cannot take a pairing (wrong secret, a made-up proof, junk) or pose as a node", async () => {
  const seen: Forwarded[] = [];
  const peer = echoPeer("b", seen);
  const port = peer.addr.port;
  try {
    // the wrong secret
    const wrong = await forward({
      addr: `127.0.0.1:${port}`,
      to: "b",
      name: "web",
      node: "a",
      secret: "x".repeat(32),
    });
    ok(!wrong.paired);
    // a stranger by hand: a made-up proof
    using raw = await Raw.open(port);
    const greeting = await raw.line();
    ok(greeting?.startsWith("TCP-RELAY-PEER 1 "));
    await raw.send(`FORWARD web a ${"0".repeat(32)} ${"f".repeat(64)}\n`);
    assertEquals(await raw.line(), "ERROR AUTH wrong cluster proof");
    assertEquals(await raw.line(), null);
    using junk = await Raw.open(port);
    await junk.line();
    await junk.send("GET / HTTP/1.0\n");
    assertEquals(await junk.line(), "ERROR PROTOCOL bad link request");
    // a node at a stranger's address: its answer proves nothing
    const fake = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const faking = (async () => {
      const c = await fake.accept();
      await c.write(bytes(`TCP-RELAY-PEER 1 ${"1".repeat(32)}\n`));
      await c.read(new Uint8Array(512));
      await c.write(bytes(`PEER ${"2".repeat(64)}\nCONNECTED\n`));
      c.close();
    })();
    const posed = await forward({
      addr: `127.0.0.1:${fake.addr.port}`,
      to: "b",
      name: "web",
      node: "a",
      secret: SECRET,
    });
    await faking;
    fake.close();
    ok(!posed.paired);
    assertEquals(seen, []);
  } finally {
    peer.close();
  }
});

/** A self-signed certificate for 127.0.0.1 made by openssl, or undefined. */
async function selfSigned(): Promise<
  { cert: string; key: string } | undefined
> {
  const dir = await Deno.makeTempDir({ prefix: "cluster-tls-" });
  try {
    const out = await new Deno.Command("openssl", {
      args: [
        ...["req", "-x509", "-newkey", "ec"],
        ...["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"],
        ...["-subj", "/CN=localhost"],
        ...["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        ...["-addext", "basicConstraints=critical,CA:FALSE"],
        ...["-keyout", `${dir}/key.pem`, "-out", `${dir}/cert.pem`],
      ],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!out.success) return undefined;
    return {
      cert: await Deno.readTextFile(`${dir}/cert.pem`),
      key: await Deno.readTextFile(`${dir}/key.pem`),
    };
  } catch {
    return undefined;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("link: over TLS a forwarded request is paired and carries a half-close; an untrusted peer certificate is refused", async () => {
  const pem = await selfSigned();
  if (!pem) return console.log("skipped: no openssl");
  const tls = { ...pem, caCerts: [pem.cert] };
  const seen: Forwarded[] = [];
  const peer = new LinkListener(
    { hostname: "127.0.0.1", port: 0, node: "b", secret: SECRET, tls },
    async (req) => {
      seen.push(req);
      await req.conn.write(bytes("CONNECTED\n"));
      const got = await readAll(req.conn);
      await req.conn.write(got);
      req.conn.close();
    },
  );
  try {
    const base = {
      addr: `127.0.0.1:${peer.addr.port}`,
      to: "b",
      name: "web",
      node: "a",
      secret: SECRET,
    };
    const untrusted = await forward({ ...base, tls: { ...pem } });
    ok(!untrusted.paired);
    const got = await forward({ ...base, tls });
    ok(got.paired, got.paired ? "" : got.reason);
    await got.conn.write(bytes("over tls"));
    await got.conn.closeWrite();
    assertEquals(text(await readAll(got.conn)), "over tls");
    got.conn.close();
    assertEquals(seen.length, 1);
  } finally {
    peer.close();
  }
});
