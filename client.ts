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
import {
  type HelperOptions,
  type RelayConn,
  withRelay,
} from "./helpers/_dial.ts";
import { proof } from "./protocol/_auth.ts";
import {
  formatAddr,
  nameProblem,
  parseHostPort,
  Word,
} from "./protocol/_wire.ts";
import { pipePair, pipeStream } from "./datapath/_pipe.ts";
import { Source } from "./datapath/_source.ts";
import { acceptAll } from "./datapath/_accept.ts";
import {
  COMMON_OPTIONS,
  parseFlags,
  runMain,
  setupLogging,
  stopSignal,
  TLS_OPTIONS,
  tlsOptions,
  UsageError,
} from "./cli/_common.ts";

export type { HelperOptions, RelayConn } from "./helpers/_dial.ts";

const log = getLogger(["tcp-relay", "client"]);

/** Options of {@linkcode connect}. */
export interface ClientOptions extends HelperOptions {
  /** The clients' key of a private name (protocol v2). */
  key?: string;
}

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
export function connect<O extends ClientOptions>(
  options: O,
): Promise<RelayConn<O>> {
  return withRelay(options, "client", async (s) => {
    const { name, key } = options;
    await s.write(
      s.nonce !== undefined && key
        ? `${name} ${proof(key, s.nonce, "CLIENT", name)}`
        : name,
    );
    await s.expect(Word.CONNECTED);
    if ("setNoDelay" in s.conn) s.conn.setNoDelay(true);
    return s.conn as RelayConn<O>;
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
  --key KEY               the clients' key of a private name (protocol v2);
                          or set TCP_RELAY_KEY, which ps does not show
  --tls                   reach the relay over TLS
  --ca FILE               trust this certificate (PEM) for TLS
  --log-level LEVEL       trace, debug, info, warning, error (default info)
  --log-format FORMAT     text or json (default text)
  -h, --help              show this help
  -V, --version           show the version`;

async function stdio(options: ClientOptions): Promise<number> {
  const conn = await connect(options);
  const stdout = {
    write: (p: Uint8Array) => Deno.stdout.write(p),
    closeWrite: () => Promise.resolve(),
  };
  // Our end of stdin becomes a half-close; the server's end ends the process.
  pipeStream(new Source(Deno.stdin), conn).catch(() => {});
  await pipeStream(new Source(conn), stdout).catch(() => {});
  return 0;
}

async function forward(options: ClientOptions, at: string): Promise<void> {
  const { relay, name } = options;
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
    connect({ ...options, signal }).then(
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
    key: { type: "string" },
    ...TLS_OPTIONS,
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
      const bad = nameProblem(v.name as string);
      if (bad) throw new UsageError(`--name: ${bad}`);
      if ((v.listen === undefined) === !v.stdio) {
        throw new UsageError("Give one of --listen or --stdio");
      }
      await setupLogging(v["log-level"] as string, v["log-format"] as string);
      const options: ClientOptions = {
        relay: v.relay as string,
        name: v.name as string,
        key: (v.key as string | undefined) ?? Deno.env.get("TCP_RELAY_KEY"),
        ...tlsOptions(v),
      };
      if (v.stdio) return await stdio(options);
      await forward(options, v.listen as string);
    },
  );
}

if (import.meta.main) main();
