/**
 * What the server's and the client's executables share: `--relay`,
 * `--name`, `--tls`/`--ca`, the logging flags, checked into helper options
 * (every bad value a usage error), and hints that name the flags.
 *
 * @module
 */

import { useFlagHints } from "../helpers/_hints.ts";
import {
  DEFAULT_CLIENT_PORT,
  DEFAULT_SERVER_PORT,
  formatAddr,
  nameProblem,
} from "../protocol/_wire.ts";
import {
  address,
  COMMON_OPTIONS,
  LOG_LEVELS_TEXT,
  setupLogging,
  TLS_OPTIONS,
  tlsOptions,
  UsageError,
} from "./_common.ts";

/** The flags of both executables. */
export const PEER_OPTIONS = {
  ...COMMON_OPTIONS,
  relay: { type: "string" },
  name: { type: "string" },
  ...TLS_OPTIONS,
} as const;

/** The `--help` lines of the flags both take after their own, aligned at `width`. */
export function peerUsage(width: number): string {
  const row = (flag: string, text: string) =>
    `  ${flag.padEnd(width - 2)}${text}`;
  return [
    row("--tls", "reach the relay over TLS"),
    row("--ca FILE", "trust this certificate (PEM) for TLS, as for a"),
    row("", "self-signed one (see the README's openssl recipe)"),
    row("--log-level LEVEL", `${LOG_LEVELS_TEXT}`),
    row("", "(default info)"),
    row("--log-format FORMAT", "text or json (default text)"),
    row("-h, --help", "show this help"),
    row("-V, --version", "show the version"),
  ].join("\n");
}

/** Fails with a usage error unless every flag of `flags` was given. */
export function required(v: Record<string, unknown>, ...flags: string[]) {
  for (const flag of flags) {
    if (typeof v[flag] !== "string") {
      throw new UsageError(`--${flag} is required`);
    }
  }
}

/** The helper options of `--relay`, `--name`, `--tls`, `--ca`, and the relay's `host:port`. */
export interface PeerOptions {
  relay: { hostname: string; port: number };
  name: string;
  tls?: boolean;
  caCerts?: string[];
}

/** Checks the shared flags of `role`'s executable; every bad value is a usage error. */
export function peerOptions(
  v: Record<string, unknown>,
  role: "server" | "client",
): PeerOptions & { where: string } {
  required(v, "relay", "name");
  const relay = address("relay", v.relay as string, {
    defaultPort: role === "server" ? DEFAULT_SERVER_PORT : DEFAULT_CLIENT_PORT,
  });
  const name = v.name as string;
  const bad = nameProblem(name);
  if (bad) throw new UsageError(`--name: ${bad}`);
  return {
    relay,
    where: formatAddr({ transport: "tcp", ...relay }),
    name,
    ...tlsOptions(v),
  };
}

/** Sets up logging from the flags (a bad level or format is a usage error); hints name the flags. */
export async function startLogging(v: Record<string, unknown>): Promise<void> {
  await setupLogging(v["log-level"] as string, v["log-format"] as string);
  useFlagHints();
}
