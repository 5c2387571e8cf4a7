/**
 * The client's side: ask a relay for a name and get a normal `Deno.TcpConn`
 * to the server behind it. Library and executable.
 *
 * ```sh
 * # forward local port 2222 to "home-ssh"
 * deno run -A jsr:@x/tcp-relay/client --relay relay.example.com --name home-ssh --listen 2222
 * # or use it as ssh's ProxyCommand
 * ssh -o ProxyCommand="deno run -A jsr:@x/tcp-relay/client --relay relay.example.com --name %h --stdio" user@home-ssh
 * ```
 *
 * @example Talking to a server through the relay
 * ```ts
 * import { connect } from "jsr:@x/tcp-relay/client";
 *
 * const conn = await connect({ relay: "relay.example.com", name: "echo" });
 * await conn.write(new TextEncoder().encode("hello"));
 * conn.close();
 * ```
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { type HelperOptions, withRelay } from "./_dial.ts";
import { formatAddr, parseHostPort, Word } from "./_protocol.ts";
import { pipePair, sink, Source } from "./_pipe.ts";
import { acceptAll } from "./_accept.ts";
import {
  COMMON_OPTIONS,
  parseFlags,
  runMain,
  setupLogging,
  stopSignal,
  UsageError,
} from "./_cli.ts";

export type { HelperOptions } from "./_dial.ts";

const log = getLogger(["tcp-relay", "client"]);

/**
 * Asks the relay for `name` and resolves with the paired connection (with
 * `setNoDelay(true)`); every byte read from it is the server's. Refusals
 * reject with a {@linkcode RelayError}: `NOEXIST` (no such name), `OFFLINE`
 * (no server came in time), `UNREACHABLE`, `TIMEOUT`, `CLOSED`.
 *
 * @example Sending a request and reading the whole answer
 * ```ts
 * import { connect } from "jsr:@x/tcp-relay";
 *
 * const conn = await connect({ relay: "relay.example.com:9010", name: "web" });
 * await conn.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
 * await conn.closeWrite();
 * console.log(await new Response(conn.readable).text());
 * ```
 */
export function connect(options: HelperOptions): Promise<Deno.TcpConn> {
  return withRelay(options, "client", async (s) => {
    await s.expect(Word.CLIENT);
    await s.write(options.name);
    await s.expect(Word.CONNECTED);
    s.conn.setNoDelay(true);
    return s.conn;
  });
}

const USAGE = `tcp-relay client: reaches a server through a relay

Usage: deno run -A jsr:@x/tcp-relay/client --relay HOST[:PORT] --name NAME (--listen [HOST:]PORT | --stdio)

Options:
  --relay HOST[:PORT]     the relay (port default 9010)
  --name NAME             the name of the server
  --listen [HOST:]PORT    forward each connection to this local port
                          (host default 127.0.0.1) to the server
  --stdio                 connect once and pipe stdin/stdout, for example
                          ssh -o ProxyCommand="... --name %h --stdio" user@NAME
  --log-level LEVEL       trace, debug, info, warning, error (default info)
  --log-format FORMAT     text or json (default text)
  -h, --help              show this help
  -V, --version           show the version`;

async function stdio(relay: string, name: string): Promise<number> {
  const conn = await connect({ relay, name });
  const stdout = {
    write: (p: Uint8Array) => Deno.stdout.write(p),
    closeWrite: () => Promise.resolve(),
  };
  // Our end of stdin becomes a half-close; the server's end ends the process.
  new Source(Deno.stdin).readable().pipeTo(sink(conn)).catch(() => {});
  await new Source(conn).readable().pipeTo(sink(stdout)).catch(() => {});
  return 0;
}

async function forward(relay: string, name: string, at: string): Promise<void> {
  let addr: { hostname: string; port: number };
  try {
    addr = parseHostPort(/^\d+$/.test(at) ? `127.0.0.1:${at}` : at);
  } catch (e) {
    throw new UsageError(`--listen: ${(e as Error).message}`);
  }
  const listener = Deno.listen(addr);
  const signal = stopSignal();
  signal.addEventListener("abort", () => listener.close());
  log.info("Forwarding {local} to {name} through {relay}", {
    local: formatAddr(listener.addr),
    name,
    relay,
  });
  await acceptAll(listener, (local) => {
    connect({ relay, name, signal }).then(
      (remote) =>
        pipePair(local, new Source(local), remote, new Source(remote)),
      (e) => {
        log.warn("Cannot reach {name}: {error}", { name, error: e.message });
        local.close();
      },
    );
  }, signal);
}

async function main(): Promise<never> {
  const options = {
    ...COMMON_OPTIONS,
    relay: { type: "string" },
    name: { type: "string" },
    listen: { type: "string" },
    stdio: { type: "boolean", default: false },
  } as const;
  return await runMain(
    USAGE,
    () => parseFlags(Deno.args, options),
    async (v) => {
      for (const flag of ["relay", "name"]) {
        if (typeof v[flag] !== "string") {
          throw new UsageError(
            `--${flag} is required`,
          );
        }
      }
      if ((v.listen === undefined) === !v.stdio) {
        throw new UsageError("Give one of --listen or --stdio");
      }
      await setupLogging(v["log-level"] as string, v["log-format"] as string);
      const [relay, name] = [v.relay as string, v.name as string];
      if (v.stdio) return await stdio(relay, name);
      await forward(relay, name, v.listen as string);
    },
  );
}

if (import.meta.main) main();
