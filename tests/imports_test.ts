// Importing the helpers loads only the helpers: the module graph of each
// library entry point (what `deno info` reports, without dynamic imports and
// type-only ones) holds no engine, no CLI code, no node:v8/node:vm, and a
// process that imports them reads no file (/proc included).

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { text } from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url);

interface Dependency {
  code?: { specifier: string };
  isDynamic?: boolean;
}
interface Module {
  specifier: string;
  dependencies?: Dependency[];
}

/** The modules `entry` loads when imported: static code imports, followed from it. */
async function loadedBy(entry: string): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
  }).output();
  ok(out.success, text(out.stderr));
  const graph: { roots: string[]; modules: Module[] } = JSON.parse(
    text(out.stdout),
  );
  const modules = new Map(graph.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const walk = (specifier: string) => {
    if (seen.has(specifier)) return;
    seen.add(specifier);
    for (const d of modules.get(specifier)?.dependencies ?? []) {
      if (d.code && !d.isDynamic) walk(d.code.specifier);
    }
  };
  graph.roots.forEach(walk);
  return [...seen].map((s) => s.replace(ROOT.href, ""));
}

for (const entry of ["mod.ts", "client.ts", "server.ts"]) {
  Deno.test(`importing ${entry} loads no engine, no CLI code, no node:v8 or node:vm`, async () => {
    const loaded = await loadedBy(entry);
    ok(loaded.includes("helpers/_dial.ts"), loaded.join("\n"));
    const wrong = loaded.filter((s) =>
      /^(engine|cli|bench|cluster|admin)\/|^relay\.ts$|^node:(v8|vm)$/.test(s)
    );
    assertEquals(wrong, [], `${entry} loads:\n${loaded.join("\n")}`);
  });
}

Deno.test("a process importing accept, connect and listen reads no file (no /proc) and queries no permission", async () => {
  // Every way to read a file, and the permission query that guards one, are
  // recorded before the helpers are imported.
  const probe = `
    const calls = [];
    for (const name of ["readTextFile", "readTextFileSync", "readFile", "readFileSync", "open", "openSync", "statSync", "lstatSync"]) {
      const real = Deno[name];
      Deno[name] = (...args) => { calls.push(name + " " + String(args[0])); return real(...args); };
    }
    const query = Deno.permissions.querySync.bind(Deno.permissions);
    Deno.permissions.querySync = (d) => { calls.push("querySync " + JSON.stringify(d)); return query(d); };
    const mod = await import(${JSON.stringify(new URL("mod.ts", ROOT).href)});
    const client = await import(${
    JSON.stringify(new URL("client.ts", ROOT).href)
  });
    const server = await import(${
    JSON.stringify(new URL("server.ts", ROOT).href)
  });
    if (typeof mod.accept !== "function" || typeof client.connect !== "function" || typeof server.listen !== "function") throw new Error("missing exports");
    console.log(JSON.stringify(calls));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      "--config",
      new URL("deno.json", ROOT).pathname,
      "--allow-read",
      probe,
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
  }).output();
  ok(out.success, text(out.stderr));
  assertEquals(JSON.parse(text(out.stdout)), []);
});
