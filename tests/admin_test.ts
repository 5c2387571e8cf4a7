// The admin server of a relay process (relay.ts --admin): health and
// readiness, the status page, metrics, the JSON API (names, pairs, closing)
// and bad requests.

import {
  deepStrictEqual as assertEquals,
  ok,
  strictEqual,
} from "node:assert/strict";
import { release, reserve } from "../mod.ts";
import {
  adminRelay,
  adminUrl,
  askAt,
  pairAt,
  parkAt,
  request,
  statusUntil,
  tempFile,
} from "./_admin.ts";
import {
  freePorts,
  readExactly,
  rejectsWith,
  tempDir,
  text,
} from "./_helpers.ts";
import { Proc } from "./_proc.ts";

Deno.test("admin server: /healthz, /readyz, the status page and the API answer on loopback without a token", async () => {
  await using relay = await adminRelay();
  ok(relay.url.startsWith("http://127.0.0.1:"), relay.url);
  const health = await relay.fetch("/healthz");
  assertEquals([health.status, health.body], [200, "ok\n"]);
  const ready = await relay.fetch("/readyz");
  assertEquals([ready.status, ready.body], [200, "ready\n"]);
  const page = await relay.fetch("/");
  strictEqual(page.status, 200);
  ok(page.headers.get("content-type")?.startsWith("text/html"));
  ok(page.headers.get("content-security-policy")?.includes("default-src"));
  ok(page.body.includes("<title>tcp-relay status</title>"));
  ok(
    !/<script[^>]+src=|<link[^>]+stylesheet/.test(page.body),
    "self-contained",
  );
  const status = await relay.json("/api/status");
  strictEqual(status.data.state, "serving");
  strictEqual(status.data.serverAddr, relay.server);
  strictEqual(status.data.refusals.NOEXIST, 0);
  const names = await relay.json("/api/names");
  assertEquals(names.data, { names: [], store: false });
  const metrics = await relay.fetch("/metrics");
  ok(metrics.body.includes("tcp_relay_pairings_total 0"), metrics.body);
});

Deno.test("admin server: /readyz is 503 while the relay drains a pair; /healthz stays 200", async () => {
  await using relay = await adminRelay(["--drain-timeout=30"]);
  const { s, c } = await pairAt(relay, "draining");
  using _s = s, _c = c;
  relay.proc.kill("SIGTERM");
  const end = Date.now() + 10_000;
  let ready = await relay.fetch("/readyz");
  while (ready.status !== 503 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
    ready = await relay.fetch("/readyz");
  }
  assertEquals([ready.status, ready.body], [503, "draining\n"]);
  strictEqual((await relay.fetch("/healthz")).status, 200);
  strictEqual((await relay.json("/api/status")).data.state, "draining");
  ok((await relay.fetch("/metrics")).body.includes("tcp_relay_draining 1"));
  // the pair still carries bytes while the relay drains
  await c.send("still here");
  strictEqual(text(await readExactly(s.conn, 10)), "still here");
  s.close();
  c.close();
  strictEqual((await relay.proc.status()).code, 0);
});

Deno.test("admin server: POST /api/names makes an owned name and answers its secret once; DELETE /api/names/NAME removes it", async () => {
  await using data = await tempDir("tcp-relay-admin-");
  await using relay = await adminRelay([`--data=${data.dir}`]);
  const made = await relay.json("/api/names", {
    method: "POST",
    body: JSON.stringify({ name: "made-by-api" }),
  });
  strictEqual(made.status, 201, made.body);
  strictEqual(made.data.name, "made-by-api");
  ok(/^[0-9a-f]{32,}$/.test(made.data.secret), made.body);
  strictEqual(made.data.clientKey, undefined);
  // on disk, where `relay.ts names` sees it
  const file = JSON.parse(await Deno.readTextFile(`${data.dir}/names.json`));
  strictEqual(file.names["made-by-api"].secret, made.data.secret);
  // the secret is never shown again
  const listed = await relay.json("/api/names");
  assertEquals(listed.data.names, [{
    name: "made-by-api",
    owned: true,
    private: false,
    parked: 0,
    waiting: 0,
    active: 0,
  }]);
  ok(!listed.body.includes(made.data.secret));
  ok(!(await relay.fetch("/api/status")).body.includes(made.data.secret));
  // the name now needs the secret
  const at = { relay: relay.server, name: "made-by-api" };
  await rejectsWith(reserve(at), "USED");
  await reserve({ ...at, secret: made.data.secret });
  await release({ ...at, secret: made.data.secret });
  const again = await relay.json("/api/names", {
    method: "POST",
    body: JSON.stringify({ name: "made-by-api" }),
  });
  assertEquals([again.status, again.data.error], [
    409,
    "Name made-by-api is owned already",
  ]);
  const removed = await relay.json("/api/names/made-by-api", {
    method: "DELETE",
  });
  assertEquals([removed.status, removed.data], [200, {
    name: "made-by-api",
    removed: true,
  }]);
  await reserve(at); // anyone's again
  const gone = await relay.json("/api/names/made-by-api", { method: "DELETE" });
  assertEquals([gone.status, gone.data.error], [
    404,
    "Name made-by-api is not owned",
  ]);
});

Deno.test("admin server: a private name made by the API answers the clients' key too", async () => {
  await using data = await tempDir("tcp-relay-admin-");
  await using relay = await adminRelay([`--data=${data.dir}`]);
  const made = await relay.json("/api/names", {
    method: "POST",
    body: JSON.stringify({ name: "a/private-name", private: true }),
  });
  strictEqual(made.status, 201, made.body);
  ok(/^[0-9a-f]{32,}$/.test(made.data.clientKey), made.body);
  const listed = await relay.json("/api/names");
  strictEqual(listed.data.names[0].private, true);
  // a name with a slash, percent-encoded as one path segment
  const removed = await relay.fetch(
    `/api/names/${encodeURIComponent("a/private-name")}`,
    { method: "DELETE" },
  );
  strictEqual(removed.status, 200, removed.body);
});

Deno.test("admin server: without --data, making or removing a name answers 409 saying to pass --data", async () => {
  await using relay = await adminRelay();
  const made = await relay.json("/api/names", {
    method: "POST",
    body: JSON.stringify({ name: "nope" }),
  });
  strictEqual(made.status, 409);
  ok(made.data.error.includes("--data DIR"), made.body);
  const removed = await relay.json("/api/names/nope", { method: "DELETE" });
  strictEqual(removed.status, 409);
});

Deno.test("admin server: bad requests are 400 with a JSON error, unknown routes 404, wrong methods 405", async () => {
  await using data = await tempDir("tcp-relay-admin-");
  await using relay = await adminRelay([`--data=${data.dir}`]);
  const post = (body: string) =>
    relay.json("/api/names", { method: "POST", body });
  const bad: [string, RegExp][] = [
    ["not json", /not valid JSON/],
    ["[]", /Expected a JSON object/],
    ["{}", /name must be a string/],
    ['{"name": 5}', /name must be a string/],
    ['{"name": ""}', /Invalid name: empty name/],
    ['{"name": "has space"}', /Invalid name: name with spaces/],
    [JSON.stringify({ name: "x".repeat(201) }), /longer than 200/],
    ['{"name": "ok", "private": "yes"}', /private must be true or false/],
    ['{"name": "ok", "owner": "me"}', /Unknown field owner/],
  ];
  for (const [body, message] of bad) {
    const r = await post(body);
    strictEqual(r.status, 400, body);
    ok(message.test(r.data.error), `${body}: ${r.data.error}`);
  }
  const big = await post(JSON.stringify({ name: "x".repeat(70_000) }));
  strictEqual(big.status, 413);
  for (const path of ["/api/pairs/abc", "/api/pairs/0", "/api/pairs/-1"]) {
    const r = await relay.json(path, { method: "DELETE" });
    strictEqual(r.status, 400, path);
    ok(r.data.error.startsWith("Invalid pair id"), r.body);
  }
  const badEncoding = await relay.json("/api/names/%E0%A4%A/close", {
    method: "POST",
  });
  strictEqual(badEncoding.status, 400);
  const spaced = await relay.json("/api/names/a%20b/close", { method: "POST" });
  strictEqual(spaced.status, 400);
  for (const path of ["/nowhere", "/api", "/api/names/x/y/z", "/metrics/x"]) {
    const r = await relay.json(path);
    strictEqual(r.status, 404, path);
    ok(r.data.error.includes("No such endpoint"), r.body);
  }
  const cases: [string, string, string][] = [
    ["POST", "/metrics", "GET, HEAD"],
    ["DELETE", "/api/names", "GET, HEAD, POST"],
    ["GET", "/api/pairs/1", "DELETE"],
    ["PUT", "/api/names/x", "DELETE"],
    ["GET", "/api/names/x/close", "POST"],
  ];
  for (const [method, path, allow] of cases) {
    const r = await relay.json(path, { method });
    strictEqual(r.status, 405, `${method} ${path}`);
    strictEqual(r.headers.get("allow"), allow);
  }
  strictEqual(
    (await relay.json("/api/pairs/99", { method: "DELETE" })).status,
    404,
  );
});

Deno.test("admin server: DELETE /api/pairs/ID closes that pair and no other", async () => {
  await using relay = await adminRelay();
  const one = await pairAt(relay, "closing");
  const two = await pairAt(relay, "closing");
  using _a = one.s, _b = one.c, _c = two.s, _d = two.c;
  const { data } = await relay.json("/api/pairs");
  strictEqual(data.pairs.length, 2);
  const [newest, oldest] = data.pairs;
  ok(newest.id > oldest.id);
  strictEqual(newest.name, "closing");
  const r = await relay.json(`/api/pairs/${oldest.id}`, { method: "DELETE" });
  assertEquals([r.status, r.data], [200, { id: oldest.id, closed: true }]);
  strictEqual(await one.c.line(), null); // both sides of the first pair end
  strictEqual(await one.s.line(), null);
  await statusUntil(relay, (s) => s.pairsTotal === 1, "one pair left");
  await two.c.send("alive");
  strictEqual(text(await readExactly(two.s.conn, 5)), "alive");
  const again = await relay.json(`/api/pairs/${oldest.id}`, {
    method: "DELETE",
  });
  strictEqual(again.status, 404);
});

Deno.test("admin server: POST /api/names/NAME/close closes its parked servers and its pairs, not another name's", async () => {
  await using relay = await adminRelay();
  const { s, c } = await pairAt(relay, "doomed");
  using _s = s, _c = c;
  using parked = await parkAt(relay, "doomed");
  using other = await parkAt(relay, "spared");
  const r = await relay.json("/api/names/doomed/close", { method: "POST" });
  assertEquals([r.status, r.data], [200, { name: "doomed", closed: 3 }]);
  await relay.proc.waitErr( // changes are logged, with who asked
    /Admin "POST" "\/api\/names\/doomed\/close" from "127\.0\.0\.1:\d+": 200/,
  );
  strictEqual(await c.line(), null);
  strictEqual(await s.line(), null);
  strictEqual(await parked.line(), null);
  const status = await statusUntil(
    relay,
    (st) => st.totals.activePairs === 0,
    "the pair to go",
  );
  const spared = status.names.find((n: { name: string }) =>
    n.name === "spared"
  );
  strictEqual(spared.parked, 1);
  using client = await askAt(relay, "spared");
  strictEqual(await client.line(), "CONNECTED");
  strictEqual(await other.line(), "CONNECTED");
});

Deno.test("admin server: /readyz is 503 while a cluster node cannot reach Redis yet; /healthz is 200", async () => {
  await using secret = await tempFile("a-cluster-secret-of-some-length\n");
  const [redisPort, s, c] = freePorts(3); // nothing listens on redisPort
  await using proc = new Proc(Deno.execPath(), [
    "run",
    "-A",
    "relay.ts",
    "--host=127.0.0.1",
    `--server-port=${s}`,
    `--client-port=${c}`,
    "--peer-port=0",
    `--cluster=redis://127.0.0.1:${redisPort}`,
    "--node=a",
    `--cluster-secret-file=${secret.path}`,
    "--admin=127.0.0.1:0",
  ]);
  const url = await adminUrl(proc);
  const ready = await request(new URL("/readyz", url));
  assertEquals([ready.status, ready.body], [503, "starting\n"]);
  strictEqual((await request(new URL("/healthz", url))).status, 200);
});
