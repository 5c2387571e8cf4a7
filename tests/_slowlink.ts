// The relay's engine (what serveRelay runs) over real listeners whose
// connections stand for a slow link: a test may hold any write back until it
// lets it go, and hear of every read. On loopback every write completes at
// once (Deno finishes a write that fits in the socket's buffer before the
// next task runs), so the windows between a write and what follows it in the
// engine open only on a slow or congested link; this is that link.

import { Rendezvous, type RendezvousSettings } from "../engine/_rendezvous.ts";
import type { Conn } from "../engine/_table.ts";
import { DEFAULT_LIMITS } from "../engine/_guard.ts";
import {
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HEARTBEAT,
  DEFAULT_WAIT,
} from "../protocol/_wire.ts";

/** Which port a connection came in on. */
export type Role = "server" | "client";

/** What a test does to the connections of a {@linkcode slowRelay}. */
export interface Link {
  /** Called before each write; the write waits for the promise returned, if any. */
  write?(role: Role, bytes: Uint8Array): Promise<void> | undefined;
  /** Called with what each read returned. */
  read?(role: Role, bytes: Uint8Array): void;
}

/** A relay engine on 127.0.0.1 over a {@linkcode Link}; `await using` shuts it down. */
export interface SlowRelay extends AsyncDisposable {
  engine: Rendezvous;
  serverPort: number;
  clientPort: number;
}

function slow(conn: Deno.TcpConn, role: Role, link: Link): Conn {
  return new Proxy(conn, {
    get(target, prop) {
      if (prop === "write") {
        return (p: Uint8Array) => {
          const held = link.write?.(role, p);
          return held ? held.then(() => target.write(p)) : target.write(p);
        };
      }
      if (prop === "read") {
        return (p: Uint8Array) =>
          target.read(p).then((n) => {
            if (n) link.read?.(role, p.slice(0, n));
            return n;
          });
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

function listener(role: Role, link: Link): Deno.Listener<Conn> {
  const inner = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return {
    addr: inner.addr,
    accept: async () => slow(await inner.accept(), role, link),
    close: () => inner.close(),
  } as unknown as Deno.Listener<Conn>;
}

/** The engine with serveRelay's defaults (drain 0) and `settings`, over `link`. */
export function slowRelay(
  link: Link,
  settings: Partial<RendezvousSettings> = {},
): SlowRelay {
  const servers = listener("server", link), clients = listener("client", link);
  const engine = new Rendezvous(
    {
      wait: DEFAULT_WAIT,
      handshakeTimeout: DEFAULT_HANDSHAKE_TIMEOUT,
      drainTimeout: 0,
      heartbeat: DEFAULT_HEARTBEAT,
      dataPath: "loop",
      limits: DEFAULT_LIMITS,
      openRegistration: false,
      ...settings,
    },
    servers,
    clients,
  );
  return {
    engine,
    serverPort: (servers.addr as Deno.NetAddr).port,
    clientPort: (clients.addr as Deno.NetAddr).port,
    [Symbol.asyncDispose]: () => engine.shutdown(),
  };
}
