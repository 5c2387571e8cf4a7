// `deno task compile` builds the relay into one binary. `deno compile` needs
// denort (the runtime it embeds), which it downloads unless DENORT_BIN points
// to it; where neither works, the build test is skipped with the reason.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";

const ROOT = new URL("..", import.meta.url);
const CONFIG = JSON.parse(Deno.readTextFileSync(new URL("deno.json", ROOT)));

function denort(): string | undefined {
  const path = Deno.env.get("DENORT_BIN");
  try {
    return path && Deno.statSync(path).isFile ? path : undefined;
  } catch {
    return undefined;
  }
}
const DENORT = denort();
if (!DENORT) {
  console.log(
    "compile test skipped: deno compile needs denort, which cannot be downloaded here; " +
      "set DENORT_BIN to a denort binary of this Deno version to run it",
  );
}

Deno.test("deno.json's compile task builds relay.ts into dist/tcp-relay", () => {
  const task: string = CONFIG.tasks.compile;
  ok(/^deno compile\b/.test(task), task);
  ok(/--output dist\/tcp-relay\b/.test(task), task);
  ok(/\brelay\.ts$/.test(task), task);
});

Deno.test({
  name: "deno compile builds a relay binary that prints the package version",
  ignore: !DENORT,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tcp-relay-compile-" });
    try {
      const binary = `${dir}/tcp-relay`;
      const build = await new Deno.Command(Deno.execPath(), {
        args: ["compile", "-A", "--output", binary, "relay.ts"],
        cwd: ROOT,
        env: { DENORT_BIN: DENORT!, DENO_NO_UPDATE_CHECK: "1" },
        stdin: "null",
      }).output();
      const decoder = new TextDecoder();
      assertEquals(build.code, 0, decoder.decode(build.stderr));
      const run = await new Deno.Command(binary, {
        args: ["--version"],
        stdin: "null",
      }).output();
      assertEquals(run.code, 0, decoder.decode(run.stderr));
      assertEquals(decoder.decode(run.stdout).trim(), CONFIG.version);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
