/**
 * The dialing side of a node-to-node link (the protocol: `cluster/_link.ts`):
 * a link dialled and authenticated both ways, then its one request.
 *
 * @module
 */

import { newNonce, proof, verify } from "../protocol/_auth.ts";
import {
  line,
  LineReader,
  parseHostPort,
  Word,
  writeAll,
} from "../protocol/_wire.ts";
import {
  bounded,
  closeQuietly,
  LINK_TIMEOUT,
  type LinkConn,
  type LinkTls,
  NONCE,
  PEER_GREETING,
} from "./_link.ts";

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
