// A test cluster of relay.ts processes over a real redis-server, and the
// servers and clients the cluster tests use on it.

import { connect, listen } from "../mod.ts";
import { bytes, readExactly, text } from "./_helpers.ts";
import { type RelayProc, relayProc } from "./_proc.ts";
import { eventually, type TestRedis } from "./_redis.ts";
import { parkedKey } from "../cluster/_registry.ts";

const SECRET = "cluster-test-secret-0123456789";

/** A node of a test cluster: relay.ts with --cluster, and its peer port. */
export interface Node extends RelayProc {
  name: string;
  peerPort: number;
}

/** A cluster of relay.ts processes over `redis`; `await using` kills them. */
export async function cluster(
  redis: TestRedis,
  names: string[],
  ...extra: string[]
): Promise<Node[] & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "cluster-" });
  const secretFile = `${dir}/secret`;
  await Deno.writeTextFile(secretFile, SECRET + "\n");
  const nodes = await Promise.all(names.map(async (name) => {
    const relay = await relayProc(
      `--cluster=${redis.url()}`,
      `--node=${name}`,
      "--peer-port=0",
      `--cluster-secret-file=${secretFile}`,
      ...(extra.some((f) => f.startsWith("--drain-timeout"))
        ? []
        : ["--drain-timeout=1"]),
      ...extra,
    );
    const [, port] = await relay.proc.wait(/peers on [^ ]+:(\d+)/, "err");
    return Object.assign(relay, { name, peerPort: Number(port) });
  }));
  // every node sees every other one
  await eventually(async () => {
    const keys = await redis.cli("KEYS", "tcp-relay:node:*:lease");
    return keys.trim().split("\n").filter(Boolean).length === names.length;
  }, "every node's lease");
  await new Promise((r) => setTimeout(r, 1100)); // one refresh: members read
  return Object.assign(nodes, {
    async [Symbol.asyncDispose]() {
      await Promise.all(nodes.map((n) => n[Symbol.asyncDispose]()));
      await Deno.remove(dir, { recursive: true });
    },
  });
}

/** Waits until node `on` has published `count` parked servers for `name`. */
export function parkedIn(
  redis: TestRedis,
  on: string,
  name: string,
  count = 1,
) {
  return eventually(
    async () => {
      const value = (await redis.cli("HGET", parkedKey(on), name)).trim();
      return value !== "" && Number(value) >= count;
    },
    `${count} parked for ${name} on ${on}`,
  );
}

/** An echo server parked at `relay` through listen(); `close()` stops it. */
export function echoServer(relay: string, name: string, pool = 2) {
  const listener = listen({ relay, name, pool, maxBackoff: 500 });
  const served = (async () => {
    for await (const conn of listener) {
      (async () => {
        try {
          const buf = new Uint8Array(65536);
          for (let n; (n = await conn.read(buf)) !== null;) {
            await conn.write(buf.subarray(0, n));
          }
        } catch {
          // reset: fine here
        } finally {
          try {
            conn.close();
          } catch {
            // closed already
          }
        }
      })();
    }
  })();
  return {
    async close() {
      listener.close();
      await served;
    },
  };
}

/** One echo through a new client connection to `name` at `relay`. */
export async function echoOnce(relay: string, name: string, message = "ping") {
  const conn = await connect({ relay, name });
  try {
    await conn.write(bytes(message));
    return text(await readExactly(conn, message.length));
  } finally {
    conn.close();
  }
}
