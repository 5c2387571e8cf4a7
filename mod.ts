/**
 * @x/tcp-relay: reach a machine behind NAT through a relay that both sides
 * dial out to. The server offers a name, the client asks for it, the relay
 * pairs the two connections; both get a normal `Deno.TcpConn`.
 *
 * Wire-compatible with the seed Ruby-TCP-Relay (protocol v1), with FIFO
 * pairing, dead-connection detection, bounded handshakes and half-close.
 *
 * This module holds the helpers (the server's and the client's side) and
 * loads nothing of the relay; the relay itself is
 * `import { serveRelay } from "jsr:@x/tcp-relay/relay"`.
 *
 * @example A server and a client meeting at a relay
 * ```ts
 * import { accept, connect } from "jsr:@x/tcp-relay";
 *
 * // behind NAT
 * const served = accept({ relay: "relay.example.com", name: "echo" })
 *   .then((conn) => conn.readable.pipeTo(conn.writable));
 * // anywhere
 * const conn = await connect({ relay: "relay.example.com", name: "echo" });
 * await conn.write(new TextEncoder().encode("ping"));
 * conn.close();
 * await served.catch(() => {});
 * ```
 *
 * @module
 */

export {
  accept,
  type HelperOptions,
  listen,
  type ListenerState,
  type ListenOptions,
  type RelayAddress,
  type RelayConn,
  RelayListener,
  release,
  reserve,
  type ReserveResult,
  type ServerOptions,
} from "./server.ts";
export { type ClientOptions, connect } from "./client.ts";
export { RelayError, type RelayErrorCode } from "./protocol/_errors.ts";
// The relay's types only: its code (`serveRelay`) is in "jsr:@x/tcp-relay/relay",
// so that importing the helpers does not load the relay.
export type {
  Limits,
  NameOwners,
  Relay,
  RelayOptions,
  RelayStats,
} from "./relay.ts";
