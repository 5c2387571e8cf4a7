/**
 * The bench's modes: what each one runs against a peer (a fresh peer
 * process each time) and the figures it yields. A figure's value is a number,
 * or a string saying why there is none (`stalled`, `lost 2968 B`, `n/a …`).
 *
 * Adding a mode is one entry in {@linkcode MODES} (and its figures in
 * `_report.ts`).
 *
 * @module
 */

import { burst, hasMaxPool } from "./_burst.ts";
import { type Binaries, parseLine, rssKb, run, sleep } from "./_driver.ts";
import { failover, FAILOVER_FIGURES } from "./_failover.ts";
import { idleKbPerPair } from "./_hold.ts";
import type { Peer, Running } from "./_peers.ts";

/** One measure's figures. */
export type Sample = Record<string, number | string>;

/** The settings every mode reads (from the command line). */
export interface Settings {
  bytes: number;
  pings: number;
  pairings: number;
  parallel: number;
  pairs: number;
  maxPairs: number;
  clients: number;
  delay: number;
  pool: number;
  maxPool: number;
}

/** One mode of the bench. */
export interface Mode {
  /** One line for `--help`. */
  about: string;
  /** The figures it yields (keys of its samples). */
  figures: string[];
  /** Whether it applies to `peer`. */
  applies(peer: Peer): boolean;
  /** Measures `peer` once. */
  measure(peer: Peer, bins: Binaries, s: Settings): Promise<Sample>;
}

/** Starts `peer`, runs `fn` against it, and stops it. */
async function withPeer<T>(
  peer: Peer,
  bins: Binaries,
  fn: (running: Running | undefined) => Promise<T>,
): Promise<T> {
  const running = await peer.start(bins);
  try {
    return await fn(running);
  } finally {
    await running?.stop();
  }
}

/** Runs the driver's `mode` with `args` against a fresh `peer`; its key=value line. */
function drive(
  peer: Peer,
  bins: Binaries,
  mode: string,
  args: string[],
  limitMs: number,
  after?: (running: Running) => Promise<Record<string, string>>,
): Promise<Record<string, string>> {
  return withPeer(peer, bins, async (running) => {
    const base = [
      "--client-port",
      `${running?.clientPort ?? 0}`,
      "--server-port",
      `${running?.serverPort ?? 0}`,
      "--proto",
      peer.proto,
      "--name",
      "bench",
    ];
    const pid = after && running ? ["--pid", `${running.pids[0]}`] : [];
    const line = parseLine(
      await run(bins.driver, [mode, ...base, ...args, ...pid], limitMs),
    );
    return after && running ? { ...line, ...await after(running) } : line;
  });
}

/** The driver's failure, if its line has one: `stalled`, `lost 2968 B`, `failed 3`. */
function failure(line: Record<string, string>): string | undefined {
  if (line.error) return line.error;
  if (line.lost && line.lost !== "0") return `lost ${line.lost} B`;
  if (line.failed && line.failed !== "0") return `${line.failed} failed`;
  if (line.bad && line.bad !== "0") return `${line.bad} bad`;
  return undefined;
}

/** `key` of the driver's line as a number, or its failure. */
function figure(line: Record<string, string>, key: string): number | string {
  const bad = failure(line);
  if (bad) return bad;
  const n = Number(line[key]);
  return Number.isFinite(n) ? n : `no ${key}`;
}

const seconds = (n: number) => Math.max(30_000, n);

function throughput(dir: "c2s" | "both"): Mode {
  const key = dir === "c2s" ? "oneway" : "both";
  return {
    about: dir === "c2s"
      ? "--bytes client to server (MB/s received)"
      : "--bytes each way at once",
    figures: [key],
    applies: () => true,
    async measure(peer, bins, s) {
      const line = await drive(peer, bins, "throughput", [
        "--bytes",
        `${s.bytes}`,
        "--dir",
        dir,
      ], seconds(s.bytes / 100_000));
      return { [key]: figure(line, "MBps") };
    },
  };
}

const pairs = (peer: Peer) => peer.repeats;

/** Every mode, in the order a round runs them. */
export const MODES: Record<string, Mode> = {
  oneway: throughput("c2s"),
  both: throughput("both"),
  rtt: {
    about: "--pings 1-byte echoes (p50, p99)",
    figures: ["rtt50", "rtt99"],
    applies: () => true,
    async measure(peer, bins, s) {
      const line = await drive(peer, bins, "pingpong", [
        "--iters",
        `${s.pings}`,
      ], seconds(s.pings * 2));
      return { rtt50: figure(line, "p50_us"), rtt99: figure(line, "p99_us") };
    },
  },
  pairing: {
    about: "--pairings sequential register, connect, echo, close",
    figures: ["pairing"],
    applies: pairs,
    async measure(peer, bins, s) {
      const line = await drive(peer, bins, "pairing", [
        "--count",
        `${s.pairings}`,
      ], seconds(s.pairings * 10));
      return { pairing: figure(line, "per_sec") };
    },
  },
  parallel: {
    about: "the same in --parallel threads, each with its own name",
    figures: ["parallel"],
    applies: pairs,
    async measure(peer, bins, s) {
      const line = await drive(peer, bins, "pairing", [
        "--count",
        `${s.pairings}`,
        "--parallel",
        `${s.parallel}`,
      ], seconds(s.pairings * 10));
      return { parallel: figure(line, "per_sec") };
    },
  },
  burst: {
    about:
      "--clients at once for one name, server.ts --pool behind a --delay proxy",
    figures: BURST_FIGURES(),
    applies: (peer) => peer.burst,
    async measure(peer, bins, s) {
      const out: Sample = {};
      const onDemand = await hasMaxPool();
      for (const kind of ["fixed", "demand"] as const) {
        if (kind === "demand" && !onDemand) {
          for (const k of ["served", "median", "last"]) {
            out[`${kind}.${k}`] = "n/a (maxPool not supported)";
          }
          continue;
        }
        try {
          const r = await withPeer(peer, bins, (running) =>
            burst(running!, {
              pool: s.pool,
              // a fixed pool where the server could grow it: --max-pool = --pool
              maxPool: kind === "fixed"
                ? (onDemand ? s.pool : undefined)
                : s.maxPool,
              clients: s.clients,
              delayMs: s.delay,
            }));
          out[`${kind}.served`] = r.served;
          out[`${kind}.median`] = r.served ? r.medianS : "none served";
          out[`${kind}.last`] = r.served ? r.lastS : "none served";
          if (r.failures) out[`${kind}.failures`] = r.failures;
        } catch (e) {
          const why = `failed (${(e as Error).message})`;
          for (const k of ["served", "median", "last"]) {
            out[`${kind}.${k}`] = why;
          }
        }
      }
      return out;
    },
  },
  memory: {
    about: "KB of RSS per pair once --pairs pairs idled 1 s (bench/_hold.ts)",
    figures: ["idleKb"],
    applies: (peer) => peer.repeats && peer.proto === "seed",
    async measure(peer, bins, s) {
      const kb = await withPeer(peer, bins, (running) =>
        idleKbPerPair({
          pids: running!.pids,
          serverPort: running!.serverPort,
          clientPort: running!.clientPort,
          pairs: s.pairs,
        }));
      return { idleKb: kb };
    },
  },
  failover: {
    about:
      "cluster: 3 nodes, a pool parked on a, kill -9 a; s until a client on c is served",
    figures: FAILOVER_FIGURES,
    applies: (peer) => peer.nodes !== undefined,
    measure: (peer) => failover(peer),
  },
  concurrent: {
    about: "driver: --pairs open at once, 5 echoes each; RSS after close",
    figures: ["openKb", "msgKb", "backMb"],
    // the driver reads one process's RSS: not a cluster's
    applies: (peer) => peer.repeats && peer.proto === "seed" && !peer.nodes,
    async measure(peer, bins, s) {
      const line = await drive(
        peer,
        bins,
        "concurrent",
        [
          "--pairs",
          `${s.pairs}`,
          "--msgs",
          "5",
        ],
        300_000,
        async (running) => {
          // the driver reads RSS 0.5 s after closing; a relay may give memory back later
          await sleep(1000);
          return { rss_later_kb: `${rssKb(running.pids[0])}` };
        },
      );
      const per = (k: string) =>
        typeof figure(line, k) === "string"
          ? figure(line, k)
          : (Number(line[k]) - Number(line.rss0_kb)) / Number(line.pairs);
      return {
        openKb: per("rss_open_kb"),
        msgKb: per("rss_peak_kb"),
        backMb: typeof figure(line, "rss_later_kb") === "string"
          ? figure(line, "rss_later_kb")
          : Number(line.rss_later_kb) / 1024,
      };
    },
  },
  max: {
    about: "driver: --max-pairs pairs open at once, one echo each",
    figures: ["maxOk"],
    applies: (peer) => peer.repeats,
    async measure(peer, bins, s) {
      const line = await drive(peer, bins, "concurrent", [
        "--pairs",
        `${s.maxPairs}`,
        "--msgs",
        "1",
      ], 300_000);
      return { maxOk: figure(line, "pairs") };
    },
  },
};

/** The burst's figures: served, median and last, fixed and on demand. */
function BURST_FIGURES(): string[] {
  return ["fixed", "demand"].flatMap((kind) =>
    ["served", "median", "last"].map((k) => `${kind}.${k}`)
  );
}

/** The modes of a plain `deno task bench`. */
export const DEFAULT_MODES = [
  "oneway",
  "both",
  "rtt",
  "pairing",
  "parallel",
  "burst",
  "memory",
  "failover",
];

/** Measures `peer` in `mode`; a failure becomes a note on each of its figures. */
export async function measure(
  mode: Mode,
  peer: Peer,
  bins: Binaries,
  s: Settings,
): Promise<Sample> {
  try {
    return await mode.measure(peer, bins, s);
  } catch (e) {
    const why = `failed (${(e as Error).message})`;
    return Object.fromEntries(mode.figures.map((f) => [f, why]));
  }
}
