// A child process for tests that run the executables (or the Ruby stand-ins)
// for real: its stdout and stderr collected as text, its stdin optional.

import { bytes } from "./_helpers.ts";

/** The project root: the working directory of every child. */
const ROOT = new URL("..", import.meta.url);

/** How a {@linkcode Proc} is started besides its command and arguments. */
export interface ProcOptions {
  /** Pipe stdin, for {@linkcode Proc.write}; otherwise it is null. */
  stdin?: boolean;
  /** Variables added to the environment (which always has `NO_COLOR=1`). */
  env?: Record<string, string>;
}

/**
 * A child process, run from the project root, whose stdout and stderr are
 * collected as text in {@linkcode Proc.out} and {@linkcode Proc.err}.
 *
 * Disposing of it kills it (SIGKILL) and waits until it has exited and its
 * output is fully read, so that no test leaks the process or its pipes.
 */
export class Proc implements AsyncDisposable {
  /** The running process. */
  readonly child: Deno.ChildProcess;
  /** All of stdout read so far. */
  out = "";
  /** All of stderr read so far. */
  err = "";
  /** Whether the process has exited (its output may still be being read). */
  exited = false;
  #pumps: Promise<void>[];
  #stdin?: WritableStreamDefaultWriter<Uint8Array>;

  /** Starts `cmd args` from the project root. */
  constructor(cmd: string, args: string[], opts: ProcOptions = {}) {
    this.child = new Deno.Command(cmd, {
      args,
      cwd: ROOT,
      stdin: opts.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...opts.env },
    }).spawn();
    this.child.status.then(() => this.exited = true);
    if (opts.stdin) this.#stdin = this.child.stdin.getWriter();
    const pump = async (
      s: ReadableStream<Uint8Array>,
      on: (t: string) => void,
    ) => {
      for await (const t of s.pipeThrough(new TextDecoderStream())) on(t);
    };
    this.#pumps = [
      pump(this.child.stdout, (t) => this.out += t),
      pump(this.child.stderr, (t) => this.err += t),
    ];
  }

  /** Starts `deno run -A script args`, with stdin piped if `stdin`. */
  static deno(script: string, args: string[], stdin = false): Proc {
    return new Proc(Deno.execPath(), ["run", "-A", script, ...args], { stdin });
  }

  /**
   * Waits until stdout (or stderr) matches `re`, and returns the match;
   * fails after `ms` with what both held.
   */
  async wait(
    re: RegExp,
    where: "out" | "err" = "out",
    ms = 10_000,
  ): Promise<RegExpMatchArray> {
    const end = Date.now() + ms;
    for (;;) {
      const m = this[where].match(re);
      if (m) return m;
      if (Date.now() > end) {
        throw new Error(`no ${re} in std${where}:\n${this.out}\n${this.err}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Waits until stderr matches `re`: {@linkcode Proc.wait} on stderr. */
  async waitErr(re: RegExp, ms = 10_000): Promise<void> {
    await this.wait(re, "err", ms);
  }

  /** Writes `s` to stdin, which must have been piped. */
  write(s: string): Promise<void> {
    return this.#stdin!.write(bytes(s));
  }

  /** Closes stdin, if piped; quietly if closed already or the process is gone. */
  async closeStdin(): Promise<void> {
    try {
      await this.#stdin?.close();
    } catch {
      // closed already, or the process is gone
    }
  }

  /** Sends `signal`, unless the process has exited already. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.child.kill(signal);
    } catch {
      // exited already
    }
  }

  /** The exit status, once stdout and stderr are fully read. */
  async status(): Promise<Deno.CommandStatus> {
    const status = await this.child.status;
    await Promise.all(this.#pumps);
    return status;
  }

  /** Kills the process (SIGKILL), closes stdin and waits for the status. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.closeStdin();
    await this.status();
  }
}
