/**
 * The bench's report: medians over rounds per figure per peer, ratios to the
 * floor, the targets marked met or missed, as Markdown.
 *
 * A figure's floor is the best median among its floor peers (the better of
 * socat and epoll-c for throughput; epoll-c for round trips and pairings).
 * A round that failed counts as the worst value in the median, and the cell
 * says how many failed and why.
 *
 * @module
 */

import type { Sample, Settings } from "./_modes.ts";

/** How a figure is shown and compared. */
export interface Figure {
  /** Column head. */
  head: string;
  /** Which way is better. */
  better: "higher" | "lower";
  /** Digits after the point. */
  digits: number;
  /** Peers whose best median is this figure's floor (ratios are to it). */
  floor?: string[];
}

/** The figures of the main table, by the key their mode gives them. */
export function mainFigures(s: Settings): Record<string, Figure> {
  const tp = ["socat", "epoll-c"];
  return {
    oneway: { head: "MB/s one way", better: "higher", digits: 0, floor: tp },
    both: { head: "MB/s both ways", better: "higher", digits: 0, floor: tp },
    rtt50: {
      head: "RTT p50 µs",
      better: "lower",
      digits: 1,
      floor: ["epoll-c"],
    },
    rtt99: { head: "RTT p99 µs", better: "lower", digits: 1 },
    pairing: {
      head: "pairings/s",
      better: "higher",
      digits: 0,
      floor: ["epoll-c"],
    },
    parallel: {
      head: `pairings/s, ${s.parallel} parallel`,
      better: "higher",
      digits: 0,
      floor: ["epoll-c"],
    },
    idleKb: {
      head: `KB/idle pair (${s.pairs}, 1 s)`,
      better: "lower",
      digits: 1,
    },
    openKb: { head: `KB/pair open (${s.pairs})`, better: "lower", digits: 1 },
    msgKb: { head: "KB/pair after 5 echoes", better: "lower", digits: 1 },
    backMb: { head: "RSS MB 1.5 s after close", better: "lower", digits: 0 },
    maxOk: { head: `${s.maxPairs} pairs at once`, better: "higher", digits: 0 },
  };
}

const BURST: Record<string, Figure> = {
  served: { head: "served", better: "higher", digits: 0 },
  median: { head: "median s", better: "lower", digits: 2 },
  last: { head: "last s", better: "lower", digits: 2 },
};

/** The failover mode's figures (the cluster table). */
const FAILOVER: Record<string, Figure> = {
  failover: { head: "failover s", better: "lower", digits: 2 },
  reparked: { head: "parked on b s", better: "lower", digits: 2 },
  keysGone: { head: "a's keys gone s", better: "lower", digits: 2 },
  refused: { head: "refused before", better: "lower", digits: 0 },
};

/** How `key` is shown, whichever table it is in. */
function figureOf(key: string, s: Settings): Figure {
  return mainFigures(s)[key] ?? FAILOVER[key] ?? BURST[key.split(".")[1]];
}

/** A target of the issue: a figure's value, or its ratio to a reference, bounded. */
export interface Target {
  /** What is asked, as printed. */
  text: string;
  figure: string;
  /** The peers it is checked for (those in the run). */
  peers: string[];
  /** `"floor"` or a peer: the bound is on value / reference. Absent: on the value. */
  ref?: string;
  min?: number;
  max?: number;
}

/** The relay as users start it, and as `deno task relay` does. */
const PROJECT = ["project", "project-lean"];

/**
 * The targets (issue 11). A peer added later brings its own: the `--admin`
 * peer's (issue 9) and the cluster's (issue 10) are against `project`.
 */
export function targets(s: Settings): Target[] {
  return [
    {
      text: "one way ≥ 1.1× the better of socat and epoll-c",
      figure: "oneway",
      peers: PROJECT,
      ref: "floor",
      min: 1.1,
    },
    {
      text: "both ways ≥ 1.1× the better of socat and epoll-c",
      figure: "both",
      peers: PROJECT,
      ref: "floor",
      min: 1.1,
    },
    {
      text: "RTT p50 ≤ 1.25× epoll-c",
      figure: "rtt50",
      peers: PROJECT,
      ref: "floor",
      max: 1.25,
    },
    {
      text: "sequential pairings ≥ 0.75× epoll-c",
      figure: "pairing",
      peers: PROJECT,
      ref: "floor",
      min: 0.75,
    },
    {
      text: `${s.parallel} parallel pairings ≥ 0.6× epoll-c`,
      figure: "parallel",
      peers: PROJECT,
      ref: "floor",
      min: 0.6,
    },
    {
      text: `KB per idle pair at ${s.pairs} pairs ≤ 12`,
      figure: "idleKb",
      peers: ["project"],
      max: 12,
    },
    {
      text: "KB per idle pair below plain `deno run`",
      figure: "idleKb",
      peers: ["project-lean"],
      ref: "project",
      max: 1,
    },
    {
      text: `burst on demand: ${s.clients} of ${s.clients} served`,
      figure: "demand.served",
      peers: ["project"],
      min: s.clients,
    },
    {
      text: "burst on demand: the last served within 1.5 s",
      figure: "demand.last",
      peers: ["project"],
      max: 1.5,
    },
    ...adminTargets(s),
    ...clusterTargets(s),
  ];
}

/** Issue 9's: the admin server (scraped every second) costs no pairings/s beyond noise. */
function adminTargets(s: Settings): Target[] {
  const within = (text: string, figure: string): Target => ({
    text: `${text} with --admin ≥ 0.9× without (within noise)`,
    figure,
    peers: ["project-admin"],
    ref: "project",
    min: 0.9,
  });
  return [
    within("sequential pairings", "pairing"),
    within(`${s.parallel} parallel pairings`, "parallel"),
  ];
}

/** Issue 10's targets: the cluster against the single relay of the same run. */
function clusterTargets(s: Settings): Target[] {
  const against = (text: string, figure: string, min: number): Target => ({
    text: `cluster: ${text} ≥ ${min}× the single relay`,
    figure,
    peers: ["cluster"],
    ref: "project",
    min,
  });
  return [
    against("one way across nodes", "oneway", 0.6),
    against("both ways across nodes", "both", 0.6),
    against("sequential pairings across nodes", "pairing", 0.5),
    against(`${s.parallel} parallel pairings across nodes`, "parallel", 0.5),
    {
      text: "cluster: kill -9 of a node, a client on another served ≤ 5 s",
      figure: "failover",
      peers: ["cluster"],
      max: 5,
    },
    {
      text: "cluster: the killed node's keys gone from Redis ≤ 5 s",
      figure: "keysGone",
      peers: ["cluster"],
      max: 5,
    },
  ];
}

/** A median over rounds, and the rounds that failed. */
interface Cell {
  value?: number;
  failed: number;
  of: number;
  why?: string;
}

/** Every sample of a run: peer → rounds' samples. */
export type Results = Map<string, Sample[]>;

function cell(samples: Sample[], key: string, f: Figure): Cell | undefined {
  const got = samples.map((s) => s[key]).filter((v) => v !== undefined);
  if (!got.length) return undefined;
  const worst = f.better === "higher" ? -Infinity : Infinity;
  const nums = got.map((v) => typeof v === "number" ? v : worst);
  // worst first, so that failures sit at one end
  nums.sort((a, b) => f.better === "higher" ? a - b : b - a);
  const mid = nums.length >> 1;
  const median = nums.length % 2 ? nums[mid] : (nums[mid - 1] + nums[mid]) / 2;
  const whys = got.filter((v) => typeof v === "string") as string[];
  return {
    value: Number.isFinite(median) ? median : undefined,
    failed: whys.length,
    of: got.length,
    why: whys.length ? [...new Set(whys)].join("; ") : undefined,
  };
}

function fmt(n: number, digits: number): string {
  return n.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function show(c: Cell | undefined, f: Figure, ratio?: number): string {
  if (!c) return "—";
  let text = c.value === undefined ? c.why! : fmt(c.value, f.digits);
  if (c.value !== undefined && ratio !== undefined) {
    text += ` (${ratio.toFixed(2)}×)`;
  }
  if (c.value !== undefined && c.failed) {
    text += ` [${c.failed} of ${c.of} failed: ${c.why}]`;
  }
  return text;
}

/** The best median among `peers` for `key`. */
function floorOf(
  results: Results,
  key: string,
  f: Figure,
  peers: string[],
): number | undefined {
  const values = peers.flatMap((p) => {
    const v = cell(results.get(p) ?? [], key, f)?.value;
    return v === undefined ? [] : [v];
  });
  if (!values.length) return undefined;
  return f.better === "higher" ? Math.max(...values) : Math.min(...values);
}

function table(head: string[], rows: string[][]): string {
  return [
    `| ${head.join(" | ")} |`,
    `|${head.map(() => "---").join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");
}

/** The whole report as Markdown. */
export function report(
  results: Results,
  peers: string[],
  modes: string[],
  figuresOf: Record<string, string[]>,
  s: Settings,
): string {
  const figures = mainFigures(s);
  const keys = modes.flatMap((m) => figuresOf[m] ?? [])
    .filter((k) => k in figures);
  const out: string[] = [];
  // the cluster has its own table, beside the single relay
  const mainPeers = peers.filter((p) => p !== "cluster");
  if (keys.length) {
    const rows = mainPeers.map((peer) => [
      peer,
      ...keys.map((k) => {
        const f = figures[k];
        const c = cell(results.get(peer) ?? [], k, f);
        const floor = f.floor && !f.floor.includes(peer)
          ? floorOf(results, k, f, f.floor)
          : undefined;
        const ratio = c?.value !== undefined && floor
          ? c.value / floor
          : undefined;
        return show(c, f, ratio);
      }),
    ]);
    out.push(table(["peer", ...keys.map((k) => figures[k].head)], rows));
  }
  if (modes.includes("burst")) {
    const rows: string[][] = [];
    for (const peer of peers) {
      const samples = results.get(peer) ?? [];
      for (const kind of ["fixed", "demand"]) {
        if (!samples.some((x) => x[`${kind}.served`] !== undefined)) continue;
        const pool = kind === "fixed"
          ? `--pool ${s.pool} (fixed)`
          : `--pool ${s.pool} --max-pool ${s.maxPool}`;
        const cells = Object.entries(BURST).map(([k, f]) =>
          show(cell(samples, `${kind}.${k}`, f), f)
        );
        cells[0] = cells[0].replace(/^(\d+)/, `$1/${s.clients}`);
        // one reason for the whole row (n/a, failed) is said once
        for (let i = 1; i < cells.length; i++) {
          if (cells[i] === cells[0]) cells[i] = "—";
        }
        const why = samples.map((x) => x[`${kind}.failures`]).filter(Boolean);
        rows.push([peer, pool, ...cells, why.join("; ") || "—"]);
      }
    }
    out.push(
      `Burst: ${s.clients} clients at once for one name; server.ts reaches the relay ` +
        `(--wait 5) through ${s.delay} ms each way; times from the crowd's start until paired.`,
      table([
        "peer",
        "server",
        ...Object.values(BURST).map((f) => f.head),
        "not served (all rounds)",
      ], rows),
    );
  }
  if (peers.includes("cluster")) out.push(...clusterTable(results, modes, s));
  const checks = targets(s).flatMap((t) =>
    t.peers.filter((p) => peers.includes(p)).map((p) => check(results, t, p, s))
  ).filter((r): r is string[] => r !== undefined);
  if (checks.length) {
    out.push(
      "Targets:",
      table(["target", "peer", "measured", ""], checks),
    );
  }
  return out.join("\n\n");
}

function check(
  results: Results,
  t: Target,
  peer: string,
  s: Settings,
): string[] | undefined {
  const f = figureOf(t.figure, s);
  const c = cell(results.get(peer) ?? [], t.figure, f);
  if (!c) return undefined;
  if (c.value === undefined) {
    const na = c.why?.startsWith("n/a");
    return [t.text, peer, c.why ?? "—", na ? "n/a" : "**missed**"];
  }
  let value = c.value, shown = fmt(c.value, f.digits);
  if (t.figure.endsWith(".served")) shown += `/${s.clients}`;
  if (t.ref) {
    const ref = t.ref === "floor"
      ? floorOf(results, t.figure, f, f.floor ?? [])
      : cell(results.get(t.ref) ?? [], t.figure, f)?.value;
    if (!ref) return [t.text, peer, `${shown} (no ${t.ref} figure)`, "—"];
    value = c.value / ref;
    shown = `${value.toFixed(2)}× (${fmt(c.value, f.digits)} / ${
      fmt(ref, f.digits)
    })`;
  }
  const met = (t.min === undefined || value >= t.min) &&
    (t.max === undefined || value <= t.max);
  return [t.text, peer, shown, met ? "met" : "**missed**"];
}

/** The cluster beside the single relay (`project`), ratios to it; then a note. */
function clusterTable(
  results: Results,
  modes: string[],
  s: Settings,
): string[] {
  const main = [
    "oneway",
    "both",
    "rtt50",
    "rtt99",
    "pairing",
    "parallel",
    "idleKb",
    "maxOk",
  ];
  const keys = [
    ...main.filter((k) =>
      (results.get("cluster") ?? []).some((x) => x[k] !== undefined)
    ),
    ...(modes.includes("failover") ? Object.keys(FAILOVER) : []),
  ];
  if (!keys.length) return [];
  const rows = ["project", "cluster"].filter((p) => results.has(p)).map((
    peer,
  ) => [
    peer,
    ...keys.map((k) => {
      const f = figureOf(k, s);
      const c = cell(results.get(peer) ?? [], k, f);
      if (peer === "project" && k in FAILOVER) return "—";
      const ref = peer === "cluster" && !(k in FAILOVER)
        ? cell(results.get("project") ?? [], k, f)?.value
        : undefined;
      return show(
        c,
        f,
        c?.value !== undefined && ref ? c.value / ref : undefined,
      );
    }),
  ]);
  const notes = [
    "Cluster against the single relay, same run (ratios to `project`): " +
    "2 `relay.ts --cluster` nodes and a `redis-server`, the driver's servers " +
    "on node a and its clients on node b, so every pair crosses nodes; " +
    "memory is both relays' RSS.",
    table(["peer", ...keys.map((k) => figureOf(k, s).head)], rows),
  ];
  if (modes.includes("failover")) {
    notes.push(
      "Failover: 3 nodes; `server.ts --relay a,b --pool 2` (its pool " +
        "parked at both); `kill -9` of a; seconds from " +
        "the kill until a client on c is served (paired and echoed), until " +
        "b's count for the name is in Redis, and until a's lease and counts " +
        "are gone from Redis (lease 3 s); refused: the client's attempts " +
        "refused before it was served.",
    );
  }
  return notes;
}
