// Who may use the admin server (relay.ts --admin): loopback by default, a
// token off loopback (from a file, the environment, SIGHUP, setToken), the
// flags' usage errors, and requests made for another site.

import {
  deepStrictEqual as assertEquals,
  ok,
  rejects,
  strictEqual,
} from "node:assert/strict";
import { serveAdmin } from "../relay.ts";
import { parseAdminFlags } from "../admin/_flags.ts";
import { adminRelay, adminUrl, request, tempFile } from "./_admin.ts";
import { freePorts, readAll, startRelay, tempDir } from "./_helpers.ts";
import { Proc, relayProc, run } from "./_proc.ts";

const TOKEN = "s3cret-admin-token-0123456789";

Deno.test("admin server: --admin PORT alone binds 127.0.0.1", async () => {
  const [port] = freePorts(1);
  await using relay = await relayProc(`--admin=${port}`);
  strictEqual(await adminUrl(relay.proc), `http://127.0.0.1:${port}/`);
});

Deno.test("admin server: a non-loopback address without a token is refused (exit 2); with a token it is taken", async () => {
  const r = await run(
    "relay.ts",
    "--host=127.0.0.1",
    "--server-port=0",
    "--client-port=0",
    "--admin=0.0.0.0:0",
  );
  strictEqual(r.code, 2, r.stderr);
  ok(/0\.0\.0\.0 is not a loopback address/.test(r.stderr), r.stderr);
  ok(/--admin-token-file FILE or TCP_RELAY_ADMIN_TOKEN/.test(r.stderr));
  await using file = await tempFile(`${TOKEN}\n`);
  const flags = {
    admin: "0.0.0.0:9100",
    "admin-token-file": file.path,
  };
  assertEquals(parseAdminFlags(flags), {
    hostname: "0.0.0.0",
    port: 9100,
    token: TOKEN,
    tokenFile: file.path,
  });
});

Deno.test("admin server: bad --admin flags are usage errors (exit 2)", async () => {
  await using empty = await tempFile("\n");
  const cases: [string[], RegExp][] = [
    [["--admin=nope"], /--admin takes \[HOST:\]PORT/],
    [["--admin=70000"], /--admin takes \[HOST:\]PORT/],
    [["--admin-token-file=/nonexistent"], /goes with --admin/],
    [["--admin=0", `--admin-token-file=${empty.path}`], /is empty/],
    [["--admin=0", "--admin-token-file=/nonexistent/x"], /cannot read/],
  ];
  for (const [flags, message] of cases) {
    const r = await run("relay.ts", "--server-port=0", ...flags);
    strictEqual(r.code, 2, `${flags}: ${r.stderr}`);
    ok(message.test(r.stderr), `${flags}: ${r.stderr}`);
  }
});

Deno.test("admin server: a port in use is a clear error (exit 1)", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = taken.addr.port;
  const r = await run(
    "relay.ts",
    "--host=127.0.0.1",
    "--server-port=0",
    "--client-port=0",
    `--admin=127.0.0.1:${port}`,
  );
  strictEqual(r.code, 1, r.stderr);
  ok(
    r.stderr.includes(
      `Cannot listen on 127.0.0.1:${port} for the admin server: address in use`,
    ),
    r.stderr,
  );
});

Deno.test("admin server: with a token every endpoint but /healthz needs it; a wrong one is 401 and logged without the token", async () => {
  await using file = await tempFile(TOKEN);
  await using relay = await adminRelay([`--admin-token-file=${file.path}`]);
  strictEqual((await relay.fetch("/healthz")).status, 200);
  for (const path of ["/", "/readyz", "/metrics", "/api/status", "/nowhere"]) {
    const none = await relay.fetch(path);
    strictEqual(none.status, 401, path);
    ok(none.headers.get("www-authenticate")?.includes("Bearer"), path);
    const wrong = await relay.fetch(path, {
      headers: { authorization: "Bearer wrong-token" },
    });
    strictEqual(wrong.status, 401, path);
    ok(JSON.parse(wrong.body).error.includes("wrong token"), wrong.body);
  }
  const del = await relay.fetch("/api/pairs/1", { method: "DELETE" });
  strictEqual(del.status, 401);
  const bearer = { authorization: `Bearer ${TOKEN}` };
  for (const path of ["/", "/readyz", "/metrics", "/api/status"]) {
    strictEqual((await relay.fetch(path, { headers: bearer })).status, 200);
  }
  // a browser's Basic prompt: any user name, the token as the password
  const basic = { authorization: `Basic ${btoa(`admin:${TOKEN}`)}` };
  strictEqual(
    (await relay.fetch("/api/status", { headers: basic })).status,
    200,
  );
  await relay.proc.waitErr(
    /Refused admin request "GET" "\/readyz" from "127\.0\.0\.1:\d+": "wrong token"/,
  );
  await relay.proc.waitErr(
    /Refused admin request "GET" "\/metrics" from .*: "no token"/,
  );
  ok(!relay.proc.err.includes(TOKEN), "the token is never logged");
  ok(!relay.proc.err.includes("wrong-token"), "nor the wrong one");
  const metrics = await relay.fetch("/metrics", { headers: bearer });
  ok(/tcp_relay_admin_unauthorized_total (\d+)/.test(metrics.body));
  ok(
    Number(/tcp_relay_admin_unauthorized_total (\d+)/.exec(metrics.body)![1]) >=
      11,
  );
});

Deno.test("admin server: the token can come from TCP_RELAY_ADMIN_TOKEN", async () => {
  const [s, c] = freePorts(2);
  await using proc = new Proc(Deno.execPath(), [
    "run",
    "-A",
    "relay.ts",
    "--host=127.0.0.1",
    `--server-port=${s}`,
    `--client-port=${c}`,
    "--admin=127.0.0.1:0",
  ], { env: { TCP_RELAY_ADMIN_TOKEN: TOKEN } });
  const url = await adminUrl(proc);
  strictEqual((await request(new URL("/api/status", url))).status, 401);
  const ok200 = await request(new URL("/api/status", url), {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  strictEqual(ok200.status, 200);
});

Deno.test("admin server: SIGHUP reads --admin-token-file again: the new token works, the old one no longer", async () => {
  await using file = await tempFile(TOKEN);
  await using relay = await adminRelay([`--admin-token-file=${file.path}`]);
  const as = (token: string) => ({ authorization: `Bearer ${token}` });
  strictEqual(
    (await relay.fetch("/readyz", { headers: as(TOKEN) })).status,
    200,
  );
  await Deno.writeTextFile(file.path, "the-new-token\n");
  relay.proc.kill("SIGHUP");
  await relay.proc.waitErr(/Admin token read again \(SIGHUP\)/);
  strictEqual(
    (await relay.fetch("/readyz", { headers: as(TOKEN) })).status,
    401,
  );
  const now = await relay.fetch("/readyz", { headers: as("the-new-token") });
  strictEqual(now.status, 200);
});

Deno.test("admin server: requests a browser makes for another site are refused (403)", async () => {
  await using relay = await adminRelay();
  const port = new URL(relay.url).port;
  const foreign = await relay.json("/api/names/x/close", {
    method: "POST",
    headers: { origin: "http://evil.example" },
  });
  strictEqual(foreign.status, 403);
  ok(foreign.data.error.includes("evil.example"), foreign.body);
  const crossSite = await relay.json("/api/pairs/1", {
    method: "DELETE",
    headers: { "sec-fetch-site": "cross-site" },
  });
  strictEqual(crossSite.status, 403);
  const same = await relay.json("/api/names/x/close", {
    method: "POST",
    headers: { origin: `http://127.0.0.1:${port}` },
  });
  strictEqual(same.status, 200);
  // DNS rebinding: without a token, only loopback Host names are answered
  const rawGet = async (host: string) => {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: +port });
    const head =
      `GET /api/status HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
    await conn.write(new TextEncoder().encode(head));
    return new TextDecoder().decode(await readAll(conn)).split("\r\n")[0];
  };
  strictEqual(await rawGet(`evil.example:${port}`), "HTTP/1.1 403 Forbidden");
  strictEqual(await rawGet(`localhost:${port}`), "HTTP/1.1 200 OK");
  strictEqual(await rawGet(`[::1]:${port}`), "HTTP/1.1 200 OK");
});

Deno.test("serveAdmin (library): the admin server of an in-process relay, its token changed live, stopped with the relay", async () => {
  const relay = startRelay();
  const admin = await serveAdmin(relay, { port: 0, token: "one" });
  strictEqual(admin.addr.hostname, "127.0.0.1");
  const as = (token: string) =>
    request(new URL("/api/status", admin.url), {
      headers: { authorization: `Bearer ${token}` },
    });
  strictEqual((await as("one")).status, 200);
  admin.setToken("two");
  strictEqual((await as("one")).status, 401);
  strictEqual((await as("two")).status, 200);
  admin.setToken(undefined); // loopback: no token needed
  strictEqual((await request(new URL("/readyz", admin.url))).status, 200);
  await rejects(
    serveAdmin(relay, { hostname: "0.0.0.0", port: 0 }),
    (e) => e instanceof RangeError && /without a token/.test(e.message),
  );
  await rejects(serveAdmin(relay, { port: 70000 }), RangeError);
  await relay.shutdown();
  await admin.finished;
});

Deno.test("admin server: from a --config file; a reload naming another token file switches to its token", async () => {
  await using dir = await tempDir("tcp-relay-admin-config-");
  await Deno.writeTextFile(`${dir.dir}/one.token`, "token-one\n");
  await Deno.writeTextFile(`${dir.dir}/two.token`, "token-two\n");
  const config = `${dir.dir}/relay.toml`;
  const toml = (file: string) =>
    `admin = "127.0.0.1:0"\nadmin-token-file = "${file}"\n`;
  await Deno.writeTextFile(config, toml("one.token"));
  await using relay = await relayProc(`--config=${config}`);
  const url = await adminUrl(relay.proc);
  const as = (token: string) =>
    request(new URL("/readyz", url), {
      headers: { authorization: `Bearer ${token}` },
    });
  strictEqual((await as("token-one")).status, 200);
  await Deno.writeTextFile(config, toml("two.token"));
  await relay.proc.waitErr(/Admin token read again \(config reloaded\)/);
  strictEqual((await as("token-one")).status, 401);
  strictEqual((await as("token-two")).status, 200);
});
