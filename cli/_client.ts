/**
 * The client's executable (`client.ts` when run): forwards a local port, or
 * stdin/stdout, to the server behind a name. Loaded by `client.ts`'s
 * `main()` only, so that importing the library does not load it.
 *
 * Through a seed (v1-only) relay, which closes both sides as soon as one side
 * ends, our end of input is not passed on as a half-close (the seed would
 * drop the answer): the connection stays open until the server's side ends,
 * or until the server has been silent for `--linger` seconds, as socat's
 * `-t` does.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { type ClientOptions, connect } from "../client.ts";
import { isV1Session } from "../helpers/_dial.ts";
import { type Duplex, pipePair, pipeStream } from "../datapath/_pipe.ts";
import { Source } from "../datapath/_source.ts";
import { acceptAll, cannotListen } from "../datapath/_accept.ts";
import { formatAddr } from "../protocol/_wire.ts";
import {
  address,
  parseFlags,
  runMain,
  seconds,
  stopSignal,
  UsageError,
} from "./_common.ts";
import { PEER_OPTIONS, peerOptions, peerUsage, startLogging } from "./_peer.ts";

const log = getLogger(["tcp-relay", "client"]);

/** How long the server may stay silent after our end of input, through a seed relay (s). */
export const DEFAULT_LINGER = 1;

const USAGE = `tcp-relay client: reaches a server through a relay

Usage: deno run -A jsr:@x/tcp-relay/client --relay HOST[:PORT] --name NAME (--listen [HOST:]PORT | --stdio)
       deno run -A jsr:@x/tcp-relay/client --config forwards.toml
  from a checkout: deno run -A client.ts ... (or deno task client ...)

Options:
  --relay HOST[:PORT]     the relay's clients' port (default port 9010); or
                          several relays, a,b:9011,c: tried in order, the
                          next one when a relay is down or has no server
  --config FILE           forward every [[forward]] of a TOML file (see the
                          README): it takes the place of every flag but the
                          two logging ones
  --name NAME             the name of the server
  --listen [HOST:]PORT    forward each connection to this local port
                          (host default 127.0.0.1) to the server
  --stdio                 connect once and pipe stdin/stdout, for example
                          ssh -o ProxyCommand="... --name %h --stdio" user@NAME
  --key KEY               the clients' key of a private name (protocol v2);
                          or set TCP_RELAY_KEY, which ps does not show
  --linger SECONDS        through a seed (v1-only) relay, which closes both
                          sides when one ends: after our end of input, wait
                          until the server ends or is silent this long
                          (default ${DEFAULT_LINGER})
${peerUsage(26)}`;

const OPTIONS = {
  ...PEER_OPTIONS,
  listen: { type: "string" },
  stdio: { type: "boolean", default: false },
  key: { type: "string" },
  linger: { type: "string", default: String(DEFAULT_LINGER) },
  config: { type: "string" },
} as const;

/** The relay side of a pair, counting the server's bytes, lingering through a seed relay. */
class Remote implements Duplex {
  /** Bytes the server sent. */
  received = 0;
  /** Whether the linger ran out (we closed, not the server). */
  lingered = false;
  #conn: Deno.Conn;
  #linger: number | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lingering = false;

  constructor(conn: Deno.Conn, linger: number) {
    this.#conn = conn;
    this.#linger = isV1Session(conn) ? linger : undefined;
  }

  async read(p: Uint8Array): Promise<number | null> {
    const n = await this.#conn.read(p);
    if (n) {
      this.received += n;
      if (this.#lingering) this.#wait();
    }
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    return this.#conn.write(p);
  }

  /** A half-close, or, through a seed relay, the start of the linger. */
  async closeWrite(): Promise<void> {
    if (this.#linger === undefined) return await this.#conn.closeWrite();
    this.#lingering = true;
    this.#wait();
  }

  #wait(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.lingered = true;
      this.close();
    }, this.#linger);
  }

  close(): void {
    clearTimeout(this.#timer);
    try {
      this.#conn.close();
    } catch {
      // closed already
    }
  }
}

/** The message for a server that closed before its first byte. */
function silent(name: string): string {
  return `The server of "${name}" closed the connection before sending anything (is the service behind server.ts --to up?)`;
}

async function stdio(options: ClientOptions, linger: number): Promise<number> {
  const remote = new Remote(await connect(options), linger);
  const stdout = {
    write: (p: Uint8Array) => Deno.stdout.write(p),
    closeWrite: () => Promise.resolve(),
  };
  // Our end of stdin becomes a half-close (through a seed relay: the linger);
  // the server's end ends the process.
  pipeStream(new Source(Deno.stdin), remote).catch(() => {});
  await pipeStream(new Source(remote), stdout).catch(() => {});
  remote.close();
  if (remote.received === 0 && !remote.lingered) {
    throw new Error(silent(options.name));
  }
  return 0;
}

/**
 * Forwards each connection to `at` to the server of `options.name` until
 * `signal`; throws at once if it cannot listen (`Cannot listen on …`).
 */
export async function forward(
  options: ClientOptions,
  where: string,
  at: { hostname: string; port: number },
  linger: number,
  signal: AbortSignal,
): Promise<void> {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen(at);
  } catch (e) {
    throw cannotListen(e, at);
  }
  const stop = () => listener.close();
  signal.addEventListener("abort", stop);
  const { name } = options;
  log.info("Forwarding {local} to {name} through {relay}", {
    local: formatAddr(listener.addr),
    name,
    relay: where,
  });
  await acceptAll(listener, (local) => {
    connect({ ...options, signal }).then(async (conn) => {
      const remote = new Remote(conn, linger);
      await pipePair(local, new Source(local), remote, new Source(remote));
      if (remote.received === 0 && !remote.lingered) log.warn(silent(name));
    }, (e) => {
      log.warn("Cannot reach {name}: {error}", { name, error: e.message });
      local.close();
    });
  }, signal);
  signal.removeEventListener("abort", stop);
}

/** Runs the client's executable with `args`, and exits. */
export function clientMain(args: string[]): Promise<never> {
  return runMain(USAGE, () => parseFlags(args, OPTIONS), async (v) => {
    if (v.config !== undefined) {
      const { runForwards } = await import("./_forwards.ts");
      return await runForwards(v, args, OPTIONS);
    }
    const { where, ...peer } = peerOptions(v, "client");
    if ((v.listen === undefined) === !v.stdio) {
      throw new UsageError("Give one of --listen or --stdio");
    }
    const at = v.listen === undefined
      ? undefined
      : address("listen", v.listen as string, { hostOptional: true });
    const linger = seconds("linger", v.linger as string);
    await startLogging(v);
    const options: ClientOptions = {
      ...peer,
      key: (v.key as string | undefined) ?? Deno.env.get("TCP_RELAY_KEY"),
    };
    if (at) return await forward(options, where, at, linger, stopSignal());
    return await stdio(options, linger);
  });
}
