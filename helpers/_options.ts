/**
 * What every helper takes: the relay (one or a list), the name, TLS, a
 * timeout and a signal, with their checks (TypeError/RangeError at once).
 *
 * @module
 */

import {
  DEFAULT_CLIENT_PORT,
  DEFAULT_SERVER_PORT,
  nameProblem,
  parseHostPort,
} from "../protocol/_wire.ts";
import { distinct } from "./_multi.ts";

/** Where a relay is: `HOST`, `HOST:PORT` or `[::1]:PORT`, or an address. */
export type RelayAddress = string | Deno.NetAddr | {
  hostname: string;
  port: number;
};

/** A relay's address, parsed. */
export interface HostPort {
  hostname: string;
  port: number;
}

/** Options every helper takes. */
export interface HelperOptions {
  /**
   * The relay, as `HOST` or `HOST:PORT` (`[::1]:PORT` for IPv6), or as an
   * address (`{ hostname, port }`, such as a `Deno.NetAddr`). The port
   * defaults to 8010 for servers and 9010 for clients.
   *
   * Or several relays, as a list: `listen()` keeps its pool parked at each
   * of them; `connect()` (and `accept()`, `reserve()`, `release()`) tries
   * them in order, moving to the next one when a relay cannot be reached
   * (or, for `connect()`, answers `NOEXIST`, `OFFLINE` or `LIMIT`).
   */
  relay: RelayAddress | RelayAddress[];
  /** The name offered or asked for: 1 to 200 visible ASCII characters, no spaces. */
  name: string;
  /** Connect to the relay over TLS. Default `false`. */
  tls?: boolean;
  /**
   * Certificates to trust for TLS besides the system's, as PEM text (the
   * contents of the files, not their paths). Default none.
   */
  caCerts?: string[];
  /** Aborting it closes the connection and rejects with `signal.reason`. */
  signal?: AbortSignal;
  /**
   * How long the dial may take, in ms: the TCP connect, the TLS handshake
   * and the relay's answers (a server waiting to be paired then waits
   * without limit, watched by heartbeats); with several relays, for each
   * relay tried. Default `15000`.
   */
  timeout?: number;
}

/** A relay connection: plain TCP, or TLS. */
export type Conn = Deno.TcpConn | Deno.TlsConn;

/** The connection a helper resolves with: `Deno.TlsConn` with `tls: true`, else `Deno.TcpConn`. */
export type RelayConn<O extends { tls?: boolean }> = O extends { tls: true }
  ? Deno.TlsConn
  : Deno.TcpConn;

/** The relay's address from `relay`; TypeError/RangeError when bad. */
export function relayAddr(
  relay: RelayAddress,
  role: "server" | "client",
): HostPort {
  if (typeof relay === "string") {
    const addr = parseHostPort(
      relay,
      role === "server" ? DEFAULT_SERVER_PORT : DEFAULT_CLIENT_PORT,
    );
    if (addr.port === 0) {
      throw new RangeError(`options.relay has port 0: "${relay}"`);
    }
    return addr;
  }
  if (typeof relay?.hostname !== "string" || relay.port === undefined) {
    throw new TypeError(
      "options.relay must be a string like host:port or a { hostname, port }",
    );
  }
  if (!Number.isInteger(relay.port) || relay.port < 1 || relay.port > 65535) {
    throw new RangeError(
      `options.relay.port must be a whole number from 1 to 65535, not ${relay.port}`,
    );
  }
  return { hostname: relay.hostname || "127.0.0.1", port: relay.port };
}

/**
 * Checks the options every helper takes and returns the relays' addresses
 * (one, or those of a list, in its order); TypeError/RangeError when bad.
 */
export function checkOptions(
  options: HelperOptions,
  role: "server" | "client",
): HostPort[] {
  if (options?.relay === undefined || options.relay === null) {
    throw new TypeError(
      "options.relay must be a string like host:port or a { hostname, port }, or a list of them",
    );
  }
  const list = Array.isArray(options.relay) ? options.relay : [options.relay];
  if (list.length === 0) throw new RangeError("options.relay lists no relay");
  const addrs = distinct(list.map((relay) => relayAddr(relay, role)));
  if (typeof options.name !== "string") {
    throw new TypeError("options.name must be a string");
  }
  const problem = nameProblem(options.name);
  if (problem) throw new RangeError(`Invalid name: ${problem}`);
  if (
    options.timeout !== undefined &&
    !(typeof options.timeout === "number" && options.timeout > 0)
  ) throw new RangeError("options.timeout must be a number of ms > 0");
  if (
    options.caCerts !== undefined &&
    !(Array.isArray(options.caCerts) &&
      options.caCerts.every((c) => typeof c === "string"))
  ) throw new TypeError("options.caCerts must be an array of PEM strings");
  return addrs;
}
