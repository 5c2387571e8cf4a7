// The cluster's parts on their own, against a real redis-server: the
// registry's keys and leases, and what a node knows of the others' parked
// counts without a lookup. (The link: tests/cluster_link_test.ts.)

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import {
  CHANNEL,
  leaseKey,
  parkedKey,
  Registry,
} from "../cluster/_registry.ts";
import { eventually, hasRedis, TestRedis } from "./_redis.ts";

const ignore = !hasRedis();

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
      await eventually(() => a.up, "a up again");
    } finally {
      await a.close();
    }
  },
});

Deno.test({
  name:
    "registry: another node's parked counts are known without a lookup (its messages), follow every change, and are forgotten when it withdraws",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    const counts = new Map([["web", 2]]);
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
      await b.refresh(); // b reads the members, then a's hash
      const at = { node: "a", addr: "127.0.0.1:1" };
      await eventually(() => b.hint("web").length > 0, "a's count read");
      assertEquals(b.hint("web"), [{ ...at, parked: 2 }]);
      assertEquals(b.hint("nope"), []);
      // changes arrive as messages: no lookup, no lease refresh needed
      const before = Number(
        /cmdstat_hget:calls=(\d+)/.exec(
          await redis.cli("INFO", "commandstats"),
        )?.[1] ?? 0,
      );
      counts.set("web", 3).set("new", 1);
      a.publish("web", 3);
      a.publish("new", 1);
      await eventually(
        () => b.hint("web")[0]?.parked === 3 && b.hint("new").length === 1,
        "changes told",
      );
      counts.set("web", 0);
      a.publish("web", 0);
      await eventually(() => b.hint("web").length === 0, "web unparked");
      const after = Number(
        /cmdstat_hget:calls=(\d+)/.exec(
          await redis.cli("INFO", "commandstats"),
        )?.[1] ?? 0,
      );
      assertEquals(after, before);
      // a stranger's message on the channel names no member: ignored
      await redis.cli("PUBLISH", CHANNEL, "ghost 5 web");
      await redis.cli("PUBLISH", CHANNEL, "a 9 web extra");
      await new Promise((r) => setTimeout(r, 100));
      assertEquals(b.hint("web"), []);
      // withdrawn: forgotten at once, before b reads the members again
      await a.withdraw();
      await eventually(() => b.hint("new").length === 0, "a forgotten");
    } finally {
      await a.close();
      await b.close();
    }
  },
});

Deno.test({
  name:
    "registry: while Redis is away no count is hinted; after it restarts empty, the counts are read and hinted again",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    const a = new Registry({
      url: redis.url(),
      node: "a",
      addr: "127.0.0.1:1",
      snapshot: () => new Map([["web", 1]]),
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
      await eventually(() => b.hint("web").length === 1, "hinted");
      await redis.stop();
      await eventually(() => !b.up, "b sees Redis away");
      assertEquals(b.hint("web"), []);
      await redis.restart();
      await eventually(() => b.hint("web").length === 1, "hinted again");
    } finally {
      await a.close();
      await b.close();
    }
  },
});
