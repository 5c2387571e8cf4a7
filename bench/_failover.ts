/**
 * The failover mode: three nodes `a`, `b`, `c`; `server.ts --relay a,b`
 * (the pool of 2 parked at each, as users run it) offering an echo service;
 * `kill -9` of `a`; then a client on `c` asks for the name again and again
 * until it is served (paired and its one-byte echo back).
 *
 * Figures, each in seconds from the kill: `failover` (the first client
 * served on `c`), `reparked` (node `b`'s parked count for the name in Redis:
 * 0 when the pool was at `b` already) and `keysGone` (node `a`'s lease and
 * parked keys both gone from Redis: the lease lapsed); `refused`: the
 * client's attempts refused before the one served.
 *
 * @module
 */

import type { Redis } from "ioredis";
import { connect } from "../client.ts";
import { leaseKey, parkedKey } from "../cluster/_registry.ts";
import { type ClusterRun, redisClient } from "./_cluster.ts";
import { ROOT, sleep, stopChild } from "./_driver.ts";
import type { Peer } from "./_peers.ts";

const NAME = "bench-failover";
const POOL = 2;

/** The failover mode's figures (see the module's doc). */
export const FAILOVER_FIGURES: string[] = [
  "failover",
  "reparked",
  "keysGone",
  "refused",
];

/** Polls `check` every 10 ms; the seconds from `t0` until it is true. */
async function secondsUntil(
  t0: number,
  check: () => Promise<boolean>,
  limitMs: number,
): Promise<number> {
  for (;;) {
    if (await check().catch(() => false)) {
      return (performance.now() - t0) / 1000;
    }
    if (performance.now() - t0 > limitMs) throw new Error("timed out");
    await sleep(10);
  }
}

/** A client on `port` served: paired, one byte sent and echoed back. */
async function serveOnce(port: number): Promise<void> {
  const conn = await connect({
    relay: `127.0.0.1:${port}`,
    name: NAME,
    timeout: 10_000,
  });
  let late = false;
  const close = () => {
    try {
      conn.close();
    } catch { /* closed */ }
  };
  // a pair that never echoes is not served: given up after 5 s
  const timer = setTimeout(() => (late = true, close()), 5_000);
  try {
    await conn.write(new Uint8Array([42]));
    const buf = new Uint8Array(1);
    if ((await conn.read(buf)) !== 1 || buf[0] !== 42) {
      throw new Error("no echo");
    }
  } catch (e) {
    throw late ? new Error("paired, but no echo within 5 s") : e;
  } finally {
    clearTimeout(timer);
    close();
  }
}

/** A local echo service (what `server.ts --to` forwards to). */
function echoService(): { port: number } & Disposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      conn.readable.pipeTo(conn.writable).catch(() => {});
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    [Symbol.dispose]: () => listener.close(),
  };
}

async function parked(redis: Redis, node: string): Promise<number> {
  return Number(await redis.hget(parkedKey(node), NAME) ?? 0);
}

/** Measures one failover on a fresh three-node cluster of `peer`. */
export async function failover(
  peer: Peer,
  limitMs = 20_000,
): Promise<Record<string, number | string>> {
  const run: ClusterRun = await peer.nodes!(["a", "b", "c"]);
  const [a, b, c] = run.nodes;
  const redis = redisClient(run.redisUrl);
  using echo = echoService();
  const helper = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}server.ts`,
      "--relay",
      `127.0.0.1:${a.serverPort},127.0.0.1:${b.serverPort}`,
      "--name",
      NAME,
      "--pool",
      `${POOL}`,
      "--to",
      `127.0.0.1:${echo.port}`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    // the pool parked on a and b, served from c once, and parked again
    const full = async () =>
      await parked(redis, "a") >= POOL && await parked(redis, "b") >= POOL;
    await secondsUntil(performance.now(), full, limitMs);
    await serveOnce(c.clientPort);
    await secondsUntil(performance.now(), full, limitMs);

    const t0 = performance.now();
    a.child.kill("SIGKILL");
    let refused = 0;
    const why = new Set<string>();
    const served = secondsUntil(t0, async () => {
      try {
        await serveOnce(c.clientPort);
        return true;
      } catch (e) {
        refused++;
        why.add((e as Error).message);
        return false;
      }
    }, limitMs);
    const reparked = secondsUntil(
      t0,
      async () => await parked(redis, "b") > 0,
      limitMs,
    );
    const keysGone = secondsUntil(
      t0,
      async () => await redis.exists(leaseKey("a"), parkedKey("a")) === 0,
      limitMs,
    );
    const [failover, parkedB, gone] = await Promise.allSettled([
      served,
      reparked,
      keysGone,
    ]);
    const value = (r: PromiseSettledResult<number>, what: string) =>
      r.status === "fulfilled" ? r.value : `${what} within ${limitMs / 1000} s`;
    if (why.size) {
      console.error(`bench: failover: refused before served: ${[...why]}`);
    }
    return {
      failover: value(failover, "not served"),
      reparked: value(parkedB, "not parked on b"),
      keysGone: value(gone, "keys not gone"),
      refused,
    };
  } finally {
    await stopChild(helper);
    redis.disconnect();
    await run.stop();
  }
}
