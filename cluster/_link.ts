/**
 * The node-to-node link: how the node that holds a client hands its request
 * to a node that holds a parked server for the name, one hop, over one TCP
 * (or TLS) connection that then carries the pair's bytes.
 *
 * ```text
 * holder of the server (peer port)      holder of the client
 * B> TCP-RELAY-PEER 1 <nonceB>
 *                                       A> FORWARD <name> <nodeA> <nonceA> <proofA>
 * B> PEER <proofB>                      (A checks B knows the secret too)
 * B> CONNECTED | OFFLINE | ERROR <CODE> <text>
 * (after CONNECTED: application data both ways, half-close carried)
 * ```
 *
 * `proofA = HMAC(secret, "tcp-relay/2 <nonceB> PEER-FORWARD <name> <nodeA> <nonceA>")`
 * and `proofB = HMAC(secret, "tcp-relay/2 <nonceA> PEER-ACCEPT <name> <nodeB>")`
 * (`protocol/_auth.ts`): a stranger on the peer port knows no secret, so it
 * can neither take a parked server nor pose as a node; a recorded exchange
 * is useless on the next connection (fresh nonces). A forwarded request is
 * only ever paired where it lands, never forwarded again.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { acceptAll } from "../datapath/_accept.ts";
import { newNonce, proof, verify } from "../protocol/_auth.ts";
import {
  formatAddr,
  line,
  LineReader,
  nameProblem,
  parseHostPort,
  Word,
  writeAll,
} from "../protocol/_wire.ts";
import { nodeNameProblem } from "./_registry.ts";

const log = getLogger(["tcp-relay", "cluster"]);

/** The first word of the peer port's greeting. */
export const PEER_GREETING = "TCP-RELAY-PEER 1";
export { DEFAULT_PEER_PORT } from "../protocol/_wire.ts";
/** How long a link handshake may take (ms). */
export const LINK_TIMEOUT = 3_000;

/** A link connection: plain TCP, or TLS. */
export type LinkConn = Deno.TcpConn | Deno.TlsConn;

/** TLS for the links: the peer port's certificate, and what dialers trust. */
export interface LinkTls {
  cert: string;
  key: string;
  /** Certificates (PEM) to trust for other nodes' peer ports. */
  caCerts?: string[];
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch {
    // closed already
  }
}

/** Runs `work` and closes `conn` if it takes longer than `ms`. */
async function bounded<T>(
  conn: LinkConn,
  ms: number,
  work: () => Promise<T>,
): Promise<T> {
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    closeQuietly(conn);
  }, ms);
  try {
    return await work();
  } catch (e) {
    throw late ? new Error("link handshake timed out") : e;
  } finally {
    clearTimeout(timer);
  }
}

/** A forwarded request accepted on the peer port, checked. */
export interface Forwarded {
  name: string;
  /** The node that forwarded it. */
  from: string;
  conn: LinkConn;
  /** Bytes read past the request. */
  rest: Uint8Array;
  /** `host:port` of the link's far end, for logs. */
  peer: string;
}

/** The peer port of this node: accepts forwarded requests from other nodes. */
export class LinkListener {
  readonly addr: Deno.NetAddr;
  #listener: Deno.Listener<LinkConn>;
  #stop = new AbortController();
  #open = new Set<LinkConn>();

  /**
   * Listens on `hostname:port`; `onForward` gets each authenticated request
   * and then owns its connection (it answers `CONNECTED` or a refusal).
   */
  constructor(
    options: {
      hostname: string;
      port: number;
      node: string;
      secret: string;
      tls?: LinkTls;
    },
    onForward: (req: Forwarded) => void,
  ) {
    const { hostname, port, tls } = options;
    this.#listener = tls
      ? Deno.listenTls({ hostname, port, cert: tls.cert, key: tls.key })
      : Deno.listen({ hostname, port });
    this.addr = this.#listener.addr as Deno.NetAddr;
    acceptAll(this.#listener, (conn) => {
      this.#open.add(conn);
      this.#handshake(conn, options.node, options.secret).then(
        (req) => {
          this.#open.delete(conn);
          if (req) onForward(req);
        },
        (e) => {
          this.#open.delete(conn);
          log.info("Refused link from {peer}: {reason}", {
            peer: safeAddr(conn),
            reason: (e as Error).message,
          });
          closeQuietly(conn);
        },
      );
    }, this.#stop.signal);
  }

  async #handshake(
    conn: LinkConn,
    node: string,
    secret: string,
  ): Promise<Forwarded | null> {
    const peer = safeAddr(conn);
    const nonce = newNonce();
    return await bounded(conn, LINK_TIMEOUT, async () => {
      await writeAll(conn, line(`${PEER_GREETING} ${nonce}`));
      const reader = new LineReader(conn);
      const request = await reader.readLine();
      if (request === null) return null;
      const [word, name, from, theirNonce, given, ...extra] = request.split(
        " ",
      );
      if (
        word !== "FORWARD" || extra.length || !name || nameProblem(name) ||
        !from || nodeNameProblem(from) || !/^[0-9a-f]{32}$/.test(theirNonce)
      ) {
        await writeAll(conn, line("ERROR PROTOCOL bad link request"));
        throw new Error("bad link request");
      }
      const what = `${name} ${from} ${theirNonce}`;
      if (!verify(secret, nonce, "PEER-FORWARD", what, given)) {
        await writeAll(conn, line("ERROR AUTH wrong cluster proof"));
        throw new Error(`wrong cluster proof for ${name}`);
      }
      const mine = proof(secret, theirNonce, "PEER-ACCEPT", `${name} ${node}`);
      await writeAll(conn, line(`PEER ${mine}`));
      return { name, from, conn, rest: reader.rest(), peer };
    });
  }

  /** Stops accepting and closes links still in their handshake. */
  close(): void {
    this.#stop.abort();
    closeQuietly(this.#listener);
    for (const c of this.#open) closeQuietly(c);
    this.#open.clear();
  }
}

function safeAddr(conn: Deno.Conn): string {
  try {
    return formatAddr(conn.remoteAddr);
  } catch {
    return "unknown";
  }
}

/** The answer of the far node to a forwarded request. */
export type LinkResult =
  | { paired: true; conn: LinkConn; rest: Uint8Array }
  | { paired: false; reason: string; unreachable: boolean };

/**
 * Forwards a request for `name` to the node `to` at `addr`: resolves with
 * the link connection once the far node paired it (`CONNECTED`), or why not.
 */
export async function forward(
  options: {
    addr: string;
    to: string;
    name: string;
    node: string;
    secret: string;
    tls?: LinkTls;
  },
): Promise<LinkResult> {
  const { addr, to, name, node, secret, tls } = options;
  let conn: LinkConn;
  try {
    const { hostname, port } = parseHostPort(addr);
    const dial = tls
      ? Deno.connectTls({ hostname, port, caCerts: tls.caCerts })
      : Deno.connect({ hostname, port });
    let timer: ReturnType<typeof setTimeout> | undefined;
    conn = await Promise.race([
      dial,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => {
          dial.then(closeQuietly, () => {});
          reject(new Error("timed out"));
        }, LINK_TIMEOUT)
      ),
    ]).finally(() => clearTimeout(timer));
    (conn as Deno.TcpConn).setNoDelay?.(true);
  } catch (e) {
    return {
      paired: false,
      reason: `cannot reach node ${to} at ${addr}: ${(e as Error).message}`,
      unreachable: true,
    };
  }
  try {
    return await bounded(conn, LINK_TIMEOUT, async () => {
      const reader = new LineReader(conn);
      const greeting = (await reader.readLine())?.split(" ");
      const theirNonce = greeting?.[2] ?? "";
      if (
        greeting?.slice(0, 2).join(" ") !== PEER_GREETING ||
        !/^[0-9a-f]{32}$/.test(theirNonce)
      ) {
        throw new Error(`node ${to} at ${addr} is not a relay's peer port`);
      }
      const nonce = newNonce();
      const what = `${name} ${node} ${nonce}`;
      const mine = proof(secret, theirNonce, "PEER-FORWARD", what);
      await writeAll(conn, line(`FORWARD ${what} ${mine}`));
      const accepted = (await reader.readLine())?.split(" ") ?? [];
      if (
        accepted[0] !== "PEER" ||
        !verify(secret, nonce, "PEER-ACCEPT", `${name} ${to}`, accepted[1])
      ) {
        throw new Error(
          `node ${to} at ${addr} refused the link or holds another secret`,
        );
      }
      const answer = await reader.readLine();
      if (answer !== Word.CONNECTED) {
        closeQuietly(conn);
        return {
          paired: false as const,
          reason: `node ${to} answered ${answer ?? "nothing"}`,
          unreachable: false,
        };
      }
      return { paired: true as const, conn, rest: reader.rest() };
    });
  } catch (e) {
    closeQuietly(conn);
    return { paired: false, reason: (e as Error).message, unreachable: true };
  }
}
