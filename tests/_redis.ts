// A real redis-server for a test: on a free port on 127.0.0.1, nothing kept
// on disk, stopped (and restarted) by the test; redis-cli for looking in.

import { freePort } from "./_helpers.ts";

/** Whether redis-server is on PATH. */
export function hasRedis(): boolean {
  try {
    return new Deno.Command("redis-server", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

/** A redis-server started by a test; `await using` stops it. */
export class TestRedis implements AsyncDisposable {
  readonly port: number;
  #child?: Deno.ChildProcess;

  private constructor(port: number) {
    this.port = port;
  }

  /** `redis://127.0.0.1:PORT/DB`. */
  url(db = 0): string {
    return `redis://127.0.0.1:${this.port}/${db}`;
  }

  /** Starts redis-server on a free port; resolves once it answers PING. */
  static async start(): Promise<TestRedis> {
    const redis = new TestRedis(freePort());
    await redis.restart();
    return redis;
  }

  /** Starts it again on the same port (after {@linkcode stop}), empty. */
  async restart(): Promise<void> {
    if (this.#child) throw new Error("redis-server runs already");
    this.#child = new Deno.Command("redis-server", {
      args: [
        ...["--port", String(this.port), "--bind", "127.0.0.1"],
        ...["--save", "", "--appendonly", "no"],
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const end = Date.now() + 10_000;
    while ((await this.cli("PING")).trim() !== "PONG") {
      if (Date.now() > end) throw new Error("redis-server did not start");
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Stops it at once (SIGKILL: no goodbye to its clients) and waits. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    try {
      child.kill("SIGKILL");
    } catch {
      // gone already
    }
    await child.status;
  }

  /** Runs one redis-cli command; its stdout ("" if it failed). */
  async cli(...args: string[]): Promise<string> {
    const out = await new Deno.Command("redis-cli", {
      args: ["-p", String(this.port), ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout) : "";
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/** Waits until `check()` resolves true, polling every 50 ms; throws after `ms`. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  ms = 10_000,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
