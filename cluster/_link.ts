/**
 * The node-to-node link: how the node that holds a client hands its request
 * to a node that holds a parked server for the name, one hop, over one TCP
 * (or TLS) connection that then carries the pair's bytes.
 *
 * A link is opened and authenticated both ways ahead of need (the pool of
 * `cluster/_pool.ts` keeps a few idle per node), then carries exactly one
 * request and becomes the pair's connection:
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
 * - `proofA = HMAC(secret, "tcp-relay/2 <nonceB> PEER-LINK <nodeA> <nonceA>")`
 * - `proofB = HMAC(secret, "tcp-relay/2 <nonceA> PEER-ACCEPT <nodeA> <nodeB>")`
 *
 * (`protocol/_auth.ts`). The connection is the session: a `FORWARD` is taken
 * only on the connection whose `LINK` proved the secret over this
 * connection's fresh nonce, and only one. A stranger on the peer port knows
 * no secret, so it can neither open a link, nor take a parked server, nor
 * pose as a node; a recorded `LINK` is useless on another connection (a new
 * nonce), and a `FORWARD` on a connection without a proven `LINK` is refused.
 * (Someone on the path of a plain TCP link could inject into it, as into any
 * pair's bytes: `--peer-tls` is the answer to that.) A forwarded request is
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

/** The peer port's greeting, before its nonce. */
export const PEER_GREETING = "TCP-RELAY-PEER 2";
export { DEFAULT_PEER_PORT } from "../protocol/_wire.ts";
/** How long a link handshake, or the answer to a request, may take (ms). */
export const LINK_TIMEOUT = 3_000;
/** How long the dialing node keeps a link idle before it closes it (ms). */
export const LINK_IDLE = 15_000;
/** How long the peer port keeps an idle link open (ms): a safety net only. */
export const LINK_IDLE_ACCEPTED = 4 * LINK_IDLE;

/** A link connection: plain TCP, or TLS. */
export type LinkConn = Deno.TcpConn | Deno.TlsConn;

/** TLS for the links: the peer port's certificate, and what dialers trust. */
export interface LinkTls {
  cert: string;
  key: string;
  /** Certificates (PEM) to trust for other nodes' peer ports. */
  caCerts?: string[];
}

const NONCE = /^[0-9a-f]{32}$/;

function closeQuietly(c: { close(): void }): void {
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
async function bounded<T>(
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

/** Refused on the peer port: the line sent back, and why (for the log). */
class Refused extends Error {
  constructor(readonly reply: string, reason: string) {
    super(reason);
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
        const [word, from, theirNonce, given, ...extra] = hello.split(" ");
        if (
          word !== "LINK" || extra.length || !from || nodeNameProblem(from) ||
          !NONCE.test(theirNonce ?? "")
        ) {
          throw new Refused(
            "ERROR PROTOCOL bad link request",
            "bad link request",
          );
        }
        if (
          !verify(secret, nonce, "PEER-LINK", `${from} ${theirNonce}`, given)
        ) {
          throw new Refused(
            "ERROR AUTH wrong cluster proof",
            `wrong cluster proof from node ${from}`,
          );
        }
        const mine = proof(
          secret,
          theirNonce,
          "PEER-ACCEPT",
          `${from} ${node}`,
        );
        await writeAll(conn, line(`PEER ${mine}`));
        return from;
      },
      "link handshake",
      this.#timers,
    );
    if (!from) return null;
    let request: string | null;
    try {
      request = await bounded(
        conn,
        LINK_IDLE_ACCEPTED,
        () => reader.readLine(),
        "idle link",
        this.#timers,
      );
    } catch {
      return null; // closed by the dialing node, or idle too long
    }
    if (request === null) return null; // the dialing node closed it
    const [word, name, ...extra] = request.split(" ");
    if (word !== "FORWARD" || extra.length || !name || nameProblem(name)) {
      throw new Refused(
        "ERROR PROTOCOL bad forwarded request",
        "bad forwarded request",
      );
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

/** The answer of the far node to a forwarded request. */
export type LinkResult =
  | { paired: true; conn: LinkConn; rest: Uint8Array }
  | {
    paired: false;
    reason: string;
    /** The node could not be reached (or is no node of ours). */
    unreachable: boolean;
    /** An idle link that had closed before it was used: try a new one. */
    stale?: boolean;
  };

/** Where a link goes, and as whom. */
export interface LinkOptions {
  /** The far node's peer port, `host:port`. */
  addr: string;
  /** The far node's name. */
  to: string;
  /** This node's name. */
  node: string;
  secret: string;
  tls?: LinkTls;
}

/** A link dialled and authenticated both ways, for one request. */
export class Link {
  /** The far node. */
  readonly to: string;
  /** When it was authenticated (`Date.now()`). */
  readonly since: number = Date.now();
  /** Called once if it closes (or the far node speaks) while idle. */
  onClose?: () => void;
  #conn: LinkConn;
  #reader: LineReader;
  /** The next line from the far node: read while idle, so a close is seen. */
  #next: Promise<string | null>;
  #state: "idle" | "used" | "closed" = "idle";

  /** `conn` authenticated both ways to `to`; `reader` holds what it read. */
  constructor(to: string, conn: LinkConn, reader: LineReader) {
    this.to = to;
    this.#conn = conn;
    this.#reader = reader;
    this.#next = this.#reader.readLine().catch(() => null);
    this.#next.then(() => {
      if (this.#state !== "idle") return;
      this.close(); // closed, or spoke out of turn
      this.onClose?.();
    });
  }

  /** Whether it can still take its request. */
  get idle(): boolean {
    return this.#state === "idle";
  }

  /**
   * Sends the request for `name`: resolves with the connection once the far
   * node paired it (`CONNECTED`), or why not (the link is closed then).
   */
  async forward(name: string): Promise<LinkResult> {
    if (this.#state !== "idle") {
      return { paired: false, reason: "link used", unreachable: false };
    }
    this.#state = "used";
    const conn = this.#conn;
    let answer: string | null;
    try {
      answer = await bounded(conn, LINK_TIMEOUT, async () => {
        await writeAll(conn, line(`FORWARD ${name}`));
        return await this.#next;
      }, `node ${this.to}'s answer`);
    } catch (e) {
      closeQuietly(conn);
      return { paired: false, reason: (e as Error).message, unreachable: true };
    }
    if (answer === null) {
      closeQuietly(conn);
      return {
        paired: false,
        reason: `node ${this.to} closed the link`,
        unreachable: false,
        stale: true,
      };
    }
    if (answer !== Word.CONNECTED) {
      closeQuietly(conn);
      return {
        paired: false,
        reason: `node ${this.to} answered ${answer}`,
        unreachable: false,
      };
    }
    return { paired: true, conn, rest: this.#reader.rest() };
  }

  /** Closes it if still unused (a used one belongs to its pair, or is closed). */
  close(): void {
    if (this.#state !== "idle") return;
    this.#state = "closed";
    closeQuietly(this.#conn);
  }
}

/**
 * Dials the node `to` at `addr` and authenticates the link both ways;
 * rejects with why not (unreachable, or no node of this cluster).
 */
export async function openLink(options: LinkOptions): Promise<Link> {
  const { addr, to, node, secret, tls } = options;
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
    throw new Error(
      `cannot reach node ${to} at ${addr}: ${(e as Error).message}`,
    );
  }
  try {
    return await bounded(conn, LINK_TIMEOUT, async () => {
      const reader = new LineReader(conn);
      const greeting = (await reader.readLine())?.split(" ") ?? [];
      const theirNonce = greeting[2] ?? "";
      const heard = greeting.slice(0, 2).join(" ");
      if (heard !== PEER_GREETING || !NONCE.test(theirNonce)) {
        throw new Error(
          /^TCP-RELAY-PEER \d+$/.test(heard)
            ? `node ${to} at ${addr} speaks ${heard}, this node ${PEER_GREETING}: run one version on every node`
            : `node ${to} at ${addr} is not a relay's peer port`,
        );
      }
      const nonce = newNonce();
      const mine = proof(secret, theirNonce, "PEER-LINK", `${node} ${nonce}`);
      await writeAll(conn, line(`LINK ${node} ${nonce} ${mine}`));
      const accepted = (await reader.readLine())?.split(" ") ?? [];
      if (
        accepted[0] !== "PEER" || accepted.length !== 2 ||
        !verify(secret, nonce, "PEER-ACCEPT", `${node} ${to}`, accepted[1])
      ) {
        throw new Error(
          `node ${to} at ${addr} refused the link or holds another secret`,
        );
      }
      return new Link(to, conn, reader);
    });
  } catch (e) {
    closeQuietly(conn);
    throw e;
  }
}

/**
 * Forwards a request for `name` on a new link to `to` at `addr`: resolves
 * with the link connection once the far node paired it, or why not.
 */
export async function forward(
  options: LinkOptions & { name: string },
): Promise<LinkResult> {
  let link: Link;
  try {
    link = await openLink(options);
  } catch (e) {
    return { paired: false, reason: (e as Error).message, unreachable: true };
  }
  const got = await link.forward(options.name);
  // a new link closed before its answer: the node is going away
  return !got.paired && got.stale
    ? { paired: false, reason: got.reason, unreachable: true }
    : got;
}
