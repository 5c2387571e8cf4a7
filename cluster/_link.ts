/**
 * The node-to-node link: how the node that holds a client hands its request
 * to a node that holds a parked server for the name, one hop, over one TCP
 * (or TLS) connection that then carries the pair's bytes.
 *
 * A link is opened (`cluster/_dial.ts`) and authenticated both ways ahead of
 * need (the pool of `cluster/_pool.ts` keeps a few idle per node), then
 * carries exactly one request and becomes the pair's connection:
 *
 * ```text
 * node B, the peer port                  node A, which dials
 * B> TCP-RELAY-PEER 2 <nonceB>
 *                                        A> LINK <nodeA> <nonceA> <proofA>
 * B> PEER <proofB>                       (A checks B knows the secret too)
 *    ... idle in A's pool, until a client of A asks for a name B holds ...
 *                                        A> FORWARD <name>
 * B> CONNECTED | OFFLINE | ERROR <CODE> <text>
 * (after CONNECTED: application data both ways, half-close carried)
 * ```
 *
 * `proofA = HMAC(secret, "tcp-relay/2 <nonceB> PEER-LINK <nodeA> <nonceA>")`,
 * `proofB = HMAC(secret, "tcp-relay/2 <nonceA> PEER-ACCEPT <nodeA> <nodeB>")`
 * (`protocol/_auth.ts`). The connection is the session: a `FORWARD` is taken
 * only on a connection whose `LINK` proved the secret over its fresh nonce,
 * and only one; a recorded `LINK` is useless on another connection. (On the
 * path of a plain TCP link one could inject into it, as into any pair's
 * bytes: `--peer-tls` answers that.) See README, "Cluster".
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
  writeAll,
} from "../protocol/_wire.ts";
import { nodeNameProblem } from "./_registry.ts";

const log = getLogger(["tcp-relay", "cluster"]);

/** The peer port's greeting, before its nonce. */
export const PEER_GREETING = "TCP-RELAY-PEER 2";
export { DEFAULT_PEER_PORT } from "../protocol/_wire.ts";
/** How long a link handshake, or the answer to a request, may take (ms). */
export const LINK_TIMEOUT = 3_000;
/** How long the dialing node keeps a link idle before it closes it (ms). */
export const LINK_IDLE = 15_000;
/** How long the peer port keeps an idle link open (ms): a safety net only. */
const IDLE_ACCEPTED = 4 * LINK_IDLE;

/** A link connection: plain TCP, or TLS. */
export type LinkConn = Deno.TcpConn | Deno.TlsConn;

/** TLS for the links: the peer port's certificate, and what dialers trust. */
export interface LinkTls {
  cert: string;
  key: string;
  /** Certificates (PEM) to trust for other nodes' peer ports. */
  caCerts?: string[];
}

/** A nonce as the link's lines carry it. */
export const NONCE: RegExp = /^[0-9a-f]{32}$/;

/** Closes `c`, closed or not. */
export function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch {
    // closed already
  }
}

/**
 * Runs `work` and closes `conn` if it takes longer than `ms`; the timer is
 * in `timers` meanwhile (for a close to clear).
 */
export async function bounded<T>(
  conn: LinkConn,
  ms: number,
  work: () => Promise<T>,
  what = "link handshake",
  timers?: Set<ReturnType<typeof setTimeout>>,
): Promise<T> {
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    closeQuietly(conn);
  }, ms);
  timers?.add(timer);
  try {
    return await work();
  } catch (e) {
    throw late ? new Error(`${what} timed out`) : e;
  } finally {
    clearTimeout(timer);
    timers?.delete(timer);
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

/** Refused on the peer port: `ERROR <code> <text>` back, and why in the log. */
class Refused extends Error {
  readonly reply: string;
  constructor(code: string, text: string, more = "") {
    super(text + more);
    this.reply = `ERROR ${code} ${text}`;
  }
}

/** The peer port of this node: accepts links and their requests from other nodes. */
export class LinkListener {
  readonly addr: Deno.NetAddr;
  #listener: Deno.Listener<LinkConn>;
  #stop = new AbortController();
  /** Links in their handshake or idle, waiting for their request. */
  #open = new Set<LinkConn>();
  #timers = new Set<ReturnType<typeof setTimeout>>();

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
      this.#serve(conn, options.node, options.secret).then(
        (req) => {
          this.#open.delete(conn);
          if (req) onForward(req);
          else closeQuietly(conn);
        },
        async (e) => {
          this.#open.delete(conn);
          if (e instanceof Refused) {
            await writeAll(conn, line(e.reply)).catch(() => {});
          }
          log.info("Refused link from {peer}: {reason}", {
            peer: safeAddr(conn),
            reason: (e as Error).message,
          });
          closeQuietly(conn);
        },
      );
    }, this.#stop.signal);
  }

  /** The link's handshake, then its one request; `null` if it closed idle. */
  async #serve(
    conn: LinkConn,
    node: string,
    secret: string,
  ): Promise<Forwarded | null> {
    const peer = safeAddr(conn);
    const nonce = newNonce();
    const reader = new LineReader(conn);
    const from = await bounded(
      conn,
      LINK_TIMEOUT,
      async () => {
        await writeAll(conn, line(`${PEER_GREETING} ${nonce}`));
        const hello = await reader.readLine();
        if (hello === null) return null;
        const [word, from, theirs, given, ...extra] = hello.split(" ");
        if (
          word !== "LINK" || extra.length || !from || nodeNameProblem(from) ||
          !NONCE.test(theirs ?? "")
        ) throw new Refused("PROTOCOL", "bad link request");
        if (!verify(secret, nonce, "PEER-LINK", `${from} ${theirs}`, given)) {
          throw new Refused(
            "AUTH",
            "wrong cluster proof",
            ` from node ${from}`,
          );
        }
        const mine = proof(secret, theirs, "PEER-ACCEPT", `${from} ${node}`);
        await writeAll(conn, line(`PEER ${mine}`));
        return from;
      },
      "link handshake",
      this.#timers,
    );
    if (!from) return null;
    let request: string | null;
    try {
      const next = () => reader.readLine();
      request = await bounded(conn, IDLE_ACCEPTED, next, "", this.#timers);
    } catch {
      return null; // closed by the dialing node, or idle too long
    }
    if (request === null) return null; // the dialing node closed it
    const [word, name, ...extra] = request.split(" ");
    if (word !== "FORWARD" || extra.length || !name || nameProblem(name)) {
      throw new Refused("PROTOCOL", "bad forwarded request");
    }
    return { name, from, conn, rest: reader.rest(), peer };
  }

  /** Stops accepting and closes links in their handshake or idle. */
  close(): void {
    this.#stop.abort();
    closeQuietly(this.#listener);
    for (const c of this.#open) closeQuietly(c);
    this.#open.clear();
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }
}

function safeAddr(conn: Deno.Conn): string {
  try {
    return formatAddr(conn.remoteAddr);
  } catch {
    return "unknown";
  }
}
