// deploy/: the systemd units checked by systemd-analyze (verify, and the
// exposure score of `security`), what they say against the files they run
// (ports, paths, the drain timeout, the secrets' credentials), and
// deploy/relay.toml taken by a real relay process as today's relay reads it.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { basename, join } from "node:path";
import { parse } from "smol-toml";
import { tempDir } from "./_helpers.ts";
import { Proc } from "./_proc.ts";

const DEPLOY = new URL("../deploy/", import.meta.url);
const UNITS = ["tcp-relay.service", "tcp-relay-server.service"];

/** Whether `systemd-analyze` runs here; why not otherwise. */
const ANALYZE: string | undefined = await (async () => {
  try {
    const out = await new Deno.Command("systemd-analyze", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success ? undefined : "systemd-analyze --version failed";
  } catch {
    return "systemd-analyze is not installed (Debian package systemd)";
  }
})();
if (ANALYZE) console.warn(`skipping systemd-analyze tests: ${ANALYZE}`);

/** A unit's directives: section -> key -> values in order. */
function directives(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let section = new Map<string, string[]>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head) {
      section = new Map();
      sections.set(head[1], section);
      continue;
    }
    const eq = line.indexOf("=");
    const key = line.slice(0, eq), value = line.slice(eq + 1);
    section.set(key, [...section.get(key) ?? [], value]);
  }
  return sections;
}

/** The one value of `key` in [Service]; fails where there is none or several. */
function service(unit: string, key: string): string {
  const values = directives(unit).get("Service")?.get(key) ?? [];
  assertEquals(values.length, 1, `${key}= once in [Service]: ${values}`);
  return values[0];
}

function readUnit(name: string): Promise<string> {
  return Deno.readTextFile(new URL(name, DEPLOY));
}

/**
 * `systemd-analyze verify` on a copy of `unit` (named `name`) whose ExecStart
 * runs this Deno (verify wants the binary to exist), with `extra` added to
 * [Service]: the unit's own complaints (lines naming it), and the exit code.
 * Warnings about the machine (no systemd running, other units) are left out.
 */
async function verify(
  name: string,
  unit: string,
  extra = "",
): Promise<{ code: number; complaints: string[] }> {
  const exec = service(unit, "ExecStart");
  const binary = exec.split(" ")[0];
  ok(binary.startsWith("/"), `ExecStart's binary is an absolute path: ${exec}`);
  const copy = unit.replace(
    `ExecStart=${binary} `,
    `ExecStart=${Deno.execPath()} `,
  )
    .replace("[Service]\n", `[Service]\n${extra}`);
  await using tmp = await tempDir("tcp-relay-deploy-");
  const path = join(tmp.dir, name);
  await Deno.writeTextFile(path, copy);
  const out = await new Deno.Command("systemd-analyze", {
    args: ["verify", path],
    stdout: "piped",
    stderr: "piped",
    env: { SYSTEMD_LOG_COLOR: "0" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  const complaints = text.split("\n").filter((l) =>
    l.includes(path) || l.includes(`${basename(path)}:`)
  );
  return { code: out.code, complaints };
}

Deno.test({
  name: "systemd-analyze verify passes both units as they are",
  ignore: ANALYZE !== undefined,
  async fn() {
    for (const name of UNITS) {
      const { code, complaints } = await verify(name, await readUnit(name));
      assertEquals({ name, code, complaints }, {
        name,
        code: 0,
        complaints: [],
      });
    }
  },
});

Deno.test({
  name: "systemd-analyze verify passes the relay's low-port drop-in",
  ignore: ANALYZE !== undefined,
  async fn() {
    const lowPorts = "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" +
      "AmbientCapabilities=CAP_NET_BIND_SERVICE\n";
    const unit = await readUnit("tcp-relay.service");
    ok(unit.includes(lowPorts.replaceAll(/^/gm, "#   ").slice(0, -4)));
    const { code, complaints } = await verify(
      "tcp-relay.service",
      unit,
      lowPorts,
    );
    assertEquals({ code, complaints }, { code: 0, complaints: [] });
  },
});

Deno.test({
  name: "the verify check catches a unit's unknown key and bad value",
  ignore: ANALYZE !== undefined,
  async fn() {
    const unit = await readUnit("tcp-relay.service");
    const { complaints } = await verify(
      "tcp-relay.service",
      unit,
      "ProtectSystm=strict\nRestart=sometimes\n",
    );
    assertEquals(complaints.length, 2, complaints.join("\n"));
    ok(
      complaints.some((l) => l.includes("ProtectSystm")),
      complaints.join("\n"),
    );
    ok(complaints.some((l) => l.includes("sometimes")), complaints.join("\n"));
  },
});

Deno.test({
  name: "systemd-analyze security scores both units (reported, not asserted)",
  ignore: ANALYZE !== undefined,
  async fn() {
    for (const name of UNITS) {
      const out = await new Deno.Command("systemd-analyze", {
        args: ["security", "--offline=yes", new URL(name, DEPLOY).pathname],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      const score = /Overall exposure level for \S+: ([\d.]+ \S+)/.exec(text);
      console.log(`${name}: exposure ${score?.[1] ?? "not reported"}`);
    }
  },
});

Deno.test("the relay unit is hardened, runs Deno itself, and outlasts the drain", async () => {
  const unit = await readUnit("tcp-relay.service");
  const want: Record<string, string> = {
    DynamicUser: "yes",
    StateDirectory: "tcp-relay",
    ConfigurationDirectory: "tcp-relay",
    CacheDirectory: "tcp-relay",
    NoNewPrivileges: "yes",
    ProtectSystem: "strict",
    ProtectHome: "yes",
    PrivateTmp: "yes",
    PrivateDevices: "yes",
    RestrictAddressFamilies: "AF_INET AF_INET6 AF_UNIX",
    CapabilityBoundingSet: "",
    LimitNOFILE: "65536",
    Restart: "on-failure",
    ExecReload: "/bin/kill -HUP $MAINPID",
    KillSignal: "SIGTERM",
    EnvironmentFile: "-/etc/tcp-relay/env",
  };
  for (const [key, value] of Object.entries(want)) {
    assertEquals(`${key}=${service(unit, key)}`, `${key}=${value}`);
  }
  const env = directives(unit).get("Service")!.get("Environment")!;
  ok(env.includes("DENO_DIR=/var/cache/tcp-relay"), String(env));
  ok(env.includes("DENO_NO_UPDATE_CHECK=1"), String(env));
  const exec = service(unit, "ExecStart");
  ok(/^\/\S+\/deno run /.test(exec) && !exec.includes("npx"), exec);
  ok(
    exec.includes("--config /etc/tcp-relay/relay.toml") &&
      exec.includes("--data /var/lib/tcp-relay"),
    exec,
  );
  ok(
    unit.includes("#ExecStart=/usr/local/bin/tcp-relay --config"),
    "compiled form",
  );
  const toml = parse(await readUnit("relay.toml"));
  const drain = Number(toml["drain-timeout"]);
  const stop = Number(service(unit, "TimeoutStopSec"));
  ok(stop > drain, `TimeoutStopSec ${stop} > drain-timeout ${drain}`);
});

Deno.test("the server unit runs server.ts --config on services.toml with its secrets as credentials", async () => {
  const unit = await readUnit("tcp-relay-server.service");
  const exec = service(unit, "ExecStart");
  ok(
    /^\/\S+\/deno run -A \S+server(\.ts)? --config \/etc\/tcp-relay\/services\.toml$/
      .test(exec),
    exec,
  );
  assertEquals(service(unit, "DynamicUser"), "yes");
  const toml = parse(await readUnit("services.toml")) as {
    relay: string;
    service: Record<string, unknown>[];
  };
  assertEquals(Object.keys(toml).sort(), ["relay", "service"]);
  ok(typeof toml.relay === "string");
  ok(toml.service.length >= 1);
  const known = new Set(["name", "to", "pool", "secret_file"]);
  const creds = directives(unit).get("Service")!.get("LoadCredential") ?? [];
  for (const s of toml.service) {
    for (const key of Object.keys(s)) ok(known.has(key), `unknown key ${key}`);
    ok(typeof s.name === "string" && /:\d+$/.test(String(s.to)));
    ok(Number.isInteger(s.pool));
    if (s.secret_file === undefined) continue;
    // each secret file is one the unit hands over as a credential
    const m = /^\/run\/credentials\/tcp-relay-server\.service\/(.+)$/.exec(
      String(s.secret_file),
    );
    ok(m, `secret_file under the unit's credentials: ${s.secret_file}`);
    ok(
      creds.some((c) => c.startsWith(`${m[1]}:/etc/tcp-relay/`)),
      String(creds),
    );
  }
});

Deno.test("deploy/relay.toml starts today's relay, reloads on SIGHUP and drains on SIGTERM", async () => {
  await using data = await tempDir("tcp-relay-deploy-data-");
  // the unit's own flags (--config, --data) and loopback ports 0 over the file's
  await using relay = Proc.deno("relay.ts", [
    "--config",
    "deploy/relay.toml",
    "--data",
    data.dir,
    "--host",
    "127.0.0.1",
    "--server-port",
    "0",
    "--client-port",
    "0",
  ]);
  await relay.waitErr(/Relay listening: servers on "127\.0\.0\.1:\d+"/);
  relay.kill("SIGHUP"); // ExecReload
  await relay.waitErr(/Reloaded deploy\/relay\.toml: no change/);
  ok(!/Cannot reload|Not applied/.test(relay.err), relay.err);
  relay.kill("SIGTERM"); // KillSignal
  assertEquals((await relay.status()).code, 0, relay.err);
});
