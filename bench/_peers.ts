/**
 * The bench's peers: what each one is, how it starts, and when it is ready.
 *
 * Adding a peer is one entry in {@linkcode PEERS}: a process started by
 * {@linkcode processPeer} (most peers), or any `start()` that resolves with
 * the ports the driver dials (a cluster peer may give a server port on one
 * node and a client port on another) and the pids whose RSS is memory.
 *
 * @module
 */

import {
  type Binaries,
  ROOT,
  SHARED,
  sleep,
  stopChild,
  waitForPort,
} from "./_driver.ts";
import { clusterPeer, type ClusterRun } from "./_cluster.ts";

export { stopChild, waitForPort };

/** How the driver talks to a peer (`relaybench --proto`). */
export type Proto = "seed" | "raw" | "direct";

/** A started peer. */
export interface Running {
  /** The port servers dial. */
  serverPort: number;
  /** The port clients dial. */
  clientPort: number;
  /** Its processes: their RSS together is the peer's memory. */
  pids: number[];
  /** Stops it and waits until it has exited. */
  stop(): Promise<void>;
}

/** One peer of the bench. */
export interface Peer {
  /** One line for `--help`. */
  about: string;
  /** The driver's protocol for it. */
  proto: Proto;
  /** Pairs repeatedly (pairings, memory): not socat, which pairs once. */
  repeats: boolean;
  /** The burst runs against it: this project's relay (v2, `--wait`). */
  burst: boolean;
  /** Starts it on the bench's ports; `undefined` for no process (`direct`). */
  start(bins: Binaries): Promise<Running | undefined>;
  /** A cluster peer: starts a cluster of nodes with these names (the failover mode). */
  nodes?(names: string[]): Promise<ClusterRun>;
}

/** The bench's ports (a peer may pick others and say so in {@linkcode Running}). */
export const SERVER_PORT = 18110, CLIENT_PORT = 19110;

/**
 * A peer that is one process listening on {@linkcode SERVER_PORT} and
 * {@linkcode CLIENT_PORT}; ready once the client port accepts (or after a
 * pause, for socat, which a probe would pair).
 */
export function processPeer(
  about: string,
  proto: Proto,
  command: (bins: Binaries) => [string, string[]],
  { repeats = true, burst = false, pause = 0 } = {},
): Peer {
  return {
    about,
    proto,
    repeats,
    burst,
    async start(bins) {
      const [cmd, args] = command(bins);
      const child = new Deno.Command(cmd, {
        args,
        cwd: ROOT,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        if (pause) await sleep(pause);
        else await waitForPort(CLIENT_PORT);
      } catch (e) {
        await stopChild(child);
        throw e;
      }
      return {
        serverPort: SERVER_PORT,
        clientPort: CLIENT_PORT,
        pids: [child.pid],
        stop: () => stopChild(child),
      };
    },
  };
}

const deno = Deno.execPath();

/**
 * `deno run -A [denoFlags] relay.ts` on the bench's ports with `flags`: this
 * relay as a user starts it (`--wait 5` is its default, given for the burst).
 */
export function relayArgs(
  denoFlags: string[] = [],
  flags: string[] = [],
): string[] {
  return [
    "run",
    "-A",
    ...denoFlags,
    `${ROOT}relay.ts`,
    "--host",
    "127.0.0.1",
    "--client-port",
    `${CLIENT_PORT}`,
    "--server-port",
    `${SERVER_PORT}`,
    "--wait",
    "5",
    ...flags,
  ];
}

/**
 * A peer that is this project's relay, started with `denoFlags` and `flags`
 * (an `--admin` peer is one more of these); `burst`: the burst runs against it.
 */
export function projectPeer(
  about: string,
  denoFlags: string[] = [],
  flags: string[] = [],
  burst = false,
): Peer {
  return processPeer(
    about,
    "seed",
    () => [deno, relayArgs(denoFlags, flags)],
    { burst },
  );
}

/** How often the `project-admin` peer's `/metrics` is scraped (ms). */
export const SCRAPE_EVERY = 1_000;

/**
 * Waits until the file at `path` holds a match of `re` (the first group
 * returned); fails after `ms`, or once `exited` says the process is gone.
 */
async function waitInFile(
  path: string,
  re: RegExp,
  exited: () => boolean,
  ms = 15_000,
): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    const m = re.exec(await Deno.readTextFile(path));
    if (m) return m[1];
    if (exited()) throw new Error(`the relay exited before logging ${re}`);
    if (Date.now() > end) throw new Error(`no ${re} in ${ms / 1000} s`);
    await sleep(25);
  }
}

/**
 * This relay with `--admin 127.0.0.1:0` (the admin server on a free port,
 * read from its startup log line), its `/metrics` scraped at once and then
 * every second while it runs, as a Prometheus would: what the admin server
 * costs. Its log goes to a file (as `project`'s goes nowhere), so that no
 * reader of a pipe competes with the relay for the CPU.
 */
export function adminPeer(about: string): Peer {
  return {
    about,
    proto: "seed",
    repeats: true,
    burst: false,
    async start() {
      const log = await Deno.makeTempFile({ prefix: "bench-admin-" });
      const child = new Deno.Command("sh", {
        args: [
          "-c",
          'exec "$0" "$@" 2>"$BENCH_ADMIN_LOG"',
          deno,
          ...relayArgs([], ["--admin", "127.0.0.1:0"]),
        ],
        env: { BENCH_ADMIN_LOG: log },
        cwd: ROOT,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      let exited = false;
      child.status.then(() => exited = true);
      let url: string;
      try {
        url = await waitInFile(
          log,
          /Admin server on "(http:[^"]+)"/,
          () => exited,
        );
        await waitForPort(CLIENT_PORT);
      } catch (e) {
        await stopChild(child);
        await Deno.remove(log).catch(() => {});
        throw e;
      }
      let scrapes = 0, failed = 0, busy = false;
      const scrape = async () => {
        if (busy) return;
        busy = true;
        try {
          const res = await fetch(new URL("/metrics", url));
          await res.text();
          if (res.ok) scrapes++;
          else failed++;
        } catch {
          failed++;
        } finally {
          busy = false;
        }
      };
      scrape();
      const scraper = setInterval(scrape, SCRAPE_EVERY);
      return {
        serverPort: SERVER_PORT,
        clientPort: CLIENT_PORT,
        pids: [child.pid],
        async stop() {
          clearInterval(scraper);
          await stopChild(child);
          await Deno.remove(log).catch(() => {});
          console.error(
            `bench: project-admin: ${scrapes} scrapes of /metrics${
              failed ? `, ${failed} failed` : ""
            }`,
          );
        },
      };
    },
  };
}

/** Every peer, in the order of the table. */
export const PEERS: Record<string, Peer> = {
  direct: {
    about: "no relay: the driver talks to itself (the machine's floor)",
    proto: "direct",
    repeats: true,
    burst: false,
    start: () => Promise.resolve(undefined),
  },
  "epoll-c": processPeer(
    "peers/epoll_relay.c: a bare C epoll relay (any relay's floor)",
    "seed",
    (bins) => [bins.floor, [`${CLIENT_PORT}`, `${SERVER_PORT}`]],
  ),
  socat: processPeer(
    "socat -b 262144 TCP-LISTEN TCP-LISTEN (pairs once)",
    "raw",
    () => ["socat", [
      "-b",
      "262144",
      `TCP-LISTEN:${SERVER_PORT},bind=127.0.0.1,reuseaddr`,
      `TCP-LISTEN:${CLIENT_PORT},bind=127.0.0.1,reuseaddr`,
    ]],
    { repeats: false, pause: 300 },
  ),
  node: processPeer(
    "the afternoon relay in Node (../shared/bench/peers/node_relay.mjs)",
    "seed",
    () => ["node", [
      `${SHARED}peers/node_relay.mjs`,
      `${CLIENT_PORT}`,
      `${SERVER_PORT}`,
    ]],
  ),
  "naive-deno": processPeer(
    "the afternoon relay in Deno, pipeTo (../shared/bench/peers/)",
    "seed",
    () => [deno, [
      "run",
      "-A",
      `${SHARED}peers/naive_deno_relay.ts`,
      `${CLIENT_PORT}`,
      `${SERVER_PORT}`,
    ]],
  ),
  project: projectPeer(
    "this relay as users start it: deno run -A relay.ts",
    [],
    [],
    true,
  ),
  "project-lean": projectPeer(
    "the same with --v8-flags=--optimize-for-size (deno task relay, compile)",
    ["--v8-flags=--optimize-for-size"],
  ),
  "project-streams": projectPeer(
    "this relay with --data-path streams",
    [],
    ["--data-path", "streams"],
  ),
  "project-admin": adminPeer(
    "this relay with --admin 127.0.0.1:0, /metrics scraped every second",
  ),
  cluster: clusterPeer(),
};

/** The peers of a plain `deno task bench`. */
export const DEFAULT_PEERS = [
  "direct",
  "epoll-c",
  "socat",
  "project",
  "project-lean",
  "project-admin",
  "cluster",
];
