/**
 * The burst benchmark: a crowd of clients arriving at once for one name.
 *
 * `server.ts` (the process users run) offers the name through a delay proxy
 * (`_delay_proxy.ts`, added latency each way) to the relay, forwarding each
 * client to an echo service; `clients` clients then call `connect()` at the
 * same moment against the relay (`--wait 5`). A client is served once it is
 * paired and its one-byte echo came back; its time is from the start of the
 * crowd until it was paired. Two ways to run the server: a fixed pool
 * (`--pool 2`) and on demand (`--pool 2 --max-pool 64`), the latter only
 * where `server.ts` has `--max-pool`.
 *
 * @module
 */

import { connect } from "../client.ts";
import { ROOT, sleep } from "./_driver.ts";
import { type Running, stopChild } from "./_peers.ts";

/** Settings of one burst. */
export interface BurstOptions {
  /** Connections the server keeps parked (`--pool`). */
  pool: number;
  /** `--max-pool` for on-demand parking; absent: a fixed pool. */
  maxPool?: number;
  /** Clients arriving at once. */
  clients: number;
  /** Latency added each way between the server and the relay, in ms. */
  delayMs: number;
  /** Given up after this, in ms. Default `60000`. */
  limitMs?: number;
}

/** What one burst measured. */
export interface BurstResult {
  /** Clients paired and echoed. */
  served: number;
  /** Median time to be paired of the served clients, in s. */
  medianS: number;
  /** Time to be paired of the last served client, in s. */
  lastS: number;
  /** How the others failed (`OFFLINE: 122`), if any did. */
  failures: string;
}

const deno = Deno.execPath();
let maxPoolFlag: Promise<boolean> | undefined;

/** Whether `server.ts` takes `--max-pool` (on-demand parking), read from its `--help`. */
export function hasMaxPool(): Promise<boolean> {
  return maxPoolFlag ??= new Deno.Command(deno, {
    args: ["run", "-A", `${ROOT}server.ts`, "--help"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output().then(
    (o) => new TextDecoder().decode(o.stdout).includes("--max-pool"),
    () => false,
  );
}

/** A child whose stdout and stderr are kept as text. */
function spawn(args: string[]) {
  const child = new Deno.Command(deno, {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const text = { out: "", err: "" };
  const pump = async (s: ReadableStream<Uint8Array>, key: "out" | "err") => {
    for await (const t of s.pipeThrough(new TextDecoderStream())) {
      text[key] = (text[key] + t).slice(-4000);
    }
  };
  const pumps = Promise.all([
    pump(child.stdout, "out"),
    pump(child.stderr, "err"),
  ]).catch(() => {});
  let exited = false;
  child.status.then(() => exited = true);
  return {
    child,
    text,
    get exited(): boolean {
      return exited;
    },
    stop: async () => {
      await stopChild(child);
      await pumps;
    },
  };
}

/** An echo service on a free port; `close()` ends it and its connections. */
function echoService() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const serving = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      conns.add(conn);
      conn.readable.pipeTo(conn.writable).catch(() => {}).finally(() =>
        conns.delete(conn)
      );
    }
  })();
  return {
    port: listener.addr.port,
    close: async () => {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed by its pipe */ }
      }
      await serving;
    },
  };
}

/** Pairs one client, echoes one byte, and closes; resolves with when it was paired. */
async function client(
  relay: string,
  name: string,
  signal: AbortSignal,
): Promise<number> {
  const conn = await connect({ relay, name, signal, timeout: 30_000 });
  const paired = performance.now();
  try {
    const onAbort = () => conn.close();
    signal.addEventListener("abort", onAbort, { once: true });
    await conn.write(new Uint8Array([42]));
    const buf = new Uint8Array(1);
    const n = await conn.read(buf);
    signal.removeEventListener("abort", onAbort);
    if (n !== 1 || buf[0] !== 42) throw new Error("no echo");
    return paired;
  } finally {
    try {
      conn.close();
    } catch { /* closed on abort */ }
  }
}

/** Runs one burst against the relay `relay` (already started). */
export async function burst(
  relay: Running,
  options: BurstOptions,
): Promise<BurstResult> {
  const ac = new AbortController();
  const timer = setTimeout(
    () => ac.abort(new Error("stalled")),
    options.limitMs ?? 60_000,
  );
  const echo = echoService();
  const proxy = spawn([
    "run",
    "-A",
    `${ROOT}bench/_delay_proxy.ts`,
    "--target",
    `127.0.0.1:${relay.serverPort}`,
    "--delay",
    `${options.delayMs}`,
  ]);
  let server: ReturnType<typeof spawn> | undefined;
  const name = "burst";
  const at = `127.0.0.1:${relay.clientPort}`;
  try {
    while (!/\d+\n/.test(proxy.text.out)) {
      if (ac.signal.aborted) throw new Error("the delay proxy did not start");
      await sleep(20);
    }
    const proxyPort = Number(/(\d+)\n/.exec(proxy.text.out)![1]);
    server = spawn([
      "run",
      "-A",
      `${ROOT}server.ts`,
      "--relay",
      `127.0.0.1:${proxyPort}`,
      "--name",
      name,
      "--to",
      `127.0.0.1:${echo.port}`,
      "--pool",
      `${options.pool}`,
      ...(options.maxPool ? ["--max-pool", `${options.maxPool}`] : []),
      "--log-level",
      "warning",
    ]);
    // warm up: once the name is offered, one client through, then let the
    // pool refill (and an on-demand pool shrink back)
    for (;;) {
      try {
        await client(at, name, ac.signal);
        break;
      } catch (e) {
        if (ac.signal.aborted || server.exited) {
          const said = server.text.err.trim().split("\n").pop();
          throw new Error(
            `server.ts did not serve: ${said || (e as Error).message}`,
          );
        }
        await sleep(100);
      }
    }
    await sleep(1500);
    const t0 = performance.now();
    const results = await Promise.allSettled(
      Array.from(
        { length: options.clients },
        () => client(at, name, ac.signal),
      ),
    );
    if (ac.signal.aborted) throw new Error("stalled");
    const times = results.flatMap((r) =>
      r.status === "fulfilled" ? [(r.value - t0) / 1000] : []
    ).sort((a, b) => a - b);
    const why = new Map<string, number>();
    for (const r of results) {
      if (r.status === "rejected") {
        const code = (r.reason as { code?: string })?.code ??
          String((r.reason as Error)?.message ?? r.reason);
        why.set(code, (why.get(code) ?? 0) + 1);
      }
    }
    return {
      served: times.length,
      medianS: times.length ? times[(times.length - 1) >> 1] : NaN,
      lastS: times.length ? times[times.length - 1] : NaN,
      failures: [...why].map(([k, n]) => `${k}: ${n}`).join(", "),
    };
  } finally {
    clearTimeout(timer);
    await server?.stop();
    await proxy.stop();
    await echo.close();
  }
}
