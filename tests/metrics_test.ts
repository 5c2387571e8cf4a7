// GET /metrics of a relay process after real traffic: valid under
// `promtool check metrics`, and the numbers are the traffic's.

import {
  deepStrictEqual as assertEquals,
  ok,
  strictEqual,
} from "node:assert/strict";
import { OTHER, TOP_NAMES, topNames } from "../admin/_metrics.ts";
import { REFUSAL_CODES, VERSION } from "../protocol/_wire.ts";
import {
  type AdminRelay,
  adminRelay,
  askAt,
  pairAt,
  parkAt,
  statusUntil,
} from "./_admin.ts";
import { randomBytes, Raw, readExactly } from "./_helpers.ts";

function promtool(): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/promtool`).isFile) return `${dir}/promtool`;
    } catch {
      // not there
    }
  }
}
const PROMTOOL = promtool();
if (!PROMTOOL) {
  console.log(
    "promtool check skipped: promtool is not installed (Debian package prometheus)",
  );
}

/** The value of the series `name{labels}` in a scrape; `undefined` if absent. */
function sample(
  scrape: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort();
  for (const line of scrape.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = (m[2] ?? "").split(",").filter(Boolean).sort();
    if (JSON.stringify(got) === JSON.stringify(want)) return Number(m[3]);
  }
}

/** Every series of `name`: its label `label`'s value to the sample. */
function series(scrape: string, name: string, label: string) {
  const out: Record<string, number> = {};
  const re = new RegExp(
    `^${name}\\{${label}="((?:[^"\\\\]|\\\\.)*)"\\} (\\S+)$`,
  );
  for (const line of scrape.split("\n")) {
    const m = re.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

async function scrape(relay: AdminRelay): Promise<string> {
  const r = await relay.fetch("/metrics");
  strictEqual(r.status, 200);
  ok(r.headers.get("content-type")?.startsWith("text/plain; version=0.0.4"));
  return r.body;
}

async function checkWithPromtool(text: string): Promise<void> {
  const child = new Deno.Command(PROMTOOL!, {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const said = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  strictEqual(out.code, 0, `promtool check metrics: ${said}`);
}

Deno.test("metrics after real traffic count pairings, bytes each way (live pairs too), refusals by code, handshakes and pair durations", async () => {
  await using relay = await adminRelay(["--wait=0"]);
  // a pair that ends, with bytes each way
  const done = await pairAt(relay, "m-done");
  await done.c.send(randomBytes(5000));
  await readExactly(done.s.conn, 5000);
  await done.s.send(randomBytes(700));
  await readExactly(done.c.conn, 700);
  done.c.close();
  done.s.close();
  // a pair that stays open
  const live = await pairAt(relay, "m-live");
  using _s = live.s, _c = live.c;
  await live.c.send(randomBytes(1000));
  await readExactly(live.s.conn, 1000);
  // a refusal: nobody offers this name
  using nobody = await askAt(relay, "m-nobody");
  strictEqual(await nobody.line(), "NOEXIST");
  await statusUntil(
    relay,
    (s) => s.totals.activePairs === 1 && s.totals.refusals === 1,
    "the first pair to end and the refusal",
  );
  const text = await scrape(relay);
  strictEqual(sample(text, "tcp_relay_pairings_total"), 2);
  strictEqual(sample(text, "tcp_relay_active_pairs"), 1);
  assertEquals(series(text, "tcp_relay_bytes_total", "direction"), {
    client_to_server: 6000,
    server_to_client: 700,
  });
  const refusals = series(text, "tcp_relay_refusals_total", "code");
  assertEquals(Object.keys(refusals).sort(), [...REFUSAL_CODES].sort());
  assertEquals(refusals, {
    ...Object.fromEntries(REFUSAL_CODES.map((c) => [c, 0])),
    NOEXIST: 1,
  });
  strictEqual(sample(text, "tcp_relay_pair_duration_seconds_count"), 1);
  const handshakes = sample(text, "tcp_relay_handshake_duration_seconds_count");
  ok(handshakes !== undefined && handshakes >= 4, `${handshakes} handshakes`);
  strictEqual(
    sample(text, "tcp_relay_handshake_duration_seconds_bucket", { le: "+Inf" }),
    handshakes,
  );
  assertEquals(series(text, "tcp_relay_accepted_total", "port"), {
    server: 2,
    client: 3,
  });
  strictEqual(
    sample(text, "tcp_relay_name_active_pairs", { name: "m-live" }),
    1,
  );
  strictEqual(sample(text, "tcp_relay_info", { version: VERSION }), 1);
  if (PROMTOOL) await checkWithPromtool(text);
});

Deno.test("metrics count connections by state: handshaking, parked, waiting and paired", async () => {
  await using relay = await adminRelay(["--wait=30"]);
  using p1 = await parkAt(relay, "st-parked");
  using p2 = await parkAt(relay, "st-parked");
  // a handshake that never finishes
  using shaking = await Raw.open(relay.serverPort);
  strictEqual(await shaking.line(), "SERVER");
  // a client waiting for a reserved name's server
  using reserving = await Raw.open(relay.serverPort);
  await reserving.send("RESERVE\nst-waiting\n");
  strictEqual(await reserving.text(), "SERVER\nOK\n");
  using waiting = await askAt(relay, "st-waiting");
  const { s, c } = await pairAt(relay, "st-paired");
  using _s = s, _c = c;
  await statusUntil(
    relay,
    (st) => st.totals.waiting === 1 && st.totals.handshaking === 1,
    "the waiting client and the handshake",
  );
  const text = await scrape(relay);
  assertEquals(series(text, "tcp_relay_connections", "state"), {
    handshaking: 1,
    parked: 2,
    waiting: 1,
    paired: 2,
  });
  strictEqual(sample(text, "tcp_relay_name_parked", { name: "st-parked" }), 2);
  strictEqual(
    sample(text, "tcp_relay_name_waiting", { name: "st-waiting" }),
    1,
  );
  strictEqual(
    sample(text, "tcp_relay_name_active_pairs", { name: "st-paired" }),
    1,
  );
  if (PROMTOOL) await checkWithPromtool(text);
  void p1, p2, waiting;
});

Deno.test("metrics per name are bounded: the 50 busiest names have series, the rest are summed as _other", async () => {
  await using relay = await adminRelay();
  const conns: Raw[] = [];
  try {
    for (let i = 0; i < 3; i++) conns.push(await parkAt(relay, "busy"));
    for (let i = 0; i < 55; i++) {
      conns.push(await parkAt(relay, `n${String(i).padStart(2, "0")}`));
    }
    const text = await scrape(relay);
    const parked = series(text, "tcp_relay_name_parked", "name");
    strictEqual(Object.keys(parked).length, TOP_NAMES + 1);
    strictEqual(parked.busy, 3);
    // ties go by name: n00..n48 have series, n49..n54 are summed
    strictEqual(parked.n48, 1);
    strictEqual(parked.n49, undefined);
    strictEqual(parked[OTHER], 6);
    strictEqual(sample(text, "tcp_relay_names"), 56);
    strictEqual(
      Object.keys(series(text, "tcp_relay_name_active_pairs", "name")).length,
      TOP_NAMES + 1,
    );
    if (PROMTOOL) await checkWithPromtool(text);
  } finally {
    for (const c of conns) c.close();
  }
});

Deno.test("topNames keeps the busiest names and sums the rest, a real name _other among them", () => {
  const c = (parked: number, active = 0) => ({ parked, waiting: 0, active });
  assertEquals(topNames({ a: c(1), b: c(2) }), {
    top: [["a", c(1)], ["b", c(2)]],
  });
  assertEquals(
    topNames({ a: c(1), b: c(2, 1), z: c(5), [OTHER]: c(7) }, 2),
    { top: [["z", c(5)], ["b", c(2, 1)]], other: c(8) },
  );
});

Deno.test("metrics include the process's resident memory, heap, CPU seconds and open fds", async () => {
  await using relay = await adminRelay();
  const text = await scrape(relay);
  const positive = [
    "tcp_relay_process_resident_memory_bytes",
    "tcp_relay_nodejs_heap_size_used_bytes",
    "tcp_relay_process_cpu_seconds_total",
    "tcp_relay_process_open_fds",
    "tcp_relay_process_max_fds",
    "tcp_relay_process_start_time_seconds",
  ];
  for (const name of positive) {
    const v = sample(text, name);
    ok(v !== undefined && v > 0, `${name} = ${v}`);
  }
  ok(sample(text, "tcp_relay_process_resident_memory_bytes")! > 1e6);
  for (const line of text.split("\n")) {
    if (line && !line.startsWith("#")) {
      ok(line.startsWith("tcp_relay_"), line);
    }
  }
  if (PROMTOOL) await checkWithPromtool(text);
});
