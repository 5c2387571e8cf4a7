/**
 * The bench's processes: building the C load driver
 * (`../shared/bench/relaybench.c`) and the C floor relay
 * (`peers/epoll_relay.c`) with gcc, and running commands with a time limit
 * so that a stalled peer never hangs the bench.
 *
 * @module
 */

/** The project root, as a path ending in `/`. */
export const ROOT: string = new URL("..", import.meta.url).pathname;
/**
 * The driver's home: `$RELAYBENCH_DIR`, else the first `shared/bench/` with a
 * `relaybench.c` beside the project or beside one of its parent folders (a
 * git worktree sits deeper than the main checkout).
 */
export const SHARED: string = findShared();

function findShared(): string {
  const given = Deno.env.get("RELAYBENCH_DIR");
  if (given) return given.endsWith("/") ? given : `${given}/`;
  let dir = new URL("../..", import.meta.url);
  for (let i = 0; i < 4; i++) {
    const here = new URL("shared/bench/", dir).pathname;
    try {
      Deno.statSync(`${here}relaybench.c`);
      return here;
    } catch {
      dir = new URL("..", dir);
    }
  }
  return new URL("../../shared/bench/", import.meta.url).pathname;
}

/** What a finished (or given up) command left. */
export interface Ran {
  /** Exit code; `-1` when it was killed at its time limit. */
  code: number;
  /** Its stdout as text. */
  out: string;
  /** Whether the time limit killed it. */
  timedOut: boolean;
  /** The signal that ended it, if one did. */
  signal?: string;
}

/**
 * Runs `cmd args`, killing it (SIGKILL) after `limitMs`; stderr is inherited
 * unless `quiet`.
 */
export async function run(
  cmd: string,
  args: string[],
  limitMs = 60_000,
  quiet = false,
): Promise<Ran> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: quiet ? "null" : "inherit",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, limitMs);
  const out = await child.output();
  clearTimeout(timer);
  return {
    code: timedOut ? -1 : out.code,
    out: new TextDecoder().decode(out.stdout),
    timedOut,
    signal: out.signal ?? undefined,
  };
}

/** Whether `cmd` is on PATH. */
export async function has(cmd: string): Promise<boolean> {
  const r = await run("sh", ["-c", `command -v ${cmd}`], 10_000, true)
    .catch(() => ({ code: 1 }));
  return r.code === 0;
}

/** `cmd` on PATH, installing Debian's `pkg` when root may; false if missing. */
export async function need(cmd: string, pkg: string): Promise<boolean> {
  if (await has(cmd)) return true;
  if (Deno.uid?.() === 0) {
    console.error(`bench: installing ${pkg} (apt-get)`);
    await run("sh", [
      "-c",
      `apt-get update -qq && apt-get install -y -qq ${pkg} >/dev/null`,
    ], 300_000);
    if (await has(cmd)) return true;
  }
  console.error(`bench: ${cmd} is missing: apt-get install ${pkg}`);
  return false;
}

/** The built binaries; {@linkcode Binaries.remove} deletes them. */
export interface Binaries {
  /** The load driver. */
  driver: string;
  /** The C floor relay. */
  floor: string;
  remove(): Promise<void>;
}

/** Builds the driver and the floor relay into temporary files. */
export async function build(): Promise<Binaries> {
  if (!(await need("gcc", "gcc"))) throw new Error("gcc is missing");
  try {
    Deno.statSync(`${SHARED}relaybench.c`);
  } catch {
    throw new Error(
      `${SHARED}relaybench.c not found (the shared/ folder beside the project; or set RELAYBENCH_DIR)`,
    );
  }
  const driver = await Deno.makeTempFile({ prefix: "relaybench-" });
  const floor = await Deno.makeTempFile({ prefix: "epoll_relay-" });
  const remove = async () => {
    await Deno.remove(driver).catch(() => {});
    await Deno.remove(floor).catch(() => {});
  };
  const a = await run("gcc", [
    "-O2",
    "-pthread",
    "-o",
    driver,
    `${SHARED}relaybench.c`,
  ]);
  const b = await run("gcc", [
    "-O2",
    "-o",
    floor,
    `${ROOT}bench/peers/epoll_relay.c`,
  ]);
  if (a.code || b.code) {
    await remove();
    throw new Error("gcc failed");
  }
  return { driver, floor, remove };
}

/** The driver's summary line as key=value pairs (`error=stalled` if none). */
export function parseLine(ran: Ran): Record<string, string> {
  const line = ran.out.trim().split("\n").pop() ?? "";
  if (ran.timedOut) return { error: "stalled" };
  if (!line && ran.signal === "SIGPIPE") {
    return { error: "the peer closed a connection (SIGPIPE)" };
  }
  if (!line) {
    return {
      error: ran.signal ? `killed by ${ran.signal}` : `exit ${ran.code}`,
    };
  }
  return Object.fromEntries(
    line.split(" ").map((kv) => {
      const i = kv.indexOf("=");
      return i < 0 ? [kv, ""] : [kv.slice(0, i), kv.slice(i + 1)];
    }),
  );
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** RSS of `pid` in KB from `/proc`, or `NaN` once it is gone. */
export function rssKb(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

/** Waits until `port` accepts a connection; throws after `ms`. */
export async function waitForPort(port: number, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      if (Date.now() > end) throw new Error(`nothing listens on ${port}`);
      await sleep(25);
    }
  }
}

/** Stops `child`: SIGTERM, then SIGKILL if it is still there after `ms`. */
export async function stopChild(
  child: Deno.ChildProcess,
  ms = 3000,
): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch { /* gone */ }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, ms);
  await child.status;
  clearTimeout(timer);
}

/** A port free on 127.0.0.1 now (the OS's pick; closed again at once). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}
