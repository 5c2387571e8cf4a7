// The benchmark's report (bench/_report.ts) for the cluster: its own table
// beside the single relay, ratios to it, and issue 10's targets checked.
// No process runs here: the samples are given.

import { ok } from "node:assert/strict";
import { report, type Results } from "../bench/_report.ts";
import { MODES, type Settings } from "../bench/_modes.ts";

const SETTINGS: Settings = {
  bytes: 1,
  pings: 1,
  pairings: 1,
  parallel: 16,
  pairs: 5000,
  maxPairs: 9000,
  clients: 200,
  delay: 20,
  pool: 2,
  maxPool: 64,
};
const FIGURES = Object.fromEntries(
  Object.entries(MODES).map(([k, m]) => [k, m.figures]),
);

function row(text: string, starts: string): string {
  const found = text.split("\n").find((l) => l.startsWith(starts));
  ok(found, `no line starting ${starts} in:\n${text}`);
  return found;
}

Deno.test("bench report: the cluster is shown beside the single relay with ratios to it, and its targets are checked", () => {
  const results: Results = new Map([
    ["project", [{ oneway: 2000, pairing: 1000 }]],
    ["cluster", [{
      oneway: 1000,
      pairing: 600,
      failover: 0.12,
      reparked: 0.02,
      keysGone: 3.01,
      refused: 0,
    }]],
  ]);
  const text = report(
    results,
    ["project", "cluster"],
    ["oneway", "pairing", "failover"],
    FIGURES,
    SETTINGS,
  );
  // the main table holds the single relay only; the cluster has its own
  ok(!text.split("Cluster against")[0].includes("| cluster |"), text);
  const cluster = row(text, "| cluster |");
  ok(cluster.includes("1,000 (0.50×)"), cluster);
  ok(cluster.includes("600 (0.60×)"), cluster);
  ok(cluster.includes("| 0.12 |"), cluster);
  ok(row(text, "| cluster: one way").endsWith("| **missed** |"));
  ok(row(text, "| cluster: sequential pairings").endsWith("| met |"));
  ok(row(text, "| cluster: kill -9").endsWith("| met |"));
  ok(row(text, "| cluster: the killed node's keys").endsWith("| met |"));
});

Deno.test("bench report: a failover that never served a client misses its target", () => {
  const results: Results = new Map([
    ["project", [{}]],
    ["cluster", [{
      failover: "not served within 20 s",
      reparked: 0.02,
      keysGone: 3.01,
      refused: 7,
    }]],
  ]);
  const text = report(
    results,
    ["project", "cluster"],
    ["failover"],
    FIGURES,
    SETTINGS,
  );
  ok(row(text, "| cluster: kill -9").endsWith("| **missed** |"), text);
});

Deno.test("bench report: pairings/s with --admin are checked against the same relay without it (0.9×)", () => {
  const results: Results = new Map([
    ["project", [{ pairing: 2000, parallel: 3000 }]],
    ["project-admin", [{ pairing: 1900, parallel: 2400 }]],
  ]);
  const text = report(
    results,
    ["project", "project-admin"],
    ["pairing", "parallel"],
    FIGURES,
    SETTINGS,
  );
  ok(row(text, "| project-admin |").includes("1,900"), text);
  const sequential = row(text, "| sequential pairings with --admin");
  ok(sequential.includes("0.95× (1,900 / 2,000)"), sequential);
  ok(sequential.endsWith("| met |"), sequential);
  ok(
    row(text, "| 16 parallel pairings with --admin").endsWith("| **missed** |"),
    text,
  );
});
