// The live status page in a real Chromium: a pair appears with its bytes
// moving, is closed from the page, and goes; names, refusals and the chart.

import { ok, strictEqual } from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { adminRelay, askAt, pairAt, parkAt, tempFile } from "./_admin.ts";
import { launch, noBrowser } from "./_browser.ts";
import { randomBytes, readExactly } from "./_helpers.ts";

// The page's global, as the functions evaluated in the browser see it (the
// DOM's types would clash with Deno's under `deno check .`).
// deno-lint-ignore no-explicit-any
declare const document: any;

const SKIP = noBrowser();
if (SKIP) console.log(`status page tests skipped: ${SKIP}`);

/** Waits until `fn(arg)` is true in the page (polling), failing after 15 s. */
async function until(
  page: Page,
  fn: (arg: number) => boolean,
  arg: number,
  what: string,
): Promise<void> {
  try {
    await page.waitForFunction(fn, { timeout: 15_000, polling: 50 }, arg);
  } catch (e) {
    const body = await page.evaluate(() => document.body.innerText);
    throw new Error(`Timed out waiting for ${what}:\n${body}`, { cause: e });
  }
}

/** The number in `data-value` of cell `column` (0-based) of pair `id`'s row. */
function pairCell(page: Page, id: number, column: number): Promise<number> {
  return page.evaluate(
    ([id, column]) => {
      const row = document.querySelector(`tr[data-pair-id="${id}"]`);
      return Number(row?.children[column]?.getAttribute("data-value") ?? -1);
    },
    [id, column] as const,
  );
}

Deno.test({
  name:
    "status page: a pair appears with its bytes moving, is closed from the page, and goes",
  ignore: !!SKIP,
  // puppeteer's WebSocket to Chromium lives across the test's awaits
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using relay = await adminRelay();
    await using chromium = await launch();
    const page = await chromium.browser.newPage();
    const problems: string[] = [];
    page.on("pageerror", (e) => problems.push(String(e)));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(m.text());
    });
    page.on("dialog", (d) => d.accept());
    await page.setViewport({ width: 1280, height: 1000 });
    await page.goto(relay.url);
    await until(
      page,
      () => document.getElementById("state")?.textContent === "serving",
      0,
      "the state badge",
    );
    ok(
      (await page.evaluate(() => document.body.innerText)).includes(
        "No active pairs",
      ),
    );

    const { s, c } = await pairAt(relay, "page-pair");
    using _s = s, _c = c;
    const { data } = await relay.json("/api/pairs");
    const id: number = data.pairs[0].id;
    await until(
      page,
      (id) => !!document.querySelector(`tr[data-pair-id="${id}"]`),
      id,
      "the pair's row",
    );
    const row = await page.evaluate(
      (id) => document.querySelector(`tr[data-pair-id="${id}"]`)!.textContent,
      id,
    );
    ok(row?.includes("page-pair"), row ?? "");
    ok(row?.includes("127.0.0.1:"), row ?? "");
    // bytes moving: the client-to-server cell (column 5) grows as bytes flow
    await c.send(randomBytes(3000));
    await readExactly(s.conn, 3000);
    await until(
      page,
      (id) =>
        document.querySelector(`tr[data-pair-id="${id}"]`)?.children[5]
          ?.getAttribute("data-value") === "3000",
      id,
      "3000 bytes on the page",
    );
    await c.send(randomBytes(50_000));
    await readExactly(s.conn, 50_000);
    await s.send(randomBytes(777));
    await readExactly(c.conn, 777);
    await until(
      page,
      (id) => {
        const cells = document.querySelector(`tr[data-pair-id="${id}"]`)
          ?.children;
        return cells?.[5]?.getAttribute("data-value") === "53000" &&
          cells?.[6]?.getAttribute("data-value") === "777";
      },
      id,
      "53000 and 777 bytes on the page",
    );
    strictEqual(await pairCell(page, id, 5), 53000);
    // the name's row counts the active pair
    await until(
      page,
      () =>
        document.querySelector('tr[data-name="page-pair"]')?.children[3]
          ?.getAttribute("data-value") === "1",
      0,
      "the name's active pair",
    );
    // the chart was drawn: some pixels are not blank
    const inked = await page.evaluate(() => {
      const canvas = document.getElementById("chart");
      const { data } = canvas.getContext("2d")!.getImageData(
        0,
        0,
        canvas.width,
        canvas.height,
      );
      let n = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i]) n++;
      return n;
    });
    ok(inked > 1000, `${inked} pixels drawn`);

    // close it from the page (the confirm dialog is accepted)
    await page.click(`tr[data-pair-id="${id}"] button`);
    strictEqual(await c.line(), null);
    strictEqual(await s.line(), null);
    await until(
      page,
      (id) => !document.querySelector(`tr[data-pair-id="${id}"]`),
      id,
      "the pair's row to go",
    );
    ok(
      (await page.evaluate(() => document.body.innerText)).includes(
        "No active pairs",
      ),
    );
    strictEqual(problems.join("\n"), "");
  },
});

Deno.test({
  name:
    "status page: names with parked and waiting counts, refusals by code, and names as text, never HTML",
  ignore: !!SKIP,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using relay = await adminRelay(["--wait=0"]);
    const hostile = "<img/src=x/onerror=alert(1)>";
    using parked = await parkAt(relay, hostile);
    using refused = await askAt(relay, "nobody-offers-this");
    strictEqual(await refused.line(), "NOEXIST");
    await using chromium = await launch();
    const page = await chromium.browser.newPage();
    let dialogs = 0;
    page.on("dialog", (d) => (dialogs++, d.dismiss()));
    await page.goto(relay.url);
    await until(
      page,
      () =>
        document.querySelector('tr[data-code="NOEXIST"]')?.children[2]
          ?.getAttribute("data-value") === "1",
      0,
      "the NOEXIST refusal",
    );
    const cell = await page.evaluate(
      (name) =>
        // deno-lint-ignore no-explicit-any
        [...document.querySelectorAll("tr[data-name]")].find((r: any) =>
          r.getAttribute("data-name") === name
        )?.children[1]?.getAttribute("data-value"),
      hostile,
    );
    strictEqual(cell, "1");
    strictEqual(await page.$("#names img"), null);
    strictEqual(dialogs, 0);
    void parked;
  },
});

Deno.test({
  name: "status page: with a token, the browser's Basic prompt lets it in",
  ignore: !!SKIP,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const token = "page-token-123";
    await using file = await tempFile(token);
    await using relay = await adminRelay(
      [`--admin-token-file=${file.path}`],
      token,
    );
    await using chromium = await launch();
    const page = await chromium.browser.newPage();
    // Chromium answers the server's Basic challenge with these
    await page.authenticate({ username: "admin", password: token });
    const loaded = await page.goto(relay.url);
    strictEqual(loaded?.status(), 200);
    await until(
      page,
      () => document.getElementById("state")?.textContent === "serving",
      0,
      "the page to load its status with the token",
    );
  },
});
