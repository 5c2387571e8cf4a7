/**
 * The relay: servers behind NAT and their clients both dial out to it; it
 * pairs a waiting server connection with each client asking for its name and
 * copies bytes both ways. Library and executable.
 *
 * ```sh
 * deno run -A jsr:@x/tcp-relay/relay --server-port 8010 --client-port 9010
 * deno run -A jsr:@x/tcp-relay/relay names add home-ssh --data /var/lib/tcp-relay
 * ```
 *
 * Run `deno run -A jsr:@x/tcp-relay/relay --help` for every flag;
 * `--admin 9100` adds the admin server ({@linkcode serveAdmin}).
 *
 * @example Running a relay in-process on free ports
 * ```ts
 * import { serveRelay } from "jsr:@x/tcp-relay/relay";
 *
 * await using relay = serveRelay({ hostname: "127.0.0.1", serverPort: 0, clientPort: 0 });
 * console.log(relay.serverAddr.port, relay.clientAddr.port, relay.stats());
 * ```
 *
 * @module
 */

import { cannotListen } from "./datapath/_accept.ts";
import type { PairInfo, RelayEvents } from "./engine/_events.ts";
import {
  type Conn,
  type NameOwners,
  type RelayStats,
  Rendezvous,
} from "./engine/_rendezvous.ts";
import type { Limits } from "./engine/_guard.ts";
import { checkChanges, resolveOptions, setPath } from "./engine/_options.ts";
import { MemoryOwners } from "./engine/_owners.ts";
import type { AdminOptions, AdminServer } from "./admin/_server.ts";
import { ClusterNode, type ClusterOptions } from "./cluster/_node.ts";
import type { ClusterStatus } from "./cluster/_status.ts";

export type { NameOwners, RelayStats } from "./engine/_rendezvous.ts";
export type {
  PairInfo,
  Port,
  RelayEvent,
  RelayEventListener,
  RelayEvents,
  RelayEventType,
  UnparkReason,
} from "./engine/_events.ts";
export type { RefusalCode } from "./protocol/_wire.ts";
export type { Limits } from "./engine/_guard.ts";
export type { ClusterOptions } from "./cluster/_node.ts";
export type { ClusterNodeStatus, ClusterStatus } from "./cluster/_status.ts";
export type { AdminNames, AdminOptions, AdminServer } from "./admin/_server.ts";

/**
 * Options of {@linkcode serveRelay}. Each is a setting of the relay (its
 * default and range in `engine/_settings.ts`, a flag of the executable); a
 * bad value throws a TypeError or RangeError naming the option.
 */
export interface RelayOptions {
  /** Address to listen on. Default `"0.0.0.0"`. */
  hostname?: string;
  /** Port for servers; `0` picks a free one. Default `8010`. */
  serverPort?: number;
  /** Port for clients; `0` picks a free one. Default `9010`. */
  clientPort?: number;
  /** How long a client asking for a reserved name waits for a server, in ms. Default `5000`. */
  wait?: number;
  /** How long a connection may take to finish its handshake, in ms. Default `10000`. */
  handshakeTimeout?: number;
  /** How long active pairs may finish after a shutdown starts, in ms. Default `10000`. */
  drainTimeout?: number;
  /** How often parked v2 connections are probed (`PING`), in ms, at least 1. Default `15000`. */
  heartbeat?: number;
  /** Serve both ports over TLS with this certificate and key (PEM). Default: plain TCP. */
  tls?: { cert: string; key: string };
  /**
   * Owned and private names (for example a credentials store). Default: no
   * owned names, except those made by `openRegistration`.
   */
  names?: NameOwners;
  /**
   * Let the first v2 `RESERVE` of a free name become its owner (the secret is
   * answered once). Default `false`.
   */
  openRegistration?: boolean;
  /** Limits against a single host exhausting the relay. Defaults in {@linkcode Limits}. */
  limits?: Partial<Limits>;
  /**
   * How bytes are copied: `"loop"`, a read/write loop per direction, or
   * `"streams"`, `readable.pipeTo(writable)` over streams of our own (kept
   * for the benchmark's comparison: it holds more memory per pair). Default
   * `"loop"`.
   */
  dataPath?: "loop" | "streams";
  /**
   * Give memory back to the system when the relay goes quiet after a busy
   * spell: one full garbage collection and, on Linux with glibc,
   * `malloc_trim(0)` (which needs `--allow-ffi`). It sets V8's `--expose-gc`
   * for new contexts. The relay executable turns it on. Default `false`.
   */
  reclaimMemory?: boolean;
  /**
   * Join a cluster of relays sharing one Redis (see README, "Cluster"):
   * clients of any node reach servers parked on any node, and owned names
   * come from Redis unless `names` is given. Default: a relay on its own.
   */
  cluster?: ClusterOptions;
  /** Aborting it shuts the relay down as {@linkcode Relay.shutdown} does. */
  signal?: AbortSignal;
}

/**
 * A running relay, from {@linkcode serveRelay}.
 *
 * @example Reading live counts, then stopping
 * ```ts
 * import { serveRelay } from "jsr:@x/tcp-relay/relay";
 *
 * const relay = serveRelay({ serverPort: 0, clientPort: 0 });
 * console.log(relay.stats().activePairs);
 * await relay.shutdown();
 * ```
 */
export interface Relay extends AsyncDisposable {
  /** Where servers connect. */
  readonly serverAddr: Deno.NetAddr;
  /** Where clients connect. */
  readonly clientAddr: Deno.NetAddr;
  /** Settles when the relay has stopped and every connection is closed. */
  readonly finished: Promise<void>;
  /** In a cluster, where other nodes' links come in; else `undefined`. */
  readonly peerAddr?: Deno.NetAddr;
  /**
   * In a cluster, this node's view of it (the nodes, their leases, where
   * each name is parked, the forwarded pairings); else `undefined`.
   *
   * @example The cluster as a node sees it
   * ```ts
   * import { serveRelay } from "jsr:@x/tcp-relay/relay";
   *
   * await using relay = serveRelay({
   *   serverPort: 0,
   *   clientPort: 0,
   *   cluster: { redis: "redis://127.0.0.1:6379", node: "a", secret: "0123456789abcdef", peerPort: 0 },
   * });
   * const status = await relay.cluster?.status();
   * for (const n of status?.nodes ?? []) console.log(n.node, n.up, n.leaseAgeMs, n.parked);
   * ```
   */
  readonly cluster?: RelayCluster;
  /**
   * Settles once the relay knows its owned names: at once, or in a cluster
   * when they were first read from Redis (until then it refuses every name).
   */
  readonly ready: Promise<void>;
  /** Live counts: parked connections per name, pairs, bytes relayed. */
  stats(): RelayStats;
  /**
   * The engine's events (accepted, refused with a code, parked, paired, pair
   * ended with bytes and duration, …): subscribe with `events.on(listener)`.
   */
  readonly events: RelayEvents;
  /** `"serving"`, `"draining"` once a shutdown started, then `"stopped"`. */
  readonly state: "serving" | "draining" | "stopped";
  /** The pairs being relayed now: name, peers, start, bytes so far. */
  pairs(): PairInfo[];
  /** Closes the pair with this `id` (from {@linkcode Relay.pairs}); `false` if none. */
  closePair(id: number): boolean;
  /**
   * Closes every connection of `name`: parked, waiting and both sides of its
   * pairs (the reservation stays); says how many it closed.
   */
  closeName(name: string): number;
  /**
   * Changes settings while the relay runs, without dropping a connection:
   * the limits (those not given stay as they are), `handshakeTimeout` (for
   * handshakes that start from now on) and `drainTimeout`. Other options
   * need a new relay: naming one throws a TypeError; a bad value throws a
   * TypeError or RangeError naming the option, and changes nothing.
   *
   * @example Lowering a limit live
   * ```ts
   * import { serveRelay } from "jsr:@x/tcp-relay/relay";
   *
   * await using relay = serveRelay({ serverPort: 0, clientPort: 0 });
   * relay.reconfigure({ limits: { maxPerIp: 10 }, handshakeTimeout: 5000 });
   * ```
   */
  reconfigure(changes: RelayChanges): void;
  /**
   * Stops accepting, closes parked and handshaking connections, lets active
   * pairs finish for up to `drainTimeout`, then closes them. Resolves with
   * {@linkcode Relay.finished}.
   */
  shutdown(): Promise<void>;
}

/** A relay's membership of a cluster: {@linkcode Relay.cluster}. */
export interface RelayCluster {
  /** This node's name (`--node`). */
  readonly node: string;
  /**
   * The cluster as this node sees it: every node (this one first) with its
   * address, whether its lease is live, the lease's age and the names it
   * holds with their parked counts; and the pairings forwarded out and in.
   * The other nodes are read from Redis at most once a second, a read
   * taking at most a second (while Redis is away they are shown down):
   * any number of callers (scrapes, status pages) cost Redis one read a
   * second.
   */
  status(): Promise<ClusterStatus>;
}

/**
 * What {@linkcode Relay.reconfigure} can change while the relay runs (the
 * settings marked live), as in {@linkcode RelayOptions}.
 */
export interface RelayChanges {
  /** As {@linkcode RelayOptions.handshakeTimeout}, for handshakes from now on. */
  handshakeTimeout?: number;
  /** As {@linkcode RelayOptions.drainTimeout}. */
  drainTimeout?: number;
  /** Limits to change; those not given stay. */
  limits?: Partial<Limits>;
}

/** RelayOptions with their defaults, checked. */
type Resolved =
  & Required<Omit<RelayOptions, "tls" | "names" | "signal" | "limits">>
  & Pick<RelayOptions, "tls">
  & { limits: Limits };

/**
 * Starts a relay: listens on the server and client ports at once (so their
 * addresses are known on return) and serves until shut down.
 *
 * @example A relay on the default ports, stopped by Ctrl-C
 * ```ts
 * import { serveRelay } from "jsr:@x/tcp-relay/relay";
 *
 * const ac = new AbortController();
 * Deno.addSignalListener("SIGINT", () => ac.abort());
 * const relay = serveRelay({ signal: ac.signal });
 * await relay.finished;
 * ```
 */
export function serveRelay(options: RelayOptions = {}): Relay {
  const o = resolveOptions({ ...options }) as Resolved;
  const listen = (port: number): Deno.Listener<Conn> => {
    const { hostname, tls } = o;
    try {
      return tls
        ? Deno.listenTls({ hostname, port, ...tls })
        : Deno.listen({ hostname, port });
    } catch (e) {
      throw cannotListen(e, { hostname, port });
    }
  };
  let limits = o.limits;
  const settings = {
    wait: o.wait,
    handshakeTimeout: o.handshakeTimeout,
    drainTimeout: o.drainTimeout,
    heartbeat: o.heartbeat,
    dataPath: o.dataPath,
    limits,
    owners: options.names ??
      (o.openRegistration ? new MemoryOwners() : undefined),
    openRegistration: o.openRegistration,
    reclaimMemory: o.reclaimMemory,
  };
  const serverListener = listen(o.serverPort);
  let clientListener: Deno.Listener<Conn>;
  try {
    clientListener = listen(o.clientPort);
  } catch (e) {
    serverListener.close();
    throw e;
  }
  let node: ClusterNode | undefined;
  try {
    if (options.cluster) {
      node = new ClusterNode(options.cluster, o.hostname, settings.wait);
      settings.owners ??= node.owners;
    }
  } catch (e) {
    serverListener.close();
    clientListener.close();
    throw e;
  }
  const core = new Rendezvous(
    { ...settings, cluster: node },
    serverListener,
    clientListener,
  );
  // a node withdraws from the cluster first: nobody is routed here after
  const shutdown = (): Promise<void> =>
    node
      ? node.withdraw().then(() => core.shutdown()).then(() => node!.close())
      : core.shutdown();
  const finished = core.finished.then(async () => {
    await node?.close();
  });
  options.signal?.addEventListener("abort", shutdown, { once: true });
  if (options.signal?.aborted) shutdown();
  finished.then(() => options.signal?.removeEventListener("abort", shutdown));
  return {
    serverAddr: serverListener.addr as Deno.NetAddr,
    clientAddr: clientListener.addr as Deno.NetAddr,
    peerAddr: node?.peerAddr,
    cluster: node
      ? { node: options.cluster!.node, status: () => node!.status() }
      : undefined,
    ready: node ? node.owners.loaded : Promise.resolve(),
    finished,
    stats: () => core.stats(),
    events: core.events,
    get state() {
      return core.state;
    },
    pairs: () => core.pairs(),
    closePair: (id) => core.closePair(id),
    closeName: (name) => core.closeName(name),
    reconfigure(changes: RelayChanges) {
      const next: Record<string, unknown> = {};
      for (const [key, value] of checkChanges({ ...changes })) {
        setPath(next, key, value);
      }
      if (next.limits) next.limits = limits = { ...limits, ...next.limits };
      core.reconfigure(next);
    },
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

/**
 * Starts the admin server of `relay`: `/healthz`, `/readyz` (503 while
 * draining), `/metrics` (Prometheus), a live status page at `/` and a JSON
 * API under `/api/` (see README, "Operations"). It listens on 127.0.0.1
 * unless told otherwise, refuses an address that is not loopback without a
 * `token`, and stops with the relay. It (and prom-client) loads on the first
 * call: a relay without one does not carry it.
 *
 * @example A relay and its admin server on free ports
 * ```ts
 * import { serveAdmin, serveRelay } from "jsr:@x/tcp-relay/relay";
 *
 * await using relay = serveRelay({ hostname: "127.0.0.1", serverPort: 0, clientPort: 0 });
 * await using admin = await serveAdmin(relay, { port: 0 });
 * console.log(await (await fetch(new URL("/metrics", admin.url))).text());
 * ```
 */
export async function serveAdmin(
  relay: Relay,
  options: AdminOptions,
): Promise<AdminServer> {
  const { startAdmin } = await import("./admin/_server.ts");
  return startAdmin(relay, options);
}

async function main(): Promise<never> {
  // the executable's own code loads only when it runs: an import of the
  // library does not parse flags, read TOML or manage the names store
  const { runRelay } = await import("./cli/_relay_main.ts");
  return await runRelay(Deno.args);
}

if (import.meta.main) main();
