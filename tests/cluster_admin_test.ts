// The cluster in the admin server, for real: relay.ts nodes with --cluster
// and --admin over a real redis-server; /metrics (checked by promtool),
// /api/status and the status page in Chromium show the nodes, their leases,
// where each name is parked and the pairings local against forwarded.

import {
  deepStrictEqual as assertEquals,
  ok,
  strictEqual,
} from "node:assert/strict";
import type { Page } from "puppeteer-core";
import {
  type AdminRelay,
  adminRelay,
  askAt,
  pairAt,
  parkAt,
} from "./_admin.ts";
import { launch, noBrowser } from "./_browser.ts";
import { type Raw, readExactly } from "./_helpers.ts";
import { eventually, hasRedis, TestRedis } from "./_redis.ts";
import { parkedKey } from "../cluster/_registry.ts";
import { forward } from "../cluster/_dial.ts";

// deno-lint-ignore no-explicit-any
declare const document: any;

const ignore = !hasRedis();
if (ignore) console.log("cluster admin tests skipped: no redis-server on PATH");
const SKIP_PAGE = noBrowser();
const SECRET = "cluster-admin-test-secret-0123";

/** relay.ts nodes with --admin on free ports, every one seeing the others. */
async function adminNodes(
  redis: TestRedis,
  names: string[],
): Promise<AdminRelay[] & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "cluster-admin-" });
  const secretFile = `${dir}/secret`;
  await Deno.writeTextFile(secretFile, SECRET + "\n");
  const nodes = await Promise.all(names.map((name) =>
    adminRelay([
      `--cluster=${redis.url()}`,
      `--node=${name}`,
      "--peer-port=0",
      `--cluster-secret-file=${secretFile}`,
      "--drain-timeout=1",
    ])
  ));
  await eventually(async () => {
    const keys = await redis.cli("KEYS", "tcp-relay:node:*:lease");
    return keys.trim().split("\n").filter(Boolean).length === names.length;
  }, "every node's lease");
  await new Promise((r) => setTimeout(r, 1100)); // one renewal: members read
  return Object.assign(nodes, {
    async [Symbol.asyncDispose]() {
      await Promise.all(nodes.map((n) => n[Symbol.asyncDispose]()));
      await Deno.remove(dir, { recursive: true });
    },
  });
}

/** Waits until node `on` has published `count` parked servers for `name`. */
function parkedIn(redis: TestRedis, on: string, name: string, count: number) {
  return eventually(
    async () =>
      Number((await redis.cli("HGET", parkedKey(on), name)).trim()) === count,
    `${count} parked for ${name} on ${on}`,
  );
}

/** The value of `name{labels}` in a scrape (labels in any order); `undefined` if absent. */
function sample(
  scrape: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort();
  for (const line of scrape.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = (m[2] ?? "").split(",").filter(Boolean).sort();
    if (JSON.stringify(got) === JSON.stringify(want)) return Number(m[3]);
  }
}

/** Scrapes `relay` until `check(scrape)` holds; returns that scrape. */
async function scrapeUntil(
  relay: AdminRelay,
  check: (scrape: string) => boolean,
  what: string,
): Promise<string> {
  let text = "";
  try {
    await eventually(async () => {
      const r = await relay.fetch("/metrics");
      strictEqual(r.status, 200);
      text = r.body;
      return check(text);
    }, what);
  } catch (e) {
    const cluster = text.split("\n").filter((l) =>
      l.startsWith("tcp_relay_cluster")
    );
    throw new Error(`${(e as Error).message}:\n${cluster.join("\n")}`);
  }
  return text;
}

function promtool(): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/promtool`).isFile) return `${dir}/promtool`;
    } catch {
      // not there
    }
  }
}
const PROMTOOL = promtool();

/** `promtool check metrics` passes on `text` (skipped without promtool). */
async function checkWithPromtool(text: string): Promise<void> {
  if (!PROMTOOL) return console.log("promtool missing: check skipped");
  const child = new Deno.Command(PROMTOOL, {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const said = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  strictEqual(out.code, 0, `promtool check metrics: ${said}`);
}

/**
 * Two servers parked for "far" on b, a pair of "near" on a, and a client on
 * a paired with one of b's servers across the nodes (bytes checked).
 */
async function crossPair(a: AdminRelay, b: AdminRelay, redis: TestRedis) {
  const far1 = await parkAt(b, "far");
  const far2 = await parkAt(b, "far");
  await parkedIn(redis, "b", "far", 2);
  const near = await pairAt(a, "near");
  const client = await askAt(a, "far");
  strictEqual(await client.line(), "CONNECTED");
  strictEqual(await far1.line(), "CONNECTED");
  await client.send("across\n");
  strictEqual(
    new TextDecoder().decode(await readExactly(far1.conn, 7)),
    "across\n",
  );
  const all: Raw[] = [far1, far2, near.s, near.c, client];
  return { [Symbol.dispose]: () => all.forEach((c) => c.close()) };
}

Deno.test({
  name:
    "cluster in /metrics: after a cross-node pair both nodes show both nodes up with their lease age, the name parked on b, and the pairings local, forwarded out of a and into b, a refused forwarded request not among them (promtool passes)",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await adminNodes(redis, ["a", "b"]);
    const [a, b] = nodes;
    // a forwarded request for a name b has no server for: refused, no pairing
    const [, peerPort] = await b.proc.wait(/peers on [^ ]+:(\d+)/, "err");
    const refused = await forward({
      addr: `127.0.0.1:${peerPort}`,
      to: "b",
      name: "nothing-here",
      node: "a",
      secret: SECRET,
    });
    strictEqual(refused.paired, false);
    using _pairs = await crossPair(a, b, redis);
    const route = (text: string, r: string) =>
      sample(text, "tcp_relay_cluster_pairings_total", { route: r });
    const onA = await scrapeUntil(
      a,
      (t) =>
        route(t, "forwarded_out") === 1 &&
        sample(t, "tcp_relay_cluster_parked", { node: "b", name: "far" }) ===
          1,
      "a's forwarded pairing and b's one server left",
    );
    const onB = await scrapeUntil(
      b,
      (t) => route(t, "forwarded_in") === 1,
      "b's forwarded pairing",
    );
    strictEqual(
      sample(onB, "tcp_relay_refusals_total", { code: "OFFLINE" }),
      1,
    );
    for (const text of [onA, onB]) {
      strictEqual(sample(text, "tcp_relay_cluster_registered"), 1);
      for (const node of ["a", "b"]) {
        strictEqual(sample(text, "tcp_relay_cluster_node_up", { node }), 1);
        const age = sample(text, "tcp_relay_cluster_node_lease_age_seconds", {
          node,
        });
        ok(age !== undefined && age >= 0 && age <= 3, `lease age ${age}`);
      }
      strictEqual(
        sample(text, "tcp_relay_cluster_parked", { node: "b", name: "far" }),
        1,
      );
      await checkWithPromtool(text);
    }
    assertEquals(
      ["local", "forwarded_out", "forwarded_in"].map((r) => route(onA, r)),
      [1, 1, 0],
    );
    assertEquals(
      ["local", "forwarded_out", "forwarded_in"].map((r) => route(onB, r)),
      [0, 0, 1],
    );
    strictEqual(sample(onA, "tcp_relay_pairings_total"), 2);

    const { data } = await a.json("/api/status");
    strictEqual(data.cluster.node, "a");
    strictEqual(data.cluster.registered, true);
    assertEquals(data.cluster.pairings, {
      local: 1,
      forwardedOut: 1,
      forwardedIn: 0,
    });
    assertEquals(
      // deno-lint-ignore no-explicit-any
      data.cluster.nodes.map((n: any) => [n.node, n.self, n.up]),
      [["a", true, true], ["b", false, true]],
    );
    assertEquals(data.cluster.nodes[1].parked, { far: 1 });
    strictEqual(data.cluster.nodes[1].servers, 1);
    ok(/^127\.0\.0\.1:\d+$/.test(data.cluster.nodes[1].addr));
  },
});

Deno.test({
  name:
    "cluster in /metrics: a node killed with kill -9 is shown down on the other, its lease age and parked names gone",
  ignore,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await adminNodes(redis, ["a", "b"]);
    const [a, b] = nodes;
    using _parked = await parkAt(b, "gone");
    await scrapeUntil(
      a,
      (t) =>
        sample(t, "tcp_relay_cluster_parked", { node: "b", name: "gone" }) ===
          1,
      "b's parked server seen from a",
    );
    b.proc.kill("SIGKILL");
    const text = await scrapeUntil(
      a,
      (t) => sample(t, "tcp_relay_cluster_node_up", { node: "b" }) === 0,
      "b down",
    );
    strictEqual(sample(text, "tcp_relay_cluster_node_up", { node: "a" }), 1);
    strictEqual(
      sample(text, "tcp_relay_cluster_node_lease_age_seconds", { node: "b" }),
      undefined,
    );
    strictEqual(
      sample(text, "tcp_relay_cluster_parked", { node: "b", name: "gone" }),
      undefined,
    );
    await checkWithPromtool(text);
    const { data } = await a.json("/api/status");
    // deno-lint-ignore no-explicit-any
    const gone = data.cluster.nodes.find((n: any) => n.node === "b");
    assertEquals([gone.up, gone.leaseAgeMs, gone.parked], [false, null, {}]);
  },
});

Deno.test("cluster in /metrics and /api/status: a relay on its own has no cluster series and no cluster in its status", async () => {
  await using relay = await adminRelay();
  const { body } = await relay.fetch("/metrics");
  ok(body.includes("tcp_relay_pairings_total"), body);
  ok(!body.includes("tcp_relay_cluster_"), body);
  strictEqual((await relay.json("/api/status")).data.cluster, null);
});

/** Waits until `fn()` is true in the page, failing after 15 s with its text. */
async function until(page: Page, fn: () => boolean, what: string) {
  try {
    await page.waitForFunction(fn, { timeout: 15_000, polling: 50 });
  } catch (e) {
    const body = await page.evaluate(() => document.body.innerText);
    throw new Error(`Timed out waiting for ${what}:\n${body}`, { cause: e });
  }
}

Deno.test({
  name:
    "status page: a cluster node shows the Cluster table (both nodes up, where the name is parked, the forwarded pairing); a relay on its own hides it",
  ignore: ignore || !!SKIP_PAGE,
  // puppeteer's WebSocket to Chromium lives across the test's awaits
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using redis = await TestRedis.start();
    await using nodes = await adminNodes(redis, ["a", "b"]);
    const [a, b] = nodes;
    using _pairs = await crossPair(a, b, redis);
    await using chromium = await launch();
    const page = await chromium.browser.newPage();
    const problems: string[] = [];
    page.on("pageerror", (e) => problems.push(String(e)));
    await page.setViewport({ width: 1280, height: 1000 });
    await page.goto(a.url);
    await until(
      page,
      () =>
        document.getElementById("cluster")?.hidden === false &&
        document.querySelector('tr[data-node="b"] [data-name="far"]')
            ?.getAttribute("data-value") === "1" &&
        document.getElementById("cluster-forwarded-out")
            ?.getAttribute("data-value") === "1",
      "the cluster table with b's parked server and the forwarded pairing",
    );
    const rows = await page.evaluate(() =>
      // deno-lint-ignore no-explicit-any
      [...document.querySelectorAll("#cluster-nodes tr")].map((r: any) =>
        // deno-lint-ignore no-explicit-any
        [...r.children].map((c: any) => c.textContent as string)
      )
    );
    strictEqual(rows.length, 2);
    const [rowA, rowB] = rows;
    ok(rowA[0].startsWith("a") && rowA[0].includes("this node"), rowA[0]);
    assertEquals([rowA[2], rowB[0], rowB[2], rowB[4]], ["up", "b", "up", "1"]);
    ok(/^\d\.\d s$/.test(rowB[3]), rowB[3]);
    ok(rowB[5].includes("far"), rowB[5]);
    const legend = await page.evaluate(() =>
      document.getElementById("cluster-pairings").textContent
    );
    ok(legend.includes("local pairings 1"), legend);
    ok(legend.includes("forwarded in 0"), legend);

    // a relay that is no node: the section stays hidden
    await using single = await adminRelay();
    await page.goto(single.url);
    await until(
      page,
      () => document.getElementById("state")?.textContent === "serving",
      "the single relay's page",
    );
    strictEqual(
      await page.evaluate(() => document.getElementById("cluster").hidden),
      true,
    );
    strictEqual(problems.join("\n"), "");
  },
});
