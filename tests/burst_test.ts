// On-demand parking: a crowd of clients arriving at once for one name, the
// server helper behind a link with added latency (bench/_delay_proxy.ts);
// the pool grows on the relay's NEED and shrinks back after the crowd.

import { strictEqual } from "node:assert/strict";
import { startDelayProxy } from "../bench/_delay_proxy.ts";
import { connect, listen, type RelayListener } from "../mod.ts";
import type { RelayOptions } from "../relay.ts";
import {
  reset,
  resettable,
  startRelay,
  type TestRelay,
  until,
} from "./_helpers.ts";
import { NAMES, SECRET } from "./_hostile.ts";

/** `n` clients at once: each is paired, sends a byte, hears it back. How many were served. */
async function crowd(relay: string, name: string, n: number): Promise<number> {
  const results = await Promise.allSettled(
    Array.from({ length: n }, async () => {
      using conn = await connect({ relay, name });
      await conn.write(new Uint8Array([42]));
      const buf = new Uint8Array(1);
      if (await conn.read(buf) !== 1 || buf[0] !== 42) {
        throw new Error("no echo");
      }
    }),
  );
  return results.filter((r) => r.status === "fulfilled").length;
}

interface Burst {
  /** The relay's options (`wait`: how long clients wait for a server). */
  relay: RelayOptions;
  /** Added latency each way between the listener and the relay, in ms. */
  delayMs: number;
  pool: number;
  maxPool: number;
  name?: string;
  secret?: string;
}

/**
 * A relay, a delay proxy in front of its servers' port, and a listener
 * behind the proxy echoing every client, with `pool` parked; `run` gets the
 * relay.
 */
async function withBurst(
  o: Burst,
  run: (relay: TestRelay) => Promise<void>,
): Promise<void> {
  const name = o.name ?? "crowd";
  await using relay = startRelay(o.relay);
  await using proxy = startDelayProxy({
    target: relay.serverAddr,
    delayMs: o.delayMs,
  });
  const listener: RelayListener = listen({
    relay: `127.0.0.1:${proxy.addr.port}`,
    name,
    secret: o.secret,
    pool: o.pool,
    maxPool: o.maxPool,
    shrinkAfter: 300,
  });
  const serving = (async () => {
    for await (const conn of listener) {
      conn.readable.pipeTo(conn.writable).catch(() => {});
    }
  })();
  try {
    await listener.ready;
    // the pool parked, and the watch connection open (past its handshake)
    await until(() => {
      const { parked, connections, handshaking } = relay.stats();
      return parked[name] === o.pool && connections === o.pool + 1 &&
        handshaking === 0;
    }, "the pool and its watch connection");
    await run(relay);
  } finally {
    await listener[Symbol.asyncDispose]();
    await serving;
  }
}

/**
 * `n` raw clients ask for `name`; once all but the `pool` paired ones wait,
 * they leave (a reset: a FIN would keep them waiting, half-closed), before
 * the connections opened for them arrive: those are left over, parked
 * beyond the pool.
 */
async function leaveSurplus(
  relay: TestRelay,
  name: string,
  n: number,
  pool: number,
): Promise<void> {
  const clients = await Promise.all(
    Array.from(
      { length: n },
      () => resettable(relay.clientAddr.port, `${name}\n`),
    ),
  );
  await until(() => relay.stats().waiting === n - pool, "the crowd to wait");
  await Promise.all(clients.map(reset));
  await until(
    () => relay.stats().parked[name] > pool,
    "connections parked beyond the pool",
  );
}

Deno.test("200 clients at once through a 50 ms link are all served by a pool of 2 that grows on demand", async () => {
  // A fixed pool of 2 serves about 100 here: each replacement costs 100 ms
  // (CONNECTED on its way, HELLO 2 and CONNECT on theirs) and clients wait 5 s.
  await withBurst(
    { relay: { wait: 5000 }, delayMs: 50, pool: 2, maxPool: 64 },
    async (relay) => {
      strictEqual(await crowd(relay.client, "crowd", 200), 200);
    },
  );
});

Deno.test("after a crowd the pool shrinks back to pool", async () => {
  await withBurst(
    // PING every 500 ms: a connection left over leaves at a PING
    {
      relay: { wait: 5000, heartbeat: 500 },
      delayMs: 100,
      pool: 2,
      maxPool: 64,
    },
    async (relay) => {
      await leaveSurplus(relay, "crowd", 32, 2);
      await until(
        () => relay.stats().parked.crowd === 2,
        "the pool to shrink back to 2",
        20_000,
      );
    },
  );
});

Deno.test("an owned name grows on demand with the owner's proof over WATCH, and serves a crowd", async () => {
  const o = {
    relay: { wait: 5000, heartbeat: 500, names: NAMES },
    delayMs: 100,
    pool: 1,
    maxPool: 16,
    name: "owned",
    secret: SECRET,
  };
  await withBurst(o, async (relay) => {
    await leaveSurplus(relay, "owned", 11, 1);
    strictEqual(await crowd(relay.client, "owned", 40), 40);
  });
});
