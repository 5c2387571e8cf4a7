/**
 * The cluster's metrics, for a relay that is a node of one: the nodes (up,
 * lease age), where each name is parked per node (bounded), and local
 * against forwarded pairings. Read from `relay.cluster.status()` once per
 * scrape.
 *
 * @module
 */

import { Counter, Gauge, type Registry } from "prom-client";
import type { ClusterStatus } from "../relay.ts";

const PREFIX = "tcp_relay_cluster_";

/** How per-name series are bounded: the `top` names, the rest as `other`. */
export interface Bound {
  top: number;
  other: string;
}

/**
 * The `top` names with most servers parked (ties by name) and the rest
 * summed as `other` (a name called so among them).
 */
export function topParked(
  parked: Record<string, number>,
  { top, other }: Bound,
): [string, number][] {
  const all = Object.entries(parked).filter(([name]) => name !== other);
  const given = parked[other];
  if (all.length <= top && given === undefined) return all;
  all.sort(([a, x], [b, y]) => y - x || (a < b ? -1 : 1));
  const rest = all.slice(top).reduce((sum, [, n]) => sum + n, given ?? 0);
  return [...all.slice(0, top), [other, rest]];
}

/**
 * Registers the cluster's metrics in `registers`; `status()` is the
 * scrape's status and `pairings()` the relay's pairings since start.
 */
export function clusterMetrics(
  registers: Registry[],
  status: () => ClusterStatus,
  pairings: () => number,
  bound: Bound,
): void {
  new Gauge({
    name: `${PREFIX}registered`,
    help:
      "1 while Redis answers this node's lease renewals (it routes across nodes), else 0.",
    registers,
    collect() {
      this.set(status().registered ? 1 : 0);
    },
  });
  new Gauge({
    name: `${PREFIX}node_up`,
    help:
      "Per node of the cluster (this one included): 1 while its lease is live as this node reads it, 0 for 10 minutes after it lapsed.",
    labelNames: ["node"],
    registers,
    collect() {
      this.reset();
      for (const n of status().nodes) this.set({ node: n.node }, n.up ? 1 : 0);
    },
  });
  new Gauge({
    name: `${PREFIX}node_lease_age_seconds`,
    help:
      "Per live node: seconds since it renewed its lease (renewed every second, lapsing after 3).",
    labelNames: ["node"],
    registers,
    collect() {
      this.reset();
      for (const n of status().nodes) {
        if (n.leaseAgeMs !== null) {
          this.set({ node: n.node }, n.leaseAgeMs / 1e3);
        }
      }
    },
  });
  new Gauge({
    name: `${PREFIX}parked`,
    help:
      `Servers parked per node and name (0: reserved, none parked): per node the ${bound.top} names with most, the rest summed as name="${bound.other}".`,
    labelNames: ["node", "name"],
    registers,
    collect() {
      this.reset();
      for (const n of status().nodes) {
        for (const [name, count] of topParked(n.parked, bound)) {
          this.set({ node: n.node, name }, count);
        }
      }
    },
  });
  new Counter({
    name: `${PREFIX}pairings_total`,
    help:
      "Pairs made here since start, by route: local (client and server on this node), forwarded_out (a client here, its server on another node), forwarded_in (a client of another node, its server here).",
    labelNames: ["route"],
    registers,
    collect() {
      const s = status();
      const local = pairings() - s.forwardedIn - s.forwardedOut;
      this.reset();
      this.inc({ route: "local" }, Math.max(0, local));
      this.inc({ route: "forwarded_out" }, s.forwardedOut);
      this.inc({ route: "forwarded_in" }, s.forwardedIn);
    },
  });
}
