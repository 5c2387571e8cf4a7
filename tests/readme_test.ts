// The README's library example, run as a program from this checkout (its
// jsr: imports pointed at the files), must print the echo and the bytes.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { join } from "node:path";
import { tempDir, text } from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url);
const README = Deno.readTextFileSync(new URL("README.md", ROOT));

/** The first ```ts block after `heading`. */
function example(heading: string): string {
  const at = README.indexOf(heading);
  ok(at >= 0, `no "${heading}" in README.md`);
  const m = /```ts\n([\s\S]*?)```/.exec(README.slice(at));
  ok(m, `no ts example after "${heading}"`);
  return m[1];
}

Deno.test("the README's library example runs: it prints the echo and the bytes each way", async () => {
  const code = example("## As a library")
    .replaceAll('"jsr:@x/tcp-relay/relay"', `"${new URL("relay.ts", ROOT)}"`)
    .replaceAll('"jsr:@x/tcp-relay"', `"${new URL("mod.ts", ROOT)}"`);
  ok(!code.includes("jsr:"), code);
  await using tmp = await tempDir("tcp-relay-readme-");
  const file = join(tmp.dir, "example.ts");
  await Deno.writeTextFile(file, code);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", new URL("deno.json", ROOT).pathname, file],
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(20_000),
  }).output();
  assertEquals(out.code, 0, text(out.stderr));
  assertEquals(
    text(out.stdout),
    "hello\n{ clientToServer: 5, serverToClient: 5 }\n",
  );
});
