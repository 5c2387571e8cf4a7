/**
 * The benchmark behind `deno task bench`: runs the independent C load driver
 * (`../shared/bench/relaybench.c`) against each peer with the same settings and
 * prints one Markdown table.
 *
 * ```sh
 * deno task bench                       # every peer, default sizes, one run each
 * deno task bench --runs 3               # the README's table: medians of 3 runs
 * deno task bench --peers project,socat --bytes 500000000 --pairs 2000
 * ```
 *
 * Peers: `direct` (no relay: the floor), `epoll-c` (`peers/epoll_relay.c`,
 * a bare single-threaded epoll relay in C: what any relay reaches here),
 * `socat` (pairs once: throughput and round trips only), `node` and
 * `naive-deno` (the afternoon relays of `../shared/bench/peers/`), `project`
 * (this relay as `deno run -A relay.ts` starts it), `project-lean` (this
 * relay as `deno task relay` and the compiled binary run it, with
 * `--v8-flags=--optimize-for-size`) and `project-streams` (this relay with
 * `--data-path streams`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { idleKbPerPair } from "./_hold.ts";

const root = new URL("..", import.meta.url).pathname;
const shared = new URL("../../shared/bench/", import.meta.url).pathname;

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    peers: {
      type: "string",
      default:
        "direct,epoll-c,socat,node,naive-deno,project,project-lean,project-streams",
    },
    bytes: { type: "string", default: "1000000000" },
    pings: { type: "string", default: "10000" },
    runs: { type: "string", default: "1" },
    pairings: { type: "string", default: "3000" },
    pairs: { type: "string", default: "5000" },
    "max-pairs": { type: "string", default: "9000" },
    help: { type: "boolean", default: false },
  },
});
if (flags.help) {
  console.log(
    "deno task bench [--peers a,b] [--runs N] [--bytes N] [--pings N] [--pairings N] [--pairs N] [--max-pairs N]",
  );
  Deno.exit(0);
}

async function run(
  cmd: string,
  args: string[],
  options: Deno.CommandOptions = {},
): Promise<{ code: number; out: string }> {
  const out = await new Deno.Command(cmd, {
    args,
    stderr: "inherit",
    ...options,
  })
    .output();
  return { code: out.code, out: new TextDecoder().decode(out.stdout) };
}

async function has(cmd: string): Promise<boolean> {
  return (await run("sh", ["-c", `command -v ${cmd}`]).catch(() => ({
    code: 1,
  })))
    .code === 0;
}

async function need(cmd: string, pkg: string): Promise<boolean> {
  if (await has(cmd)) return true;
  if (Deno.uid?.() === 0) {
    console.error(`bench: installing ${pkg} (apt-get)`);
    await run("sh", [
      "-c",
      `apt-get update -qq && apt-get install -y -qq ${pkg}`,
    ], {
      stdout: "null",
    });
    if (await has(cmd)) return true;
  }
  console.error(`bench: ${cmd} is missing: apt-get install ${pkg}`);
  return false;
}

if (!(await need("gcc", "gcc"))) Deno.exit(2);
try {
  Deno.statSync(`${shared}relaybench.c`);
} catch {
  console.error(
    `bench: ${shared}relaybench.c not found (the shared/ folder beside the project)`,
  );
  Deno.exit(2);
}
const driver = await Deno.makeTempFile({ prefix: "relaybench-" });
const floor = await Deno.makeTempFile({ prefix: "epoll_relay-" });
if (
  (await run("gcc", ["-O2", "-pthread", "-o", driver, `${shared}relaybench.c`]))
    .code ||
  (await run("gcc", ["-O2", "-o", floor, `${root}bench/peers/epoll_relay.c`]))
    .code
) {
  Deno.exit(2);
}

const SP = 18110, CP = 19110;
const deno = Deno.execPath();
/** `deno run` of this relay on the bench's ports, as a user runs it. */
function relayArgs(denoFlags: string[] = [], flags: string[] = []): string[] {
  return [
    "run",
    "-A",
    ...denoFlags,
    `${root}relay.ts`,
    "--host",
    "127.0.0.1",
    "--client-port",
    `${CP}`,
    "--server-port",
    `${SP}`,
    ...flags,
  ];
}

const peerCommands: Record<string, [string, string[], string] | null> = {
  direct: null,
  "epoll-c": [floor, [`${CP}`, `${SP}`], "seed"],
  socat: ["socat", [
    "-b",
    "262144",
    `TCP-LISTEN:${SP},bind=127.0.0.1,reuseaddr`,
    `TCP-LISTEN:${CP},bind=127.0.0.1,reuseaddr`,
  ], "raw"],
  node: ["node", [`${shared}peers/node_relay.mjs`, `${CP}`, `${SP}`], "seed"],
  "naive-deno": [deno, [
    "run",
    "-A",
    `${shared}peers/naive_deno_relay.ts`,
    `${CP}`,
    `${SP}`,
  ], "seed"],
  project: [deno, relayArgs(), "seed"],
  "project-lean": [deno, relayArgs(["--v8-flags=--optimize-for-size"]), "seed"],
  "project-streams": [deno, relayArgs([], ["--data-path", "streams"]), "seed"],
};

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  throw new Error(`peer did not listen on ${port}`);
}

/** Starts `peer` (none for `direct`) once it listens. */
async function startPeer(peer: string): Promise<Deno.ChildProcess | undefined> {
  const spec = peerCommands[peer];
  if (!spec) return undefined;
  const child = new Deno.Command(spec[0], {
    args: spec[1],
    stdout: "null",
    stderr: "null",
  }).spawn();
  // socat pairs on its first connection: no probing, just a pause
  if (peer === "socat") await new Promise((r) => setTimeout(r, 300));
  else await waitForPort(CP);
  return child;
}

async function stopPeer(child?: Deno.ChildProcess): Promise<void> {
  if (!child) return;
  try {
    child.kill("SIGTERM");
  } catch { /* gone */ }
  await child.status;
}

/** Runs one driver mode against a fresh peer process; returns its key=value line. */
async function measure(
  peer: string,
  mode: string,
  args: string[],
): Promise<Record<string, string>> {
  const child = await startPeer(peer);
  const base = [
    "--client-port",
    `${CP}`,
    "--server-port",
    `${SP}`,
    "--proto",
    peerCommands[peer]?.[2] ?? "direct",
    "--name",
    "bench",
  ];
  const extra = mode === "concurrent" && child ? ["--pid", `${child.pid}`] : [];
  // A peer that stops reading (the Node relay both ways) would hang the driver.
  const { out } = await run("timeout", [
    mode === "concurrent" ? "300" : "30",
    driver,
    mode,
    ...base,
    ...args,
    ...extra,
  ]);
  let later: string | undefined;
  if (child && mode === "concurrent") {
    // the driver reads RSS 0.5 s after closing; a relay may give memory back later
    await new Promise((r) => setTimeout(r, 1000));
    later = /VmRSS:\s+(\d+)/.exec(
      await Deno.readTextFile(`/proc/${child.pid}/status`).catch(() => ""),
    )?.[1];
  }
  await stopPeer(child);
  const line = out.trim().split("\n").pop() || "error=stalled";
  console.error(
    `  ${peer} ${mode}: ${line}${later ? ` rss_later_kb=${later}` : ""}`,
  );
  return {
    ...Object.fromEntries(line.split(" ").map((kv) => kv.split("="))),
    ...(later ? { rss_later_kb: later } : {}),
  };
}

/** KB of RSS per pair after `flags.pairs` pairs idled a second (bench/_hold.ts). */
async function idle(peer: string): Promise<string> {
  const child = await startPeer(peer);
  if (!child) return "—";
  const kb = await idleKbPerPair(child.pid, SP, CP, Number(flags.pairs));
  await stopPeer(child);
  console.error(`  ${peer} idle: ${kb} KB per pair after 1 s`);
  return kb;
}

const peers = flags.peers.split(",").filter((p) => {
  if (!(p in peerCommands)) {
    console.error(`bench: unknown peer ${p}`);
    Deno.exit(2);
  }
  return true;
});
if (peers.includes("socat") && !(await need("socat", "socat"))) {
  peers.splice(peers.indexOf("socat"), 1);
}
if (peers.includes("node") && !(await has("node"))) {
  peers.splice(peers.indexOf("node"), 1);
}

/** The run with the median `key` of `--runs` runs (loopback figures vary). */
async function median(
  peer: string,
  mode: string,
  args: string[],
  key: string,
): Promise<Record<string, string>> {
  const runs: Record<string, string>[] = [];
  for (let i = 0; i < Number(flags.runs); i++) {
    runs.push(await measure(peer, mode, args));
  }
  runs.sort((a, b) => Number(a[key] ?? 0) - Number(b[key] ?? 0));
  return runs[runs.length >> 1];
}

/** A throughput cell: MB/s, or what went wrong. */
function throughput(r: Record<string, string>): string {
  if (r.error) return r.error;
  if (r.lost && r.lost !== "0") return `${r.MBps} (lost ${r.lost} B)`;
  return r.MBps ?? "—";
}

const rows: string[][] = [];
for (const peer of peers) {
  const pairs = peer !== "socat";
  const one = await median(
    peer,
    "throughput",
    ["--bytes", flags.bytes],
    "MBps",
  );
  const both = await median(peer, "throughput", [
    "--bytes",
    flags.bytes,
    "--dir",
    "both",
  ], "MBps");
  const ping = await median(
    peer,
    "pingpong",
    ["--iters", flags.pings],
    "p50_us",
  );
  const pairing = pairs
    ? await median(peer, "pairing", ["--count", flags.pairings], "per_sec")
    : {};
  const conc = pairs
    ? await measure(peer, "concurrent", ["--pairs", flags.pairs, "--msgs", "5"])
    : {};
  const idled = pairs ? await idle(peer) : "—";
  const max = pairs
    ? await measure(peer, "concurrent", [
      "--pairs",
      flags["max-pairs"],
      "--msgs",
      "1",
    ])
    : {};
  const kb = (a?: string, b?: string, n?: string) =>
    a && b && Number(a) > 0
      ? ((Number(b) - Number(a)) / Number(n)).toFixed(1)
      : "—";
  rows.push([
    peer,
    throughput(one),
    throughput(both),
    ping.p50_us ?? "—",
    ping.p99_us ?? "—",
    pairing.per_sec ?? "—",
    kb(conc.rss0_kb, conc.rss_open_kb, conc.pairs),
    kb(conc.rss0_kb, conc.rss_peak_kb, conc.pairs),
    idled,
    conc.rss_after_kb && Number(conc.rss0_kb) > 0
      ? [conc.rss0_kb, conc.rss_after_kb, conc.rss_later_kb ?? ""]
        .map((kb) => kb ? (Number(kb) / 1024).toFixed(0) : "—").join(" → ")
      : "—",
    max.error
      ? `failed (${max.error})`
      : max.bad === "0"
      ? `${max.pairs} ok`
      : max.pairs
      ? `${max.pairs}, ${max.bad} bad`
      : "—",
  ]);
}
await Deno.remove(driver);
await Deno.remove(floor);

const head = [
  "peer",
  "MB/s one way",
  "MB/s both ways",
  "RTT p50 µs",
  "RTT p99 µs",
  "pairings/s",
  `KB/idle pair (${flags.pairs})`,
  "KB/pair after msgs",
  "KB/pair idle 1 s",
  "RSS MB start → 0.5 s → 1.5 s after close",
  `${flags["max-pairs"]} pairs at once`,
];
console.log(`| ${head.join(" | ")} |`);
console.log(`|${head.map(() => "---").join("|")}|`);
for (const r of rows) console.log(`| ${r.join(" | ")} |`);
console.log(
  `\nmedian of ${flags.runs} runs for throughput, round trips and pairings; ` +
    `bytes=${flags.bytes} pings=${flags.pings} pairings=${flags.pairings} pairs=${flags.pairs}; ` +
    `${Deno.build.os} ${navigator.hardwareConcurrency} cores, deno ${Deno.version.deno}`,
);
