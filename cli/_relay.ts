/**
 * The relay executable's command line: its flags, and the `names`
 * subcommand that manages the credentials store.
 *
 * @module
 */

import {
  DEFAULT_CLIENT_PORT,
  DEFAULT_DRAIN_TIMEOUT,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HEARTBEAT,
  DEFAULT_SERVER_PORT,
  DEFAULT_WAIT,
} from "../protocol/_wire.ts";
import { DEFAULT_LIMITS } from "../engine/_guard.ts";
import {
  COMMON_OPTIONS,
  integer,
  parseFlags,
  seconds,
  UsageError,
} from "./_common.ts";
import { DEFAULT_PEER_PORT } from "../cluster/_link.ts";
import { clusterFlags } from "../cluster/_flags.ts";

/** The relay's `--help`. */
export const RELAY_USAGE =
  `tcp-relay: pairs servers behind NAT with their clients

Usage: deno run -A jsr:@x/tcp-relay/relay [options]
       deno run -A jsr:@x/tcp-relay/relay names (add NAME [--private] | remove NAME | list) --data DIR

Options:
  --host HOST                 address to listen on (default 0.0.0.0)
  --server-port PORT          port for servers (default ${DEFAULT_SERVER_PORT})
  --client-port PORT          port for clients (default ${DEFAULT_CLIENT_PORT})
  --wait SECONDS              how long a client waits for a server of a reserved
                              name before OFFLINE (default ${
    DEFAULT_WAIT / 1000
  })
  --handshake-timeout SECONDS time allowed for a handshake (default ${
    DEFAULT_HANDSHAKE_TIMEOUT / 1000
  })
  --drain-timeout SECONDS     on SIGINT/SIGTERM, time active pairs get to finish
                              (default ${DEFAULT_DRAIN_TIMEOUT / 1000})
  --heartbeat SECONDS         how often parked v2 connections are probed
                              (default ${DEFAULT_HEARTBEAT / 1000})
  --data DIR                  credentials store of owned names (names.json);
                              reloaded on change and on SIGHUP
  --open-registration         the first v2 RESERVE of a free name owns it
  --tls-cert FILE             serve both ports over TLS with this certificate
  --tls-key FILE              ... and this private key (PEM)
  --max-connections N         open connections in all (default ${DEFAULT_LIMITS.maxConnections})
  --max-per-ip N              unpaired connections per source IP (default ${DEFAULT_LIMITS.maxPerIp})
  --max-parked-per-name N     parked connections per name (default ${DEFAULT_LIMITS.maxParkedPerName})
  --max-failed-proofs N       failed proofs per source IP per minute (default ${DEFAULT_LIMITS.maxFailedProofs})
  --max-names N               names reserved at once that nobody owns
                              (default ${DEFAULT_LIMITS.maxNames})
  --limit-loopback            hold loopback peers to the per-IP and per-name
                              limits too (by default only to --max-connections)
  --data-path loop|streams    how bytes are copied: read/write loops (default)
                              or pipeTo over Web Streams (for benchmarks)
  --no-reclaim                keep memory after busy spells (by default a
                              quiet relay gives it back to the system)
  --cluster redis://HOST:PORT[/DB]
                              join the cluster of relays sharing this Redis
                              (owned names then live in Redis, not --data)
  --node NAME                 this node's name in the cluster (unique)
  --peer-port PORT            port for the other nodes' links (default ${DEFAULT_PEER_PORT})
  --advertise HOST:PORT       where other nodes reach the peer port
                              (default: --host, or this host's name, and --peer-port)
  --cluster-secret-file FILE  the secret every node shares (16+ characters;
                              or TCP_RELAY_CLUSTER_SECRET)
  --peer-tls                  links over TLS with --tls-cert/--tls-key
  --peer-ca FILE              ... trusting this CA for other nodes' peer ports
  --log-level LEVEL           trace, debug, info, warning, error (default info)
  --log-format FORMAT         text or json (default text)
  -h, --help                  show this help
  -V, --version               show the version`;

const OPTIONS = {
  ...COMMON_OPTIONS,
  host: { type: "string", default: "0.0.0.0" },
  "server-port": { type: "string", default: String(DEFAULT_SERVER_PORT) },
  "client-port": { type: "string", default: String(DEFAULT_CLIENT_PORT) },
  wait: { type: "string", default: String(DEFAULT_WAIT / 1000) },
  "handshake-timeout": {
    type: "string",
    default: String(DEFAULT_HANDSHAKE_TIMEOUT / 1000),
  },
  "drain-timeout": {
    type: "string",
    default: String(DEFAULT_DRAIN_TIMEOUT / 1000),
  },
  heartbeat: { type: "string", default: String(DEFAULT_HEARTBEAT / 1000) },
  data: { type: "string" },
  "open-registration": { type: "boolean", default: false },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "max-connections": {
    type: "string",
    default: String(DEFAULT_LIMITS.maxConnections),
  },
  "max-per-ip": { type: "string", default: String(DEFAULT_LIMITS.maxPerIp) },
  "max-parked-per-name": {
    type: "string",
    default: String(DEFAULT_LIMITS.maxParkedPerName),
  },
  "max-failed-proofs": {
    type: "string",
    default: String(DEFAULT_LIMITS.maxFailedProofs),
  },
  "max-names": { type: "string", default: String(DEFAULT_LIMITS.maxNames) },
  "limit-loopback": { type: "boolean", default: false },
  "data-path": { type: "string", default: "loop" },
  reclaim: { type: "boolean", default: true },
  cluster: { type: "string" },
  node: { type: "string" },
  "peer-port": { type: "string", default: String(DEFAULT_PEER_PORT) },
  advertise: { type: "string" },
  "cluster-secret-file": { type: "string" },
  "peer-tls": { type: "boolean", default: false },
  "peer-ca": { type: "string" },
} as const;

function readFlagFile(flag: string, path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    throw new UsageError(
      `--${flag}: cannot read ${path}: ${(e as Error).message}`,
    );
  }
}

/** The relay's flags as `serveRelay` options, plus `data`, `logLevel`, `logFormat`, `help`, `version`. */
export function parseRelayFlags(args: string[]): Record<string, unknown> {
  const v = parseFlags(args, OPTIONS);
  if (v.help || v.version) return v;
  if (!!v["tls-cert"] !== !!v["tls-key"]) {
    throw new UsageError("--tls-cert and --tls-key go together");
  }
  if (v["data-path"] !== "loop" && v["data-path"] !== "streams") {
    throw new UsageError(
      `--data-path takes loop or streams, not "${v["data-path"]}"`,
    );
  }
  const n = (flag: keyof typeof OPTIONS, min: number, max: number) =>
    integer(flag, v[flag] as string, min, max);
  return {
    hostname: v.host,
    serverPort: n("server-port", 0, 65535),
    clientPort: n("client-port", 0, 65535),
    wait: seconds("wait", v.wait),
    handshakeTimeout: seconds("handshake-timeout", v["handshake-timeout"]),
    drainTimeout: seconds("drain-timeout", v["drain-timeout"]),
    heartbeat: Math.max(1, seconds("heartbeat", v.heartbeat)),
    data: v.data,
    openRegistration: v["open-registration"],
    tls: v["tls-cert"]
      ? {
        cert: readFlagFile("tls-cert", v["tls-cert"]),
        key: readFlagFile("tls-key", v["tls-key"]!),
      }
      : undefined,
    limits: {
      maxConnections: n("max-connections", 1, 1e7),
      maxPerIp: n("max-per-ip", 1, 1e7),
      maxParkedPerName: n("max-parked-per-name", 1, 1e7),
      maxFailedProofs: n("max-failed-proofs", 1, 1e7),
      maxNames: n("max-names", 1, 1e9),
      limitLoopback: v["limit-loopback"],
    },
    dataPath: v["data-path"],
    reclaimMemory: v.reclaim,
    cluster: clusterFlags(v, readFlagFile),
    logLevel: v["log-level"],
    logFormat: v["log-format"],
  };
}
