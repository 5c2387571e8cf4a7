/**
 * The benchmark behind `deno task bench`: runs the independent C load driver
 * (`../shared/bench/relaybench.c`) and the burst benchmark against each peer
 * with the same settings, peers interleaved over rounds (A B C, B C A, …) so
 * that the machine's drift does not land on one peer, and prints one Markdown
 * report: medians per figure per peer, ratios to the floor, the targets met
 * or missed. Progress goes to stderr.
 *
 * ```sh
 * deno task bench                      # the README's table (3 rounds)
 * deno task bench --rounds 1 --peers epoll-c,project --modes oneway,rtt
 * deno task bench --peers project,socat --bytes 200000000 --pairs 1000
 * ```
 *
 * Peers and modes: `--help` lists them (`_peers.ts`, `_modes.ts`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { build, has, need } from "./_driver.ts";
import {
  DEFAULT_MODES,
  measure,
  MODES,
  type Sample,
  type Settings,
} from "./_modes.ts";
import { DEFAULT_PEERS, PEERS } from "./_peers.ts";
import { report, type Results } from "./_report.ts";

const NUMBERS = {
  bytes: ["1000000000", "bytes each way in throughput"],
  pings: ["10000", "echoes for round trips"],
  pairings: ["3000", "pairings (sequential, and in parallel all together)"],
  parallel: ["16", "threads of the parallel pairings"],
  pairs: ["5000", "pairs held for memory"],
  "max-pairs": ["9000", "pairs at once (mode max)"],
  clients: ["200", "clients of the burst"],
  delay: ["20", "ms added each way in the burst"],
  pool: ["2", "server.ts --pool in the burst"],
  "max-pool": ["64", "server.ts --max-pool in the burst's on-demand row"],
} as const;

function usage(): string {
  const list = (r: Record<string, { about: string }>, defaults: string[]) =>
    Object.entries(r).map(([k, v]) =>
      `  ${k.padEnd(16)}${v.about}${
        defaults.includes(k) ? "" : " (not default)"
      }`
    ).join("\n");
  return `Usage: deno task bench [--rounds N] [--peers a,b] [--modes x,y] [settings]

  --rounds N, --runs N   rounds of every peer and mode (default 3); figures are medians
  --peers LIST           default ${DEFAULT_PEERS.join(",")}
  --modes LIST           default ${DEFAULT_MODES.join(",")}
${
    Object.entries(NUMBERS).map(([k, [d, about]]) =>
      `  --${k} N`.padEnd(25) + `${about} (default ${d})`
    ).join("\n")
  }

Peers:
${list(PEERS, DEFAULT_PEERS)}

Modes:
${list(MODES, DEFAULT_MODES)}`;
}

function fail(message: string): never {
  console.error(`bench: ${message}\n\n${usage()}`);
  Deno.exit(2);
}

function parse(): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({
      args: Deno.args,
      options: {
        rounds: { type: "string" },
        runs: { type: "string" },
        peers: { type: "string", default: DEFAULT_PEERS.join(",") },
        modes: { type: "string", default: DEFAULT_MODES.join(",") },
        help: { type: "boolean", short: "h", default: false },
        ...Object.fromEntries(
          Object.entries(NUMBERS).map(([k, [d]]) => [
            k,
            { type: "string" as const, default: d },
          ]),
        ),
      },
    }).values;
  } catch (e) {
    fail((e as Error).message);
  }
}
const flags = parse();
if (flags.help) {
  console.log(usage());
  Deno.exit(0);
}

function count(name: string, min = 1, given?: string): number {
  const text = given ?? String(flags[name]);
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) {
    fail(`--${name} takes a whole number from ${min}, not "${text}"`);
  }
  return n;
}

const rounds = count("rounds", 1, String(flags.rounds ?? flags.runs ?? 3));
const settings: Settings = {
  bytes: count("bytes"),
  pings: count("pings"),
  pairings: count("pairings"),
  parallel: count("parallel"),
  pairs: count("pairs"),
  maxPairs: count("max-pairs"),
  clients: count("clients"),
  delay: count("delay", 0),
  pool: count("pool"),
  maxPool: count("max-pool"),
};
const pick = (list: string, known: Record<string, unknown>, what: string) =>
  [...new Set(list.split(",").map((x) => x.trim()).filter(Boolean))].map(
    (x) => x in known ? x : fail(`unknown ${what} "${x}"`),
  );
const peers = pick(String(flags.peers), PEERS, "peer");
const modes = pick(String(flags.modes), MODES, "mode");
if (peers.includes("socat") && !(await need("socat", "socat"))) {
  peers.splice(peers.indexOf("socat"), 1);
}
if (
  peers.includes("cluster") && !(await need("redis-server", "redis-server"))
) {
  peers.splice(peers.indexOf("cluster"), 1);
}
if (peers.includes("node") && !(await has("node"))) {
  console.error("bench: node is missing: leaving its peer out");
  peers.splice(peers.indexOf("node"), 1);
}

const bins = await build().catch((e) => {
  console.error(`bench: ${(e as Error).message}`);
  Deno.exit(2);
});
const results: Results = new Map(peers.map((p) => [p, []]));
const started = performance.now();
const elapsed = () => {
  const s = Math.round((performance.now() - started) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
};

for (let round = 0; round < rounds; round++) {
  // A B C, then B C A, …: no peer always first or last
  const order = peers.map((_, i) => peers[(i + round) % peers.length]);
  const samples = new Map<string, Sample>(order.map((p) => [p, {}]));
  for (const mode of modes) {
    for (const peer of order) {
      if (!MODES[mode].applies(PEERS[peer])) continue;
      const got = await measure(MODES[mode], PEERS[peer], bins, settings);
      Object.assign(samples.get(peer)!, got);
      const shown = Object.entries(got).map(([k, v]) =>
        `${k}=${typeof v === "number" ? +v.toFixed(2) : JSON.stringify(v)}`
      ).join(" ");
      console.error(
        `[${elapsed()} round ${round + 1}/${rounds}] ${mode} ${peer}: ${shown}`,
      );
    }
  }
  for (const [peer, sample] of samples) results.get(peer)!.push(sample);
}
await bins.remove();

const figuresOf = Object.fromEntries(
  Object.entries(MODES).map(([k, m]) => [k, m.figures]),
);
console.log(report(results, peers, modes, figuresOf, settings));
const sizes = Object.entries(NUMBERS).map(([k]) => `${k}=${flags[k]}`).join(
  " ",
);
console.log(
  `\nMedians of ${rounds} round${rounds > 1 ? "s" : ""}, peers interleaved; ` +
    `${sizes}; ${Deno.build.os} ${navigator.hardwareConcurrency} cores, ` +
    `deno ${Deno.version.deno}; ${elapsed()} (m:ss) in all.`,
);
