/**
 * The server's executable (`server.ts` when run): offers a name at a relay
 * and connects each client to a local TCP service. Loaded by `server.ts`'s
 * `main()` only, so that importing the library does not load it.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { listen } from "../server.ts";
import { DEFAULT_MAX_BACKOFF } from "../helpers/_listener.ts";
import { DEFAULT_MAX_POOL } from "../helpers/_demand.ts";
import { pipePair } from "../datapath/_pipe.ts";
import { Source } from "../datapath/_source.ts";
import { formatAddr } from "../protocol/_wire.ts";
import {
  address,
  integer,
  parseFlags,
  reason,
  runMain,
  seconds,
  stopSignal,
  UsageError,
} from "./_common.ts";
import {
  PEER_OPTIONS,
  peerOptions,
  peerUsage,
  required,
  startLogging,
} from "./_peer.ts";

const log = getLogger(["tcp-relay", "server"]);

const USAGE = `tcp-relay server: exposes a local TCP service through a relay

Usage: deno run -A jsr:@x/tcp-relay/server --relay HOST[:PORT] --name NAME --to HOST:PORT [options]
       deno run -A jsr:@x/tcp-relay/server --config services.toml
  from a checkout: deno run -A server.ts ... (or deno task server ...)

Options:
  --relay HOST[:PORT]     the relay's servers' port (default port 8010); or
                          several relays, a,b:8011,c: the pool is kept at
                          each, so losing one loses no service
  --config FILE           offer every [[service]] of a TOML file (see the
                          README): it takes the place of every flag but the
                          two logging ones
  --name NAME             the name clients ask for
  --to HOST:PORT          the local service each client is connected to
  --pool N                connections kept waiting at the relay (default 2)
  --max-pool N            when a crowd comes, up to N connections parked or
                          being opened at once, back to --pool once it is
                          gone; N = --pool: a fixed pool (default ${DEFAULT_MAX_POOL},
                          or --pool if more)
  --max-backoff SECONDS   longest pause between attempts to reach a relay
                          that is away: a restarted relay is found again
                          within about this long (default ${
  DEFAULT_MAX_BACKOFF / 1000
})
  --secret SECRET         the owner's secret of an owned name (protocol v2);
                          or set TCP_RELAY_SECRET, which ps does not show
${peerUsage(26)}`;

const OPTIONS = {
  ...PEER_OPTIONS,
  to: { type: "string" },
  pool: { type: "string", default: "2" },
  "max-pool": { type: "string" },
  "max-backoff": {
    type: "string",
    default: String(DEFAULT_MAX_BACKOFF / 1000),
  },
  secret: { type: "string" },
  config: { type: "string" },
} as const;

/**
 * Warns when nothing answers at `--to` (the server still starts: the
 * service may come up later); `service` names the service of a config file.
 */
export async function probe(
  to: { hostname: string; port: number },
  at: string,
  service?: string,
) {
  try {
    const conn = await Deno.connect(to);
    conn.close();
  } catch (e) {
    log.warn(
      service === undefined
        ? "Nothing answers at --to {to} ({error}): each client will be closed until it does"
        : "Service {name}: nothing answers at to {to} ({error}): each client will be closed until it does",
      { to: at, error: reason(e), name: service },
    );
  }
}

/** Connects a client to the local service, or closes it; `service` as for {@linkcode probe}. */
export function serve(
  conn: Deno.Conn,
  to: { hostname: string; port: number },
  service?: string,
) {
  Deno.connect(to).then((local) => {
    local.setNoDelay(true);
    log.info(
      service === undefined
        ? "Client connected to {to}"
        : "Client of {name} connected to {to}",
      { to: formatAddr(local.remoteAddr), name: service },
    );
    return pipePair(conn, new Source(conn), local, new Source(local));
  }, (e) => {
    log.warn(
      service === undefined
        ? "Cannot reach --to {to} ({error}): client closed"
        : "Service {name}: cannot reach to {to} ({error}): client closed",
      {
        to: formatAddr({ transport: "tcp", ...to }),
        error: reason(e),
        name: service,
      },
    );
    conn.close();
  });
}

/** Runs the server's executable with `args`, and exits. */
export function serverMain(args: string[]): Promise<never> {
  return runMain(USAGE, () => parseFlags(args, OPTIONS), async (v) => {
    if (v.config !== undefined) {
      const { runServices } = await import("./_services.ts");
      return await runServices(v, args, OPTIONS);
    }
    const { where, ...peer } = peerOptions(v, "server");
    required(v, "to");
    const to = address("to", v.to as string);
    const pool = integer("pool", v.pool as string, 1, 1000);
    const maxPool = v["max-pool"] === undefined
      ? Math.max(DEFAULT_MAX_POOL, pool)
      : integer("max-pool", v["max-pool"] as string, pool, 1000);
    const maxBackoff = seconds("max-backoff", v["max-backoff"] as string);
    if (maxBackoff < 1) {
      throw new UsageError(
        `--max-backoff takes a number of seconds above 0, not "${
          v["max-backoff"]
        }"`,
      );
    }
    await startLogging(v);
    const at = formatAddr({ transport: "tcp", ...to });
    await probe(to, at);
    const listener = listen({
      ...peer,
      pool,
      maxPool,
      maxBackoff,
      minBackoff: Math.min(100, maxBackoff),
      secret: (v.secret as string | undefined) ??
        Deno.env.get("TCP_RELAY_SECRET"),
      signal: stopSignal(),
    });
    log.info("Offering {name} at {relay}, forwarding to {to}", {
      name: peer.name,
      relay: where,
      to: at,
    });
    for await (const conn of listener) serve(conn, to);
    log.info("Stopped");
  });
}
