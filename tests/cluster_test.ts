// The cluster for real: relay.ts processes joined by a real redis-server,
// clients on one node reaching servers parked on another.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { accept, connect, RelayError } from "../mod.ts";
import {
  bytes,
  firstDifference,
  randomBytes,
  readAll,
  readExactly,
  rejectsWith,
  text,
} from "./_helpers.ts";
import { Proc, run } from "./_proc.ts";
import { eventually, hasRedis, TestRedis } from "./_redis.ts";
import { adminUrl } from "./_admin.ts";
import {
  cluster,
  echoOnce,
  echoServer,
  type Node,
  parkedIn,
} from "./_cluster.ts";
import { forward } from "../cluster/_dial.ts";
import { PEER_GREETING } from "../cluster/_link.ts";
import { parkedKey } from "../cluster/_registry.ts";

const ignore = !hasRedis();
if (ignore) console.log("cluster tests skipped: no redis-server on PATH");

Deno.test({
  name:
    "cluster: a client on one node reaches a server on another, 10 MB each way intact, half-close carried",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b", "c"]);
    const [a, b] = nodes;
    const serving = accept({ relay: b.server, name: "big" });
    await parkedIn(redis, "b", "big");
    const client = await connect({ relay: a.client, name: "big" });
    const server = await serving;
    const up = randomBytes(10_000_000, 1), down = randomBytes(10_000_000, 2);
    const send = async (c: Deno.TcpConn, data: Uint8Array) => {
      for (let off = 0; off < data.length; off += 65536) {
        let o = off;
        const end = Math.min(off + 65536, data.length);
        while (o < end) o += await c.write(data.subarray(o, end));
      }
      await c.closeWrite();
    };
    const [gotUp, gotDown] = await Promise.all([
      readAll(server),
      readAll(client),
      send(client, up),
      send(server, down),
    ]);
    assertEquals(firstDifference(gotUp, up), -1);
    assertEquals(firstDifference(gotDown, down), -1);
    client.close();
    server.close();
    ok(a.proc.err.includes('Paired "big"'), a.proc.err);
    // one line per pair in the cluster: the serving node logs it at debug
    ok(!b.proc.err.includes('Paired "big"'), b.proc.err);
  },
});

Deno.test({
  name:
    "cluster: a name nobody holds anywhere is NOEXIST on every node; a name held elsewhere with nothing parked is OFFLINE after the wait",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b"], "--wait=0.5");
    const [a, b] = nodes;
    await rejectsWith(connect({ relay: a.client, name: "ghost" }), "NOEXIST");
    // reserve on b (v1 by hand): known in the cluster, nothing parked
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: b.serverPort,
    });
    await readExactly(conn, 7);
    await conn.write(bytes("RESERVE\nheld\n"));
    assertEquals(text(await readAll(conn)), "OK\n");
    conn.close();
    await parkedIn(redis, "b", "held", 0);
    await rejectsWith(connect({ relay: a.client, name: "held" }), "OFFLINE");
  },
});

Deno.test({
  name:
    "cluster: a client asking on another node the moment a server parked is paired, not told NOEXIST",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b"]);
    const [a, b] = nodes;
    for (let i = 0; i < 5; i++) {
      const name = `fresh-${i}`;
      // v1 by hand: CONNECT, then at once a client on the other node
      const server = await Deno.connect({
        hostname: "127.0.0.1",
        port: b.serverPort,
      });
      await readExactly(server, 7);
      await server.write(bytes(`CONNECT\n${name}\n`));
      const client = await connect({ relay: a.client, name });
      assertEquals(text(await readExactly(server, 10)), "CONNECTED\n");
      client.close();
      server.close();
    }
  },
});

Deno.test({
  name:
    "cluster: the admin API of one node makes an owned name in Redis that every node holds to, and lists the names others made",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b"], "--admin=127.0.0.1:0");
    const [a, b] = nodes;
    const url = await adminUrl(a.proc);
    const made = await fetch(new URL("/api/names", url), {
      method: "POST",
      body: JSON.stringify({ name: "via-api" }),
    });
    assertEquals(made.status, 201);
    const { secret } = await made.json();
    ok(/^[0-9a-f]{64}$/.test(secret));
    // b holds to it: a v1 server may not serve the owned name there
    await eventually(async () => {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: b.serverPort,
      });
      const timer = setTimeout(() => conn.close(), 500);
      try {
        await readExactly(conn, 7);
        await conn.write(bytes("CONNECT\nvia-api\n"));
        return text(await readAll(conn)).startsWith("ERROR AUTH");
      } catch {
        return false;
      } finally {
        clearTimeout(timer);
        try {
          conn.close();
        } catch {
          // closed already
        }
      }
    }, "b to know via-api is owned");
    // a name made with `names add --cluster` shows up in a's list
    const added = await run(
      "relay.ts",
      "names",
      "add",
      "via-cli",
      "--cluster",
      redis.url(),
    );
    assertEquals(added.code, 0, added.stderr);
    await eventually(async () => {
      const listed = await (await fetch(new URL("/api/names", url))).json();
      const names = listed.names.map((n: { name: string }) => n.name);
      return names.includes("via-cli") && names.includes("via-api");
    }, "a's admin API to list both names");
  },
});

const FIXTURES = new URL("fixtures/", import.meta.url);
const hasRuby = (() => {
  try {
    return new Deno.Command("ruby", { args: ["--version"], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

/** A Ruby stand-in of the seed's helpers against `node`. */
function ruby(script: string, node: Node, ...args: string[]): Proc {
  return new Proc("ruby", [
    new URL(script, FIXTURES).pathname,
    "127.0.0.1",
    String(node.clientPort),
    String(node.serverPort),
    ...args,
  ]);
}

Deno.test({
  name:
    "cluster: the seed's client on one node reaches the seed's server on another (v1 both ends, half-close carried)",
  ignore: ignore || !hasRuby,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b", "c"]);
    const [a, b] = nodes;
    await using server = ruby("seed_server.rb", b, "seed-echo", "1");
    await server.wait(/ready/);
    await parkedIn(redis, "b", "seed-echo");
    await using client = ruby(
      "seed_client.rb",
      a,
      "seed-echo",
      "hello across nodes",
    );
    const { code } = await client.status();
    assertEquals([code, client.out], [0, "echo:hello across nodes"]);
    assertEquals((await server.status()).code, 0);
  },
});

Deno.test({
  name:
    "cluster: a stranger on the peer port cannot take a parked server (wrong secret, made-up proof, a request without a link); the cluster's client still gets it",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b"]);
    const [a, b] = nodes;
    const serving = accept({ relay: b.server, name: "svc" });
    await parkedIn(redis, "b", "svc");
    const addr = `127.0.0.1:${b.peerPort}`;
    const base = { addr, to: "b", name: "svc", node: "a" };
    const stolen = await forward({ ...base, secret: "not-the-secret-at-all" });
    ok(!stolen.paired);
    const raw = await Deno.connect({ hostname: "127.0.0.1", port: b.peerPort });
    const greeting = text(await readExactly(raw, PEER_GREETING.length + 34));
    ok(greeting.startsWith(`${PEER_GREETING} `), greeting);
    await raw.write(bytes(`LINK a ${"0".repeat(32)} ${"a".repeat(64)}\n`));
    assertEquals(text(await readAll(raw)), "ERROR AUTH wrong cluster proof\n");
    raw.close();
    await b.proc.waitErr(/Refused link .*wrong cluster proof/);
    const bare = await Deno.connect({
      hostname: "127.0.0.1",
      port: b.peerPort,
    });
    await readExactly(bare, PEER_GREETING.length + 34);
    await bare.write(bytes("FORWARD svc\n"));
    assertEquals(
      text(await readAll(bare)),
      "ERROR PROTOCOL bad link request\n",
    );
    bare.close();
    const client = await connect({ relay: a.client, name: "svc" });
    const server = await serving;
    await client.write(bytes("hi"));
    assertEquals(text(await readExactly(server, 2)), "hi");
    client.close();
    server.close();
  },
});

Deno.test({
  name:
    "cluster: kill -9 of the node with the parked servers: others stop routing to it, refuse promptly, and serve once the server parks elsewhere",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b", "c"], "--wait=1");
    const [a, b, c] = nodes;
    const first = echoServer(b.server, "fo");
    try {
      await parkedIn(redis, "b", "fo", 2);
      assertEquals(await echoOnce(a.client, "fo"), "ping");
      const killed = performance.now();
      b.proc.kill("SIGKILL");
      await b.proc.status();
      // at once: b is still in Redis for a moment, its peer port is dead
      const refused = await connect({ relay: a.client, name: "fo" }).then(
        (c) => c.close(),
        (e) => e,
      );
      ok(refused instanceof RelayError, String(refused));
      ok(["OFFLINE", "NOEXIST"].includes(refused.code), refused.code);
      // the lease lapses: b's entries are gone within 5 s, together
      await eventually(
        async () =>
          (await redis.cli("EXISTS", "tcp-relay:node:b:lease", parkedKey("b")))
            .trim() === "0",
        "b's entries to lapse",
        5_000,
      );
      console.log(
        `failover: b's entries lapsed ${
          Math.round(performance.now() - killed)
        } ms after kill -9`,
      );
      await rejectsWith(connect({ relay: a.client, name: "fo" }), "NOEXIST");
    } finally {
      await first.close();
    }
    const second = echoServer(c.server, "fo");
    try {
      await parkedIn(redis, "c", "fo", 2);
      assertEquals(await echoOnce(a.client, "fo"), "ping");
    } finally {
      await second.close();
    }
  },
});

Deno.test({
  name:
    "cluster: Redis stopped under traffic: pairs go on, local pairing goes on, cross-node requests are OFFLINE; restarted: nodes register again and route",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b"], "--wait=1");
    const [a, b] = nodes;
    const server = echoServer(b.server, "rd", 3);
    try {
      await parkedIn(redis, "b", "rd", 3);
      const live = await connect({ relay: a.client, name: "rd" });
      await live.write(bytes("one"));
      assertEquals(text(await readExactly(live, 3)), "one");
      await redis.stop();
      await live.write(bytes("two")); // the link needs no Redis
      assertEquals(text(await readExactly(live, 3)), "two");
      assertEquals(await echoOnce(b.client, "rd"), "ping"); // local on b
      await eventually(async () => {
        try {
          await echoOnce(a.client, "rd");
          return false;
        } catch (e) {
          return e instanceof RelayError && e.code === "OFFLINE";
        }
      }, "a's cross-node requests refused");
      await redis.restart();
      await parkedIn(redis, "b", "rd", 1);
      await eventually(
        async () => {
          try {
            return await echoOnce(a.client, "rd") === "ping";
          } catch {
            return false;
          }
        },
        "a routes again",
        15_000,
      );
      await live.write(bytes("three"));
      assertEquals(text(await readExactly(live, 5)), "three");
      live.close();
      ok(!a.proc.exited && !b.proc.exited);
      ok(a.proc.err.includes("registered in the cluster"));
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "cluster: a draining node (SIGTERM) withdraws its entries first, while its pairs finish",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b"], "--drain-timeout=5");
    const [a, b] = nodes;
    const server = echoServer(b.server, "dr", 1);
    try {
      await parkedIn(redis, "b", "dr", 1);
      const live = await connect({ relay: a.client, name: "dr" });
      b.proc.kill("SIGTERM");
      await eventually(
        async () =>
          (await redis.cli("EXISTS", "tcp-relay:node:b:lease", parkedKey("b")))
            .trim() === "0",
        "b's entries withdrawn",
      );
      ok(!b.proc.exited, "b still drains its pair");
      await live.write(bytes("bye"));
      assertEquals(text(await readExactly(live, 3)), "bye");
      live.close();
      assertEquals((await b.proc.status()).code, 0);
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "cluster: an owned name added with `names add --cluster` is owned on every node; a private one's clients need its key on every node",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b", "c"]);
    const [a, b, c] = nodes;
    const added = await run(
      "relay.ts",
      "names",
      "add",
      "own",
      "--cluster",
      redis.url(),
    );
    assertEquals(added.code, 0, added.stderr);
    const secret = /secret: ([0-9a-f]+)/.exec(added.stdout)![1];
    const priv = await run(
      "relay.ts",
      "names",
      "add",
      "nas",
      "--private",
      "--cluster",
      redis.url(),
    );
    const key = /key: +([0-9a-f]+)/.exec(priv.stdout)![1];
    const listed = await run(
      "relay.ts",
      "names",
      "list",
      "--cluster",
      redis.url(),
    );
    assertEquals(listed.stdout, "nas (private)\nown\n");
    // within a second every node has read them: a v1 server may not park it
    for (const node of nodes) {
      await eventually(async () => {
        const conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: node.serverPort,
        });
        const timer = setTimeout(() => conn.close(), 500); // parked: not yet
        try {
          await readExactly(conn, 7);
          await conn.write(bytes("CONNECT\nown\n"));
          const answer = text(await readAll(conn));
          conn.close();
          return answer.startsWith("ERROR AUTH");
        } catch {
          return false;
        } finally {
          clearTimeout(timer);
        }
      }, `${node.name} to know own is owned`);
    }
    await rejectsWith(
      accept({ relay: b.server, name: "own", secret: "0".repeat(64) }),
      "AUTH",
    );
    const serving = accept({ relay: b.server, name: "own", secret });
    await parkedIn(redis, "b", "own");
    const client = await connect({ relay: a.client, name: "own" });
    const server = await serving;
    await client.write(bytes("owned"));
    assertEquals(text(await readExactly(server, 5)), "owned");
    client.close();
    server.close();
    const privServing = accept({
      relay: b.server,
      name: "nas",
      secret: /secret: ([0-9a-f]+)/.exec(priv.stdout)![1],
    });
    await parkedIn(redis, "b", "nas");
    await rejectsWith(connect({ relay: a.client, name: "nas" }), "NOEXIST");
    const privClient = await connect({ relay: c.client, name: "nas", key });
    (await privServing).close();
    privClient.close();
  },
});
