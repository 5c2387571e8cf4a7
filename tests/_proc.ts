// A child process for tests that run the executables (or the Ruby stand-ins)
// for real: its stdout and stderr collected as text, its stdin optional; and
// the executables run that way: to the end, or relay.ts, server.ts and
// client.ts left running.

import { bytes, freePorts, text } from "./_helpers.ts";

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

/** What {@linkcode run} returns: the exit code and the output as text. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `deno run -A script args` from the project root to the end, stdin
 * closed; killed after 20 s, so that a wrong start cannot hang the test.
 */
export async function run(
  script: string,
  ...args: string[]
): Promise<RunResult> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 20_000);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1" },
    signal: ac.signal,
  }).output().finally(() => clearTimeout(timer));
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** relay.ts running as a process: see {@linkcode relayProc}. */
export interface RelayProc extends AsyncDisposable {
  /** The process. */
  proc: Proc;
  /** The server port's address, "127.0.0.1:port". */
  server: string;
  /** The client port's address, "127.0.0.1:port". */
  client: string;
  /** The server port. */
  serverPort: number;
  /** The client port. */
  clientPort: number;
}

/**
 * relay.ts on 127.0.0.1 and two fixed free ports, with `extra` flags, once
 * it logs that it listens; disposing of it kills it.
 */
export async function relayProc(...extra: string[]): Promise<RelayProc> {
  const [serverPort, clientPort] = freePorts(2);
  const proc = Proc.deno("relay.ts", [
    "--host=127.0.0.1",
    `--server-port=${serverPort}`,
    `--client-port=${clientPort}`,
    ...extra,
  ]);
  try {
    await proc.waitErr(/Relay listening/);
  } catch (e) {
    await proc[Symbol.asyncDispose]();
    throw e;
  }
  return {
    proc,
    server: `127.0.0.1:${serverPort}`,
    client: `127.0.0.1:${clientPort}`,
    serverPort,
    clientPort,
    [Symbol.asyncDispose]: () => proc[Symbol.asyncDispose](),
  };
}

/** server.ts serving `name` at `relay` for the local service at `to`, with `extra` flags. */
export function serverTs(
  relay: string,
  name: string,
  to: string,
  ...extra: string[]
): Proc {
  return Proc.deno("server.ts", [
    ...["--relay", relay, "--name", name, "--to", to],
    ...extra,
  ]);
}

/** client.ts for `name` at `relay`, with `flags` (stdin piped for `--stdio`). */
export function clientTs(
  relay: string,
  name: string,
  ...flags: string[]
): Proc {
  const args = ["--relay", relay, "--name", name, ...flags];
  return Proc.deno("client.ts", args, flags.includes("--stdio"));
}
