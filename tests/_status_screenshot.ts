// Makes the README's screenshot of the status page (docs/status-page.png):
// a relay process with some names, parked servers, pairs carrying traffic
// for a few minutes and some refusals, photographed in headless Chromium.
//
//   deno run -A tests/_status_screenshot.ts [OUT.png] [SECONDS]

import { adminRelay, askAt, pairAt, parkAt } from "./_admin.ts";
import { launch } from "./_browser.ts";
import { randomBytes, Raw, tempDir } from "./_helpers.ts";

const out = Deno.args[0] ?? "docs/status-page.png";
const seconds = Number(Deno.args[1] ?? 240);

await using data = await tempDir("tcp-relay-shot-");
await using relay = await adminRelay([`--data=${data.dir}`, "--wait=600"]);
const post = (name: string, isPrivate = false) =>
  relay.json("/api/names", {
    method: "POST",
    body: JSON.stringify({ name, private: isPrivate }),
  });
await post("home-ssh");
await post("build-cache", true);

const keep: Raw[] = [];
const pairs: { s: Raw; c: Raw; up: number; down: number; phase: number }[] = [];
const traffic = (name: string, up: number, down: number) =>
  pairAt(relay, name).then(({ s, c }) =>
    pairs.push({ s, c, up, down, phase: pairs.length })
  );

await traffic("web-dev", 40_000, 900_000);
await traffic("web-dev", 8_000, 120_000);
await traffic("db-replica", 1_500_000, 60_000);
await traffic("grafana", 5_000, 300_000);
await traffic("metrics-push", 200_000, 2_000);
// servers waiting for clients (after the pairs: a client takes the oldest)
for (const [name, n] of [["web-dev", 3], ["printer", 1], ["grafana", 2]]) {
  for (let i = 0; i < Number(n); i++) {
    keep.push(await parkAt(relay, String(name)));
  }
}
for (const name of ["nas", "old-laptop", "nas"]) {
  const c = await askAt(relay, name);
  await c.line(); // NOEXIST
  c.close();
}
{
  // a reserved name with a client waiting for its server
  const r = await Raw.open(relay.serverPort);
  await r.send("RESERVE\nstaging-api\n");
  await r.text();
  r.close();
  keep.push(await askAt(relay, "staging-api"));
}
{
  // a server that does not know the protocol
  const r = await Raw.open(relay.serverPort);
  await r.send("HELLO WORLD\n");
  await r.text();
  r.close();
}

// bytes each second, in waves, drained on the other side
const drain = (raw: Raw) =>
  (async () => {
    const buf = new Uint8Array(256 * 1024);
    while (await raw.conn.read(buf).catch(() => null) !== null) { /* drop */ }
  })();
for (const p of pairs) drain(p.s), drain(p.c);
const chunk = randomBytes(2_000_000);
const start = Date.now();
let stop = false;
const flowing = (async () => {
  while (!stop) {
    const t = (Date.now() - start) / 1000;
    await Promise.all(pairs.map(async (p) => {
      const wave = 0.55 + 0.45 * Math.sin(t / 23 + p.phase * 1.7);
      const burst = Math.sin(t / 7 + p.phase) > 0.8 ? 1.8 : 1;
      await p.c.send(chunk.subarray(0, Math.round(p.up * wave * burst / 4)));
      await p.s.send(chunk.subarray(0, Math.round(p.down * wave * burst / 4)));
    }));
    await new Promise((r) => setTimeout(r, 250));
  }
})();
console.log(`traffic for ${seconds} s, then the screenshot`);
await new Promise((r) => setTimeout(r, seconds * 1000));

await using chromium = await launch();
const page = await chromium.browser.newPage();
await page.setViewport({ width: 1280, height: 900 });
await page.goto(relay.url);
await page.waitForFunction(
  "document.querySelectorAll('tr[data-pair-id]').length === 5",
  { timeout: 15_000 },
);
await new Promise((r) => setTimeout(r, 2500));
await Deno.mkdir(new URL(".", new URL(out, `file://${Deno.cwd()}/`)), {
  recursive: true,
});
await page.screenshot({ path: out as `${string}.png`, fullPage: true });
console.log(`wrote ${out}`);
stop = true;
await flowing;
for (const p of pairs) p.s.close(), p.c.close();
for (const k of keep) k.close();
