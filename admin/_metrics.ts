/**
 * The relay's Prometheus metrics (prom-client), every name prefixed
 * `tcp_relay_`. Gauges and the counters the engine keeps already (pairings,
 * refusals, bytes) are read from `stats()` when scraped; the histograms and
 * the accepted-connection counter are fed by the engine's events, with
 * nothing heavier than a bucket increment on the pairing path.
 *
 * Per-name series are bounded: the {@linkcode TOP_NAMES} names with the most
 * connections (parked + waiting + active pairs) get their own `name` label,
 * the rest are summed under `name="_other"`.
 *
 * @module
 */

import {
  collectDefaultMetrics,
  Counter,
  Gauge,
  Histogram,
  Registry,
} from "prom-client";
import { REFUSAL_CODES, VERSION } from "../protocol/_wire.ts";
import type { ClusterStatus, Relay, RelayStats } from "../relay.ts";
import { clusterMetrics } from "./_cluster_metrics.ts";

/** How many names get series of their own; the rest are `name="_other"`. */
export const TOP_NAMES = 50;
/** The label value of the names beyond {@linkcode TOP_NAMES}. */
export const OTHER = "_other";
const PREFIX = "tcp_relay_";

/**
 * Metrics of prom-client's defaults that are left out: three gauges whose
 * names end in `_total` (promtool rejects them), a GC histogram Deno never
 * feeds, and Node's version (the compatibility layer's, not Deno's).
 */
const DROPPED = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
  "nodejs_gc_duration_seconds",
  "nodejs_version_info",
];

type NameCounts = RelayStats["names"][string];

/** The names with the most connections, at most `top`, and the rest summed. */
export function topNames(
  names: RelayStats["names"],
  top = TOP_NAMES,
): { top: [string, NameCounts][]; other?: NameCounts } {
  const size = (c: NameCounts) => c.parked + c.waiting + c.active;
  const all = Object.entries(names).filter(([name]) => name !== OTHER);
  const other = names[OTHER] ? { ...names[OTHER] } : undefined;
  if (all.length <= top && !other) return { top: all };
  all.sort(([a, x], [b, y]) => size(y) - size(x) || (a < b ? -1 : 1));
  const rest = other ?? { parked: 0, waiting: 0, active: 0 };
  for (const [, c] of all.slice(top)) {
    rest.parked += c.parked;
    rest.waiting += c.waiting;
    rest.active += c.active;
  }
  return { top: all.slice(0, top), other: rest };
}

/** A relay's metrics registry, fed by its events and its `stats()`. */
export class RelayMetrics implements Disposable {
  /** The registry: `metrics()` renders it. */
  readonly registry: Registry = new Registry();
  /** Requests the admin server refused for a missing or wrong token. */
  readonly unauthorized: Counter;
  #subscription: Disposable;
  #accepted = { server: 0, client: 0 };
  /** One stats() per scrape, shared by every collect callback. */
  #stats!: RelayStats;
  /** One cluster status per scrape, in a cluster. */
  #cluster?: ClusterStatus;
  #relay: Relay;

  constructor(relay: Relay) {
    this.#relay = relay;
    const registers = [this.registry];
    const stats = () => this.#stats;
    // deno-lint-ignore no-this-alias
    const self = this;

    new Gauge({
      name: `${PREFIX}info`,
      help: "The relay's version (always 1).",
      labelNames: ["version"],
      registers,
    }).set({ version: VERSION }, 1);
    new Gauge({
      name: `${PREFIX}draining`,
      help:
        "1 once a shutdown started (the relay lets its pairs finish), else 0.",
      registers,
      collect() {
        this.set(relay.state === "serving" ? 0 : 1);
      },
    });
    new Gauge({
      name: `${PREFIX}connections`,
      help:
        "Open connections by state: handshaking, parked (servers waiting for a client), waiting (clients waiting for a server), paired (both sides of each pair).",
      labelNames: ["state"],
      registers,
      collect() {
        const s = stats();
        const parked = Object.values(s.parked).reduce((a, b) => a + b, 0);
        this.set({ state: "handshaking" }, s.handshaking);
        this.set({ state: "parked" }, parked);
        this.set({ state: "waiting" }, s.waiting);
        this.set({ state: "paired" }, 2 * s.activePairs);
      },
    });
    new Gauge({
      name: `${PREFIX}active_pairs`,
      help: "Pairs copying bytes now.",
      registers,
      collect() {
        this.set(stats().activePairs);
      },
    });
    new Gauge({
      name: `${PREFIX}names`,
      help:
        "Names with a parked server, a waiting client or an active pair, or reserved.",
      registers,
      collect() {
        this.set(Object.keys(stats().names).length);
      },
    });
    new Counter({
      name: `${PREFIX}accepted_total`,
      help:
        "Connections accepted, by the port they came to (server or client).",
      labelNames: ["port"],
      registers,
      collect() {
        this.reset();
        this.inc({ port: "server" }, self.#accepted.server);
        this.inc({ port: "client" }, self.#accepted.client);
      },
    });
    new Counter({
      name: `${PREFIX}pairings_total`,
      help: "Pairs made since start.",
      registers,
      collect() {
        this.reset();
        this.inc(stats().pairings);
      },
    });
    new Counter({
      name: `${PREFIX}refusals_total`,
      help:
        "Connections refused since start, by code (the v2 protocol's error codes).",
      labelNames: ["code"],
      registers,
      collect() {
        const by = stats().refusalsByCode;
        this.reset();
        for (const code of REFUSAL_CODES) this.inc({ code }, by[code] ?? 0);
      },
    });
    new Counter({
      name: `${PREFIX}bytes_total`,
      help:
        "Application bytes relayed since start, by direction (client_to_server, server_to_client); live pairs included.",
      labelNames: ["direction"],
      registers,
      collect() {
        const { bytes } = stats();
        this.reset();
        this.inc({ direction: "client_to_server" }, bytes.clientToServer);
        this.inc({ direction: "server_to_client" }, bytes.serverToClient);
      },
    });
    const perName = (
      key: keyof NameCounts,
      name: string,
      help: string,
    ) =>
      new Gauge({
        name: `${PREFIX}${name}`,
        help:
          `${help} per name: the ${TOP_NAMES} names with the most connections, the rest summed as name="${OTHER}".`,
        labelNames: ["name"],
        registers,
        collect() {
          const { top, other } = topNames(stats().names);
          this.reset();
          for (const [name, c] of top) this.set({ name }, c[key]);
          if (other) this.set({ name: OTHER }, other[key]);
        },
      });
    perName("parked", "name_parked", "Parked server connections");
    perName("waiting", "name_waiting", "Clients waiting for a server");
    perName("active", "name_active_pairs", "Active pairs");

    const pairDuration = new Histogram({
      name: `${PREFIX}pair_duration_seconds`,
      help: "How long pairs lasted, from pairing to the close of both sides.",
      buckets: [0.01, 0.1, 1, 10, 60, 300, 1800, 3600, 21600, 86400],
      registers,
    });
    const handshake = new Histogram({
      name: `${PREFIX}handshake_duration_seconds`,
      help:
        "How long handshakes took, from accept to parked, waiting or paired.",
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10],
      registers,
    });
    this.unauthorized = new Counter({
      name: `${PREFIX}admin_unauthorized_total`,
      help: "Admin requests refused for a missing or wrong token.",
      registers,
    });

    if (relay.cluster) {
      clusterMetrics(
        registers,
        () => this.#cluster!,
        () => this.#stats.pairings,
        { top: TOP_NAMES, other: OTHER },
      );
    }

    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    for (const name of DROPPED) this.registry.removeSingleMetric(PREFIX + name);

    this.#subscription = relay.events.on((e) => {
      switch (e.type) {
        case "accepted":
          this.#accepted[e.port]++;
          return;
        case "handshake":
          handshake.observe(e.ms / 1000);
          return;
        case "pairEnded":
          pairDuration.observe(e.ms / 1000);
      }
    });
  }

  /** The metrics in Prometheus' text format. */
  async metrics(): Promise<string> {
    this.#cluster = await this.#relay.cluster?.status();
    this.#stats = this.#relay.stats();
    return await this.registry.metrics();
  }

  /** The content type of {@linkcode RelayMetrics.metrics}. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Stops listening to the relay's events. */
  [Symbol.dispose](): void {
    this.#subscription[Symbol.dispose]();
  }
}
