/**
 * The failover mode's server helper: an echo service offered under `--name`
 * with `--pool` connections kept parked, each made with `accept()` (the
 * call `listen()` repeats), at the first relay of `--relay a,b,…`. When a
 * parked connection fails (its relay died: the kernel closed the socket) the
 * whole pool moves to the next relay at once; after a failure at every relay
 * in turn it backs off (50 ms doubling to 1 s). It stands in for `listen()`
 * with several relays, which on main takes one relay and retries only it.
 *
 * ```sh
 * deno run -A bench/_failover_server.ts --relay 127.0.0.1:8010,127.0.0.1:8011 --name x --pool 2
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { accept } from "../server.ts";
import { writeAll } from "../protocol/_wire.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    relay: { type: "string" },
    name: { type: "string" },
    pool: { type: "string", default: "2" },
  },
});
if (!values.relay || !values.name) {
  console.error("usage: _failover_server.ts --relay A,B[,…] --name NAME");
  Deno.exit(2);
}
const relays = values.relay.split(",");
const name = values.name;
const ac = new AbortController();
Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
/** Where the pool parks now: every slot follows the first to see a failure. */
let current = 0;

async function echo(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(16384);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      await writeAll(conn, buf.subarray(0, n));
    }
  } catch {
    // the client went away
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

async function slot(): Promise<void> {
  let failures = 0;
  while (!ac.signal.aborted) {
    const at = current;
    try {
      const conn = await accept({ relay: relays[at], name, signal: ac.signal });
      failures = 0;
      echo(conn);
    } catch (e) {
      if (current === at) {
        current = (at + 1) % relays.length;
        console.error(
          `${new Date().toISOString()} ${relays[at]} failed (${
            (e as Error).message
          }): parking at ${relays[current]}`,
        );
      }
      if (++failures >= relays.length) {
        await new Promise((r) =>
          setTimeout(r, Math.min(1_000, 50 * 2 ** (failures - relays.length)))
        );
      }
    }
  }
}

await Promise.all(
  Array.from({ length: Number(values.pool) }, () => slot()),
);
