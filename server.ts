/**
 * The server's side: offer a name at a relay and take the clients that ask
 * for it, each as a normal `Deno.TcpConn`. Library and executable.
 *
 * ```sh
 * # expose the local SSH server as "home-ssh"
 * deno run -A jsr:@x/tcp-relay/server --relay relay.example.com --name home-ssh --to 127.0.0.1:22
 * ```
 *
 * @example Serving every client of a name
 * ```ts
 * import { listen } from "jsr:@x/tcp-relay/server";
 *
 * using listener = listen({ relay: "relay.example.com", name: "echo" });
 * for await (const conn of listener) {
 *   conn.readable.pipeTo(conn.writable).catch(() => {});
 * }
 * ```
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  checkOptions,
  type HelperOptions,
  refusal,
  withRelay,
} from "./_dial.ts";
import { RelayError } from "./_errors.ts";
import { formatAddr, parseHostPort, Word } from "./_protocol.ts";
import { pipePair, Source } from "./_pipe.ts";
import {
  COMMON_OPTIONS,
  integer,
  parseFlags,
  runMain,
  setupLogging,
  stopSignal,
  UsageError,
} from "./_cli.ts";

export type { HelperOptions } from "./_dial.ts";

const log = getLogger(["tcp-relay", "server"]);

/**
 * Offers `name` at the relay and waits until a client asks for it: one
 * connection per call, as the seed's `server.accept`. The name is reserved if
 * it was not. The connection has `setNoDelay(true)`; every byte read from it
 * is the client's.
 *
 * @example Taking one client
 * ```ts
 * import { accept } from "jsr:@x/tcp-relay";
 *
 * const conn = await accept({ relay: "relay.example.com", name: "echo" });
 * await conn.readable.pipeTo(conn.writable);
 * ```
 */
export function accept(options: HelperOptions): Promise<Deno.TcpConn> {
  return withRelay(options, "server", async (s) => {
    await s.expect(Word.SERVER);
    await s.write(Word.CONNECT, options.name);
    s.untimed();
    await s.expect(Word.CONNECTED);
    s.conn.setNoDelay(true);
    return s.conn;
  });
}

async function command(options: HelperOptions, word: string): Promise<void> {
  await withRelay(options, "server", async (s) => {
    await s.expect(Word.SERVER);
    await s.write(word, options.name);
    // The seed's relay answers nothing on success and closes.
    const reply = await s.read().catch((e) => {
      if (e instanceof RelayError && e.code === "CLOSED") return Word.OK;
      throw e;
    });
    s.conn.close();
    if (reply.toUpperCase() !== Word.OK) {
      throw refusal(reply, options.relay, options.name);
    }
  });
}

/**
 * Reserves `name` at the relay, so that clients asking for it wait for a
 * server instead of hearing `NOEXIST`. Rejects with a `USED` {@linkcode RelayError}
 * if it is reserved already.
 *
 * @example Reserving a name once
 * ```ts
 * import { reserve } from "jsr:@x/tcp-relay";
 *
 * await reserve({ relay: "relay.example.com", name: "home-ssh" });
 * ```
 */
export function reserve(options: HelperOptions): Promise<void> {
  return command(options, Word.RESERVE);
}

/**
 * Releases `name` at the relay: its waiting connections are closed and
 * clients hear `NOEXIST` again.
 *
 * @example Giving a name back
 * ```ts
 * import { release } from "jsr:@x/tcp-relay";
 *
 * await release({ relay: "relay.example.com", name: "home-ssh" });
 * ```
 */
export function release(options: HelperOptions): Promise<void> {
  return command(options, Word.RELEASE);
}

/** Options of {@linkcode listen}. */
export interface ListenOptions extends HelperOptions {
  /** Connections kept waiting at the relay. Default `2`. */
  pool?: number;
  /** First pause before reconnecting to a relay that is away, in ms. Default `100`. */
  minBackoff?: number;
  /** Longest pause between reconnections, in ms. Default `30000`. */
  maxBackoff?: number;
}

export { RelayListener } from "./_listener.ts";
import { RelayListener } from "./_listener.ts";

/**
 * Keeps `pool` connections waiting at the relay under `name`, replaces each
 * one a client takes at once, and reconnects with exponential backoff and
 * jitter while the relay is away: a relay restart needs no server restart.
 *
 * @example Accepting clients until Ctrl-C
 * ```ts
 * import { listen } from "jsr:@x/tcp-relay";
 *
 * const ac = new AbortController();
 * Deno.addSignalListener("SIGINT", () => ac.abort());
 * for await (const conn of listen({ relay: "relay.example.com", name: "echo", signal: ac.signal })) {
 *   conn.readable.pipeTo(conn.writable).catch(() => {});
 * }
 * ```
 */
export function listen(options: ListenOptions): RelayListener {
  checkOptions(options);
  const pool = options.pool ?? 2;
  if (!Number.isInteger(pool) || pool < 1 || pool > 1000) {
    throw new RangeError(
      `options.pool must be a whole number from 1 to 1000, not ${pool}`,
    );
  }
  return new RelayListener({ ...options, pool }, accept);
}

const USAGE = `tcp-relay server: exposes a local TCP service through a relay

Usage: deno run -A jsr:@x/tcp-relay/server --relay HOST[:PORT] --name NAME --to HOST:PORT [options]

Options:
  --relay HOST[:PORT]   the relay (port default 8010)
  --name NAME           the name clients ask for
  --to HOST:PORT        the local service each client is connected to
  --pool N              connections kept waiting at the relay (default 2)
  --log-level LEVEL     trace, debug, info, warning, error (default info)
  --log-format FORMAT   text or json (default text)
  -h, --help            show this help
  -V, --version         show the version`;

async function main(): Promise<never> {
  const options = {
    ...COMMON_OPTIONS,
    relay: { type: "string" },
    name: { type: "string" },
    to: { type: "string" },
    pool: { type: "string", default: "2" },
  } as const;
  return await runMain(
    USAGE,
    () => parseFlags(Deno.args, options),
    async (v) => {
      for (const flag of ["relay", "name", "to"]) {
        if (typeof v[flag] !== "string") {
          throw new UsageError(
            `--${flag} is required`,
          );
        }
      }
      let to: { hostname: string; port: number };
      try {
        to = parseHostPort(v.to as string);
      } catch (e) {
        throw new UsageError(`--to: ${(e as Error).message}`);
      }
      const pool = integer("pool", v.pool as string, 1, 1000);
      await setupLogging(v["log-level"] as string, v["log-format"] as string);
      const name = v.name as string;
      const listener = listen({
        relay: v.relay as string,
        name,
        pool,
        signal: stopSignal(),
      });
      log.info("Offering {name} at {relay}, forwarding to {to}", {
        name,
        relay: v.relay,
        to: `${to.hostname}:${to.port}`,
      });
      for await (const conn of listener) {
        Deno.connect(to).then((local) => {
          local.setNoDelay(true);
          log.info("Client for {name} connected to {to}", {
            name,
            to: formatAddr(local.remoteAddr),
          });
          return pipePair(conn, new Source(conn), local, new Source(local));
        }, (e) => {
          log.warn("Cannot reach {to}: {error}", {
            to: `${to.hostname}:${to.port}`,
            error: String(e),
          });
          conn.close();
        });
      }
      log.info("Stopped");
    },
  );
}

if (import.meta.main) main();
