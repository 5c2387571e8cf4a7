// Headless Chromium for the status page's tests (and its screenshot), driven
// by puppeteer-core; a fresh profile in a temporary folder each time.

import puppeteer, { type Browser } from "puppeteer-core";

/** Where Debian's chromium package puts the browser. */
export const CHROMIUM = "/usr/bin/chromium";

/** Why the browser tests cannot run here, or `undefined` if they can. */
export function noBrowser(): string | undefined {
  try {
    if (Deno.statSync(CHROMIUM).isFile) return undefined;
  } catch {
    // missing
  }
  return `${CHROMIUM} is missing (Debian package chromium)`;
}

/** A browser and its profile folder; disposing closes it and removes the folder. */
export async function launch(): Promise<
  AsyncDisposable & { browser: Browser }
> {
  const profile = await Deno.makeTempDir({ prefix: "tcp-relay-chromium-" });
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--headless",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profile}`,
    ],
  });
  return {
    browser,
    async [Symbol.asyncDispose]() {
      await browser.close();
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  };
}
