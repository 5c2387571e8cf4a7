/**
 * The bench's cluster: its own `redis-server` (a free port, nothing kept on
 * disk) and `relay.ts --cluster` nodes started as users start them (`deno run
 * -A relay.ts`, no V8 flags), each on free ports, sharing a secret file.
 *
 * The `cluster` peer is two nodes: the driver's servers park on node `a` and
 * its clients ask node `b`, so every pair crosses nodes (one hop over the
 * link). Its memory is the RSS of both relays; Redis is left out, as it holds
 * counts per name and node, nothing per pair. The failover mode starts three.
 *
 * @module
 */

import { Redis } from "ioredis";
import { accept } from "../server.ts";
import { connect } from "../client.ts";
import { RelayError } from "../protocol/_errors.ts";
import { freePort, ROOT, sleep, stopChild, waitForPort } from "./_driver.ts";
import type { Peer, Running } from "./_peers.ts";

/** One `relay.ts --cluster` process. */
export interface NodeProc {
  name: string;
  serverPort: number;
  clientPort: number;
  peerPort: number;
  child: Deno.ChildProcess;
}

/** A started cluster: Redis and its nodes, in the order asked for. */
export interface ClusterRun {
  /** `redis://127.0.0.1:PORT/0`. */
  redisUrl: string;
  nodes: NodeProc[];
  /** Stops every node still running and Redis, and removes the secret. */
  stop(): Promise<void>;
}

const deno = Deno.execPath();
const SECRET = "bench-cluster-secret-0123456789abcdef";

function spawnQuiet(cmd: string, args: string[]): Deno.ChildProcess {
  return new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

/** A connection to the bench's Redis for looking in; `quit()` it after. */
export function redisClient(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: 1, connectTimeout: 2_000 });
}

/** Until `check()` is true, every `every` ms; throws `what` after `ms`. */
async function until(
  check: () => Promise<boolean>,
  what: string,
  ms = 15_000,
  every = 50,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}

/**
 * Once a server parked on the first node is reached by a client on each of
 * the others (so every node read the owned names and sees the first).
 */
async function probe(nodes: NodeProc[]): Promise<void> {
  const [first, ...others] = nodes;
  for (const node of others) {
    const name = `bench-ready-${node.name}`;
    const ac = new AbortController();
    const serving = accept({
      relay: `127.0.0.1:${first.serverPort}`,
      name,
      signal: ac.signal,
    });
    serving.catch(() => {});
    try {
      await until(async () => {
        try {
          const conn = await connect({
            relay: `127.0.0.1:${node.clientPort}`,
            name,
            timeout: 5_000,
          });
          conn.close();
          return true;
        } catch (e) {
          if (e instanceof RelayError) return false;
          throw e;
        }
      }, `node ${node.name} to reach node ${first.name}`);
      (await serving).close();
    } finally {
      ac.abort();
    }
  }
}

/**
 * Starts `redis-server` and one `relay.ts --cluster` node per name (each
 * with `--wait 5`, as the single relay of the bench), and resolves once
 * every node holds a lease, has read the others, and a client on each node
 * reaches a server parked on the first.
 */
export async function startCluster(names: string[]): Promise<ClusterRun> {
  const dir = await Deno.makeTempDir({ prefix: "bench-cluster-" });
  const secretFile = `${dir}/secret`;
  await Deno.writeTextFile(secretFile, SECRET + "\n");
  const redisPort = freePort();
  const redisUrl = `redis://127.0.0.1:${redisPort}/0`;
  const redisChild = spawnQuiet("redis-server", [
    ...["--port", `${redisPort}`, "--bind", "127.0.0.1"],
    ...["--save", "", "--appendonly", "no"],
  ]);
  const nodes: NodeProc[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => stopChild(n.child)));
    await stopChild(redisChild);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  let redis: Redis | undefined;
  try {
    await waitForPort(redisPort);
    for (const name of names) {
      const ports = [freePort(), freePort(), freePort()];
      const [serverPort, clientPort, peerPort] = ports;
      nodes.push({
        name,
        serverPort,
        clientPort,
        peerPort,
        child: spawnQuiet(deno, [
          "run",
          "-A",
          `${ROOT}relay.ts`,
          ...["--host", "127.0.0.1", "--wait", "5"],
          ...["--server-port", `${serverPort}`],
          ...["--client-port", `${clientPort}`],
          ...["--cluster", redisUrl, "--node", name],
          ...["--peer-port", `${peerPort}`],
          ...["--cluster-secret-file", secretFile],
        ]),
      });
    }
    for (const n of nodes) await waitForPort(n.clientPort);
    redis = redisClient(redisUrl);
    await until(async () => {
      const leases = await redis!.keys("tcp-relay:node:*:lease");
      return leases.length === names.length;
    }, "every node's lease");
    await sleep(1_100); // one lease refresh: every node has read the others
    await probe(nodes);
    return { redisUrl, nodes, stop };
  } catch (e) {
    await stop();
    throw e;
  } finally {
    redis?.disconnect();
  }
}

/**
 * The `cluster` peer: nodes `a` and `b`; servers dial `a`, clients dial `b`.
 * {@linkcode Peer.nodes} starts other clusters of it (the failover mode).
 */
export function clusterPeer(): Peer {
  return {
    about:
      "2 relay.ts --cluster nodes and a redis-server: servers on a, clients on b",
    proto: "seed",
    repeats: true,
    burst: false,
    nodes: startCluster,
    async start(): Promise<Running> {
      const run = await startCluster(["a", "b"]);
      const [a, b] = run.nodes;
      return {
        serverPort: a.serverPort,
        clientPort: b.clientPort,
        pids: [a.child.pid, b.child.pid],
        stop: run.stop,
      };
    },
  };
}
