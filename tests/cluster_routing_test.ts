// Routing across nodes for real (relay.ts processes and a real
// redis-server): what a node knows of the others' parked counts without
// asking Redis, and what it tells Redis.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { hasRedis, TestRedis } from "./_redis.ts";
import { cluster, echoOnce, echoServer, parkedIn } from "./_cluster.ts";

const ignore = !hasRedis();

Deno.test({
  name:
    "cluster: clients at once for the one server parked elsewhere are each paired in turn (the node's copy of the counts behind, Redis asked again)",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b"]);
    const [a, b] = nodes;
    const server = echoServer(b.server, "one", 1);
    try {
      await parkedIn(redis, "b", "one", 1);
      const echoes = await Promise.all(
        ["x", "y", "z"].map((m) => echoOnce(a.client, "one", m)),
      );
      assertEquals(echoes, ["x", "y", "z"]);
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "cluster: a pool of servers taken and refilled costs far fewer Redis writes than pairings (moves between positive counts are coalesced)",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await cluster(redis, ["a", "b"]);
    const [a, b] = nodes;
    const server = echoServer(b.server, "pool", 2);
    const writes = async () =>
      Number(
        /cmdstat_hset:calls=(\d+)/.exec(
          await redis.cli("INFO", "commandstats"),
        )?.[1] ?? 0,
      );
    try {
      await parkedIn(redis, "b", "pool", 2);
      const before = await writes();
      const pairings = 30;
      for (let i = 0; i < pairings; i++) {
        assertEquals(await echoOnce(a.client, "pool", `m${i}`), `m${i}`);
      }
      await parkedIn(redis, "b", "pool", 2);
      const made = (await writes()) - before;
      ok(made < pairings / 2, `${made} writes for ${pairings} pairings`);
    } finally {
      await server.close();
    }
  },
});
