/**
 * The relay's settings, each declared once in {@linkcode SETTINGS}: where it
 * goes in `serveRelay`'s options, its flag (which is also its key in a
 * `--config` file), its type and unit, default, range, help text, and whether
 * it can change while the relay runs. `serveRelay` takes its defaults and
 * checks from here; the executable builds its flags, its config file keys and
 * its `--help` from here.
 *
 * Units: `seconds` are seconds for users (flags, config files) and
 * milliseconds in the library; `min`, `max` and `default` are always in the
 * library's unit.
 *
 * ## Adding a setting
 *
 * One entry in {@linkcode SETTINGS}, where `--help` should list it. Its flag,
 * its config file key, its `--help` line, its checks (errors naming the flag,
 * the file's key and line, or the option) and its handling on a reload (live
 * or needs a restart) follow from the entry. Then:
 *
 * - a `serveRelay` option (`library: true`, `key` its option path, say
 *   `"limits.maxPerName"`): add it to `RelayOptions` in relay.ts (a new limit
 *   to `Limits` and `DEFAULT_LIMITS` in `_guard.ts`) and give it to the engine
 *   in `serveRelay`, which gets it checked and defaulted;
 * - the executable's only (`library: false`, say `--admin`,
 *   `--admin-token-file`, `--cluster`): `main()` in relay.ts reads it from
 *   `relayOptions(...).cli[key]` (file names stay names there);
 * - `live: true`: a `serveRelay` option is applied by `Relay.reconfigure`
 *   (add it to `RelayChanges`; `Rendezvous.reconfigure` takes the engine's
 *   settings); one of the executable's needs an applier in `CLI_LIVE`
 *   (cli/_config.ts), which a test checks;
 * - a new kind of value: add it to {@linkcode SettingType}, and to
 *   `expects()` and `problem()` in `_options.ts`.
 *
 * @module
 */

import {
  DEFAULT_CLIENT_PORT,
  DEFAULT_DRAIN_TIMEOUT,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HEARTBEAT,
  DEFAULT_PEER_PORT,
  DEFAULT_SERVER_PORT,
  DEFAULT_WAIT,
} from "../protocol/_wire.ts";
import { DEFAULT_LIMITS } from "./_guard.ts";

/** How a setting's value is written and checked. */
export type SettingType =
  | "whole" // a whole number from min to max
  | "seconds" // seconds for users, ms in the library, from min to max (ms)
  | "boolean"
  | "string" // a non-empty string
  | "choice" // one of choices
  | "file" // a file name for users; its text (PEM) in the library
  | "dir"; // a folder name

/** A setting's value: in the user's units or the library's. */
export type SettingValue = string | number | boolean;

/** One setting of the relay. */
export interface Setting {
  /** The flag without `--`, and the setting's key in a config file. */
  readonly flag: string;
  /** The `serveRelay` option path (`"limits.maxPerIp"`), or the CLI's key. */
  readonly key: string;
  /** Whether it is a `serveRelay` option (else only the executable has it). */
  readonly library: boolean;
  readonly type: SettingType;
  /** Bounds of `whole` and `seconds` settings, in the library's unit. */
  readonly min?: number;
  readonly max?: number;
  /** The values of a `choice`. */
  readonly choices?: readonly string[];
  /** The library's default, in its unit; none if absent. */
  readonly default?: SettingValue;
  /** The executable's default, where it differs from the library's. */
  readonly cliDefault?: SettingValue;
  /** The default as `--help` shows it, where the value alone would mislead. */
  readonly defaultText?: string;
  /** The flag's argument in `--help` (`PORT`, `N`). */
  readonly arg?: string;
  /** `--help`'s text, without the default. */
  readonly help: string;
  /** Changes while the relay runs (a reload); else it needs a restart. */
  readonly live: boolean;
}

/** Levels of the logs, least severe first. */
export const LOG_LEVELS = [
  "trace",
  "debug",
  "info",
  "warning",
  "error",
  "fatal",
] as const;

const SECONDS = { type: "seconds", min: 0, max: 1e10, arg: "SECONDS" } as const;
const COUNT = { type: "whole", min: 1, max: 1e7, arg: "N" } as const;
const PORT = { type: "whole", min: 0, max: 65535, arg: "PORT" } as const;

/** Every setting of the relay, in `--help`'s order. */
export const SETTINGS: readonly Setting[] = [
  {
    flag: "host",
    key: "hostname",
    library: true,
    type: "string",
    default: "0.0.0.0",
    arg: "HOST",
    help: "address to listen on",
    live: false,
  },
  {
    flag: "server-port",
    key: "serverPort",
    library: true,
    ...PORT,
    default: DEFAULT_SERVER_PORT,
    help: "port for servers; 0 picks a free one",
    live: false,
  },
  {
    flag: "client-port",
    key: "clientPort",
    library: true,
    ...PORT,
    default: DEFAULT_CLIENT_PORT,
    help: "port for clients; 0 picks a free one",
    live: false,
  },
  {
    flag: "wait",
    key: "wait",
    library: true,
    ...SECONDS,
    default: DEFAULT_WAIT,
    help: "how long a client waits for a server of a reserved name " +
      "before OFFLINE",
    live: false,
  },
  {
    flag: "handshake-timeout",
    key: "handshakeTimeout",
    library: true,
    ...SECONDS,
    default: DEFAULT_HANDSHAKE_TIMEOUT,
    help: "time allowed for a handshake",
    live: true,
  },
  {
    flag: "drain-timeout",
    key: "drainTimeout",
    library: true,
    ...SECONDS,
    default: DEFAULT_DRAIN_TIMEOUT,
    help: "on SIGINT/SIGTERM, time active pairs get to finish",
    live: true,
  },
  {
    flag: "heartbeat",
    key: "heartbeat",
    library: true,
    ...SECONDS,
    min: 1,
    default: DEFAULT_HEARTBEAT,
    help: "how often parked v2 connections are probed",
    live: false,
  },
  {
    flag: "data",
    key: "data",
    library: false,
    type: "dir",
    arg: "DIR",
    help: "credentials store of owned names (names.json); its names are " +
      "reloaded on change and on SIGHUP",
    live: false,
  },
  {
    flag: "open-registration",
    key: "openRegistration",
    library: true,
    type: "boolean",
    default: false,
    help: "the first v2 RESERVE of a free name owns it",
    live: false,
  },
  {
    flag: "tls-cert",
    key: "tls.cert",
    library: true,
    type: "file",
    arg: "FILE",
    help: "serve both ports over TLS with this certificate (PEM)",
    live: false,
  },
  {
    flag: "tls-key",
    key: "tls.key",
    library: true,
    type: "file",
    arg: "FILE",
    help: "... and this private key (PEM)",
    live: false,
  },
  {
    flag: "max-connections",
    key: "limits.maxConnections",
    library: true,
    ...COUNT,
    default: DEFAULT_LIMITS.maxConnections,
    defaultText:
      `the open-file limit less 100, here ${DEFAULT_LIMITS.maxConnections}`,
    help: "open connections in all",
    live: true,
  },
  {
    flag: "max-per-ip",
    key: "limits.maxPerIp",
    library: true,
    ...COUNT,
    default: DEFAULT_LIMITS.maxPerIp,
    help: "unpaired connections per source IP",
    live: true,
  },
  {
    flag: "max-parked-per-name",
    key: "limits.maxParkedPerName",
    library: true,
    ...COUNT,
    default: DEFAULT_LIMITS.maxParkedPerName,
    help: "parked connections per name",
    live: true,
  },
  {
    flag: "max-failed-proofs",
    key: "limits.maxFailedProofs",
    library: true,
    ...COUNT,
    default: DEFAULT_LIMITS.maxFailedProofs,
    help: "failed proofs per source IP per minute",
    live: true,
  },
  {
    flag: "max-names",
    key: "limits.maxNames",
    library: true,
    ...COUNT,
    max: 1e9,
    default: DEFAULT_LIMITS.maxNames,
    help: "names reserved at once that nobody owns (with " +
      "--open-registration, the owned ones count too)",
    live: true,
  },
  {
    flag: "max-registrations-per-ip",
    key: "limits.maxRegistrationsPerIp",
    library: true,
    ...COUNT,
    default: DEFAULT_LIMITS.maxRegistrationsPerIp,
    help: "names one source IP may register per hour with " +
      "--open-registration",
    live: true,
  },
  {
    flag: "limit-loopback",
    key: "limits.limitLoopback",
    library: true,
    type: "boolean",
    default: DEFAULT_LIMITS.limitLoopback,
    help: "hold loopback peers to the per-IP and per-name limits too " +
      "(by default only to --max-connections)",
    live: true,
  },
  {
    flag: "data-path",
    key: "dataPath",
    library: true,
    type: "choice",
    choices: ["loop", "streams"],
    default: "loop",
    arg: "loop|streams",
    help: "how bytes are copied: read/write loops, or pipeTo over Web " +
      "Streams (for benchmarks)",
    live: false,
  },
  {
    flag: "reclaim",
    key: "reclaimMemory",
    library: true,
    type: "boolean",
    default: false,
    cliDefault: true,
    help: "give memory back to the system when the relay goes quiet after " +
      "a busy spell (--no-reclaim keeps it)",
    live: false,
  },
  {
    flag: "cluster",
    key: "cluster",
    library: false,
    type: "string",
    arg: "redis://HOST:PORT[/DB]",
    help: "join the cluster of relays sharing this Redis (owned names then " +
      "live in Redis, not --data)",
    live: false,
  },
  {
    flag: "node",
    key: "node",
    library: false,
    type: "string",
    arg: "NAME",
    help: "this node's name in the cluster (unique)",
    live: false,
  },
  {
    flag: "peer-port",
    key: "peerPort",
    library: false,
    ...PORT,
    default: DEFAULT_PEER_PORT,
    help: "port for the other nodes' links",
    live: false,
  },
  {
    flag: "advertise",
    key: "advertise",
    library: false,
    type: "string",
    arg: "HOST:PORT",
    help: "where other nodes reach the peer port",
    defaultText: "--host, or this host's name, and --peer-port",
    live: false,
  },
  {
    flag: "cluster-secret-file",
    key: "clusterSecretFile",
    library: false,
    type: "file",
    arg: "FILE",
    help: "the secret every node shares (16+ characters; or set " +
      "TCP_RELAY_CLUSTER_SECRET)",
    live: false,
  },
  {
    flag: "peer-tls",
    key: "peerTls",
    library: false,
    type: "boolean",
    default: false,
    help: "links between nodes over TLS with --tls-cert and --tls-key",
    live: false,
  },
  {
    flag: "peer-ca",
    key: "peerCa",
    library: false,
    type: "file",
    arg: "FILE",
    help: "... trusting this CA for the other nodes' peer ports",
    live: false,
  },
  {
    flag: "admin",
    key: "admin",
    library: false,
    type: "string",
    arg: "[HOST:]PORT",
    help: "serve /metrics, /healthz, /readyz, a live status page (/) and " +
      "the admin API (/api/) on HOST (default 127.0.0.1); off by default",
    live: false,
  },
  {
    flag: "admin-token-file",
    key: "adminTokenFile",
    library: false,
    type: "file",
    arg: "FILE",
    help: "the admin token (or set TCP_RELAY_ADMIN_TOKEN): every admin " +
      "request but /healthz must carry it as a bearer token; needed off " +
      "loopback; read again on SIGHUP",
    live: true,
  },
  {
    flag: "log-level",
    key: "logLevel",
    library: false,
    type: "choice",
    choices: LOG_LEVELS,
    default: "info",
    arg: "LEVEL",
    help: `the least severe records logged: ${LOG_LEVELS.join(", ")}`,
    live: true,
  },
  {
    flag: "log-format",
    key: "logFormat",
    library: false,
    type: "choice",
    choices: ["text", "json"],
    default: "text",
    arg: "text|json",
    help: "log records as text lines or JSON lines, on stderr",
    live: false,
  },
];

/** The setting of `flag`, or `undefined`. */
export function settingOf(flag: string): Setting | undefined {
  return SETTINGS.find((s) => s.flag === flag);
}
