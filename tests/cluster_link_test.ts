// The node-to-node link on its own: its handshake authenticated both ways
// ahead of need, its one forwarded request, strangers on the peer port, TLS,
// and the pool of warm links kept to every live node.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import {
  type Forwarded,
  LinkListener,
  PEER_GREETING,
} from "../cluster/_link.ts";
import { forward, openLink } from "../cluster/_dial.ts";
import { LinkPool, MIN_POOL } from "../cluster/_pool.ts";
import { newNonce, proof } from "../protocol/_auth.ts";
import { bytes, Raw, readAll, text } from "./_helpers.ts";
import { eventually } from "./_redis.ts";

const SECRET = "s".repeat(32);

/** A peer port whose forwarded requests are answered CONNECTED and echoed. */
function echoPeer(
  node: string,
  seen: Forwarded[],
  tls?: { cert: string; key: string; caCerts?: string[] },
): LinkListener {
  return new LinkListener(
    { hostname: "127.0.0.1", port: 0, node, secret: SECRET, tls },
    async (req) => {
      seen.push(req);
      try {
        await req.conn.write(bytes("CONNECTED\n"));
        const got = await readAll(req.conn);
        await req.conn.write(got);
      } catch {
        // the test closed it
      } finally {
        req.conn.close();
      }
    },
  );
}

/** `LINK` as node `from` would send it under the greeting's nonce. */
function linkLine(greeting: string, from: string, secret = SECRET): string {
  const nonceB = greeting.split(" ")[2];
  const nonceA = newNonce();
  const p = proof(secret, nonceB, "PEER-LINK", `${from} ${nonceA}`);
  return `LINK ${from} ${nonceA} ${p}\n`;
}

Deno.test("link: a link is authenticated both ways before its request; its one forwarded request is paired and carries bytes", async () => {
  const seen: Forwarded[] = [];
  const peer = echoPeer("b", seen);
  try {
    const link = await openLink({
      addr: `127.0.0.1:${peer.addr.port}`,
      to: "b",
      node: "a",
      secret: SECRET,
    });
    await new Promise((r) => setTimeout(r, 50));
    assertEquals(seen.length, 0); // authenticated, idle: nothing asked yet
    ok(link.idle);
    const got = await link.forward("web");
    ok(got.paired);
    ok(!link.idle);
    assertEquals((await link.forward("web")).paired, false); // one request
    await got.conn.write(bytes("ping"));
    await got.conn.closeWrite();
    assertEquals(text(await readAll(got.conn)), "ping");
    got.conn.close();
    assertEquals(seen.map((r) => [r.name, r.from]), [["web", "a"]]);
    // a name as long as names go (200) fits the request line
    const long = "n".repeat(200);
    const far = await forward({
      addr: `127.0.0.1:${peer.addr.port}`,
      to: "b",
      name: long,
      node: "a",
      secret: SECRET,
    });
    ok(far.paired, far.paired ? "" : far.reason);
    await far.conn.closeWrite();
    await readAll(far.conn);
    far.conn.close();
    assertEquals(seen.at(-1)?.name, long);
  } finally {
    peer.close();
  }
});

Deno.test("link: a stranger on the peer port cannot open a link or take a pairing (wrong secret, made-up or replayed proof, a request without a link, junk), nor pose as a node", async () => {
  const seen: Forwarded[] = [];
  const peer = echoPeer("b", seen);
  const port = peer.addr.port;
  const addr = `127.0.0.1:${port}`;
  try {
    // the wrong secret
    const wrong = await forward({
      addr,
      to: "b",
      name: "web",
      node: "a",
      secret: "x".repeat(32),
    });
    ok(!wrong.paired && wrong.unreachable, JSON.stringify(wrong));
    // a made-up proof
    using made = await Raw.open(port);
    const greeting = await made.line();
    ok(greeting?.startsWith(`${PEER_GREETING} `), String(greeting));
    await made.send(`LINK a ${"0".repeat(32)} ${"f".repeat(64)}\n`);
    assertEquals(await made.line(), "ERROR AUTH wrong cluster proof");
    assertEquals(await made.line(), null);
    // a request on a connection that proved nothing
    using bare = await Raw.open(port);
    await bare.line();
    await bare.send("FORWARD web\n");
    assertEquals(await bare.line(), "ERROR PROTOCOL bad link request");
    assertEquals(await bare.line(), null);
    // a node's LINK recorded on one connection, replayed on another
    using first = await Raw.open(port);
    const recorded = linkLine((await first.line())!, "a");
    await first.send(recorded);
    ok((await first.line())?.startsWith("PEER "));
    first.close();
    using replay = await Raw.open(port);
    await replay.line();
    await replay.send(recorded + "FORWARD web\n");
    assertEquals(await replay.line(), "ERROR AUTH wrong cluster proof");
    assertEquals(await replay.line(), null);
    // junk
    using junk = await Raw.open(port);
    await junk.line();
    await junk.send("GET / HTTP/1.0\n");
    assertEquals(await junk.line(), "ERROR PROTOCOL bad link request");
    // a link proven, then junk for a request: refused, not paired
    using odd = await Raw.open(port);
    await odd.send(linkLine((await odd.line())!, "a"));
    await odd.line();
    await odd.send("FORWARD web extra words\n");
    assertEquals(await odd.line(), "ERROR PROTOCOL bad forwarded request");
    // a node at a stranger's address: its answer proves nothing, and the
    // request (the client) is never sent to it, on a new link or a pooled one
    const fake = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const heard: string[] = [];
    const faking = (async () => {
      for await (const c of fake) {
        heard.push("");
        const i = heard.length - 1;
        (async () => {
          await c.write(bytes(`${PEER_GREETING} ${"1".repeat(32)}\n`));
          const buf = new Uint8Array(512);
          const n = await c.read(buf);
          heard[i] = text(buf.subarray(0, n ?? 0));
          await c.write(bytes(`PEER ${"2".repeat(64)}\nCONNECTED\n`));
          heard[i] += text(await readAll(c));
        })().catch(() => {}).finally(() => c.close());
      }
    })().catch(() => {});
    const posing = { node: "b", addr: `127.0.0.1:${fake.addr.port}` };
    const posed = await forward({
      ...posing,
      to: "b",
      name: "web",
      node: "a",
      secret: SECRET,
    });
    ok(!posed.paired);
    const pool = new LinkPool({ node: "a", secret: SECRET });
    pool.sync([posing]);
    const pooled = await pool.forward(posing, "web");
    await pool.close();
    ok(!pooled.paired && pooled.unreachable, JSON.stringify(pooled));
    await eventually(() => heard.length >= 2 && heard.every(Boolean), "heard");
    fake.close();
    await faking;
    ok(heard.every((h) => h.startsWith("LINK a ")), heard.join("|"));
    ok(!heard.some((h) => h.includes("FORWARD")), heard.join("|"));
    assertEquals(seen.length, 0);
    // the peer port still serves the cluster
    const fine = await forward({
      addr,
      to: "b",
      name: "web",
      node: "a",
      secret: SECRET,
    });
    ok(fine.paired);
    fine.conn.close();
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

Deno.test("link: over TLS a pooled link is paired and carries a half-close; an untrusted peer certificate is refused", async () => {
  const pem = await selfSigned();
  if (!pem) return console.log("skipped: no openssl");
  const tls = { ...pem, caCerts: [pem.cert] };
  const seen: Forwarded[] = [];
  const peer = echoPeer("b", seen, tls);
  const pool = new LinkPool({ node: "a", secret: SECRET, tls });
  try {
    const b = { node: "b", addr: `127.0.0.1:${peer.addr.port}` };
    const untrusted = await forward({
      ...b,
      to: "b",
      name: "web",
      node: "a",
      secret: SECRET,
      tls: { ...pem },
    });
    ok(!untrusted.paired);
    pool.sync([b]);
    await eventually(() => pool.idle("b") === MIN_POOL, "TLS links ready");
    const got = await pool.forward(b, "web");
    ok(got.paired, got.paired ? "" : got.reason);
    await got.conn.write(bytes("over tls"));
    await got.conn.closeWrite();
    assertEquals(text(await readAll(got.conn)), "over tls");
    got.conn.close();
    assertEquals(seen.length, 1);
  } finally {
    await pool.close();
    peer.close();
  }
});

/**
 * A TCP proxy to `port` that can stop taking connections (those open go
 * on) and cut every connection it carries.
 */
function proxy(port: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.TcpConn>();
  const carried: Promise<void>[] = [];
  let accepted = 0;
  (async () => {
    for await (const down of listener) {
      accepted++;
      carried.push((async () => {
        const up = await Deno.connect({ hostname: "127.0.0.1", port });
        open.add(down).add(up);
        const copy = async (from: Deno.TcpConn, to: Deno.TcpConn) => {
          const buf = new Uint8Array(16384);
          try {
            for (let n; (n = await from.read(buf)) !== null;) {
              await to.write(buf.subarray(0, n));
            }
            await to.closeWrite();
          } catch {
            // cut
          }
        };
        await Promise.all([copy(down, up), copy(up, down)]);
        for (const c of [down, up]) if (open.delete(c)) c.close();
      })());
    }
  })().catch(() => {});
  return {
    addr: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    get accepted() {
      return accepted;
    },
    /** Connections carried now (each is two sockets here). */
    get open() {
      return open.size / 2;
    },
    stopAccepting() {
      listener.close();
    },
    cut() {
      for (const c of open) c.close();
      open.clear();
    },
    async close() {
      try {
        listener.close();
      } catch {
        // closed already
      }
      this.cut();
      await Promise.all(carried);
    },
  };
}

Deno.test("pool: links to a live node are opened and authenticated ahead; a forward takes one (no new connection on its way) and the pool refills", async () => {
  const seen: Forwarded[] = [];
  const peer = echoPeer("b", seen);
  const via = proxy(peer.addr.port);
  const pool = new LinkPool({ node: "a", secret: SECRET });
  try {
    const b = { node: "b", addr: via.addr };
    pool.sync([b]);
    await eventually(() => pool.idle("b") === MIN_POOL, "links ready");
    assertEquals(via.accepted, MIN_POOL);
    assertEquals(seen.length, 0);
    // a forward now is paired even though no new connection can be made
    via.stopAccepting();
    const got = await pool.forward(b, "web");
    ok(got.paired, got.paired ? "" : got.reason);
    await got.conn.write(bytes("warm"));
    await got.conn.closeWrite();
    assertEquals(text(await readAll(got.conn)), "warm");
    got.conn.close();
    assertEquals(seen.map((r) => [r.name, r.from]), [["web", "a"]]);
    assertEquals(via.accepted, MIN_POOL);
  } finally {
    await pool.close();
    await via.close();
    peer.close();
  }
});

Deno.test("pool: a link the far node closed is replaced; links to a node that left are closed; a node that cannot be reached is refused, not waited on", async () => {
  const seen: Forwarded[] = [];
  const peer = echoPeer("b", seen);
  const via = proxy(peer.addr.port);
  const pool = new LinkPool({ node: "a", secret: SECRET });
  try {
    const b = { node: "b", addr: via.addr };
    pool.sync([b]);
    await eventually(() => via.open === MIN_POOL, "links ready");
    via.cut(); // the far node (or the network) closed them
    await eventually(
      () => via.accepted === 2 * MIN_POOL && pool.idle("b") === MIN_POOL,
      "links replaced",
    );
    const got = await pool.forward(b, "web");
    ok(got.paired);
    got.conn.close();
    await eventually(() => pool.idle("b") === MIN_POOL, "refilled");
    pool.sync([]); // b's lease lapsed
    assertEquals(pool.idle("b"), 0);
    await eventually(() => via.open === 0, "links to b closed");
    // a node whose peer port is gone: refused at once as unreachable
    const gone = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const dead = {
      node: "c",
      addr: `127.0.0.1:${(gone.addr as Deno.NetAddr).port}`,
    };
    gone.close();
    pool.sync([dead]);
    const refused = await pool.forward(dead, "web");
    ok(!refused.paired && refused.unreachable, JSON.stringify(refused));
  } finally {
    await pool.close();
    await via.close();
    peer.close();
  }
});

Deno.test("pool: a burst of forwards larger than the pool is served, and the pool grows for the next one", async () => {
  const seen: Forwarded[] = [];
  const peer = echoPeer("b", seen);
  const pool = new LinkPool({ node: "a", secret: SECRET });
  try {
    const b = { node: "b", addr: `127.0.0.1:${peer.addr.port}` };
    pool.sync([b]);
    await eventually(() => pool.idle("b") === MIN_POOL, "links ready");
    const burst = await Promise.all(
      Array.from({ length: 8 }, (_, i) => pool.forward(b, `web-${i}`)),
    );
    ok(burst.every((r) => r.paired));
    for (const r of burst) if (r.paired) r.conn.close();
    assertEquals(seen.length, 8);
    await eventually(() => pool.idle("b") > MIN_POOL, "the pool grew");
  } finally {
    await pool.close();
    peer.close();
  }
});
