// The relay as a process with few file descriptors: running out of them
// (EMFILE on accept) pauses accepting, and it serves again once some close.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { accept, connect } from "../mod.ts";
import { freePorts, sendAndClose } from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url);

async function tryConnect(port: number): Promise<Deno.TcpConn | null> {
  try {
    return await Deno.connect({ hostname: "127.0.0.1", port });
  } catch {
    return null;
  }
}

Deno.test("a relay out of file descriptors keeps running and serves again once they free", async () => {
  const [sp, cp] = freePorts(2);
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      `ulimit -n 64 && exec "${Deno.execPath()}" run -A relay.ts --host 127.0.0.1 --server-port ${sp} --client-port ${cp} --log-format json`,
    ],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const stderr = new Response(child.stderr).text();
  try {
    let probe: Deno.TcpConn | null = null;
    for (let i = 0; i < 500 && !probe; i++) {
      probe = await tryConnect(cp);
      if (!probe) await new Promise((r) => setTimeout(r, 20));
    }
    ok(probe, "the relay did not start");
    probe.close();

    // Far more connections than the relay has descriptors for: each waits in
    // its handshake (or in the accept queue) until closed.
    const flood: Deno.TcpConn[] = [];
    for (let i = 0; i < 120; i++) {
      const c = await tryConnect(i % 2 ? cp : sp);
      if (c) flood.push(c);
    }
    await new Promise((r) => setTimeout(r, 300));
    for (const c of flood) c.close();

    // Served again: a pair relays a request and its answer.
    const served = accept({
      relay: `127.0.0.1:${sp}`,
      name: "after",
      timeout: 10_000,
    });
    let conn: Deno.TcpConn | null = null;
    for (let i = 0; i < 200 && !conn; i++) {
      conn = await connect({
        relay: `127.0.0.1:${cp}`,
        name: "after",
        timeout: 10_000,
      })
        .catch(() => null);
      if (!conn) await new Promise((r) => setTimeout(r, 50));
    }
    ok(conn, "no pair after the flood");
    using c = conn;
    using s = await served;
    await sendAndClose(c, s, "still here");
  } finally {
    child.kill("SIGTERM");
    assertEquals((await child.status).code, 0);
  }
  ok(
    /Accept failed/.test(await stderr),
    "the relay did not log running out of descriptors",
  );
});
