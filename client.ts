/**
 * The client's side: ask a relay for a name and get a normal `Deno.TcpConn`
 * to the server behind it. Library and executable.
 *
 * ```sh
 * # forward local port 2222 to "home-ssh"
 * deno run -A jsr:@x/tcp-relay/client --relay relay.example.com --name home-ssh --listen 2222
 * # or use it as ssh's ProxyCommand
 * ssh -o ProxyCommand="deno run -A jsr:@x/tcp-relay/client --relay relay.example.com --name %h --stdio" user@home-ssh
 * ```
 *
 * @example Talking to a server through the relay
 * ```ts
 * import { connect } from "jsr:@x/tcp-relay/client";
 *
 * const conn = await connect({ relay: "relay.example.com", name: "echo" });
 * await conn.write(new TextEncoder().encode("hello"));
 * conn.close();
 * ```
 *
 * @module
 */

import {
  type HelperOptions,
  type RelayConn,
  withRelay,
} from "./helpers/_dial.ts";
import { proof } from "./protocol/_auth.ts";
import { Word } from "./protocol/_wire.ts";

export type {
  HelperOptions,
  RelayAddress,
  RelayConn,
} from "./helpers/_dial.ts";

/** Options of {@linkcode connect}. */
export interface ClientOptions extends HelperOptions {
  /** The clients' key of a private name (protocol v2). */
  key?: string;
}

/**
 * Asks the relay for `name` and resolves with the paired connection (with
 * `setNoDelay(true)`); every byte read from it is the server's. Refusals
 * reject with a {@linkcode RelayError}: `NOEXIST` (no such name), `OFFLINE`
 * (no server came in time), `UNREACHABLE`, `TIMEOUT`, `CLOSED`.
 *
 * Given several relays, it tries them in order (the first is the one
 * preferred) and moves to the next while a relay cannot be reached, does
 * not answer in time, or answers `NOEXIST`, `OFFLINE` or `LIMIT`; each
 * relay tried has its own `timeout`. Once every relay failed, the error
 * tells each relay's failure, with the most telling code (`OFFLINE` before
 * `NOEXIST`, before `LIMIT`, `TIMEOUT`, `CLOSED`, `UNREACHABLE`). A
 * failure retrying cannot mend (`AUTH`, `PROTOCOL`, TLS settings that do
 * not fit) rejects at once.
 *
 * @example Reaching a server through whichever of two relays answers
 * ```ts
 * import { connect } from "jsr:@x/tcp-relay";
 *
 * const conn = await connect({ relay: ["a.example.com", "b.example.com"], name: "web" });
 * conn.close();
 * ```
 *
 * @example Sending a request and reading the whole answer
 * ```ts
 * import { connect } from "jsr:@x/tcp-relay";
 *
 * const conn = await connect({ relay: "relay.example.com:9010", name: "web" });
 * await conn.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
 * await conn.closeWrite();
 * console.log(await new Response(conn.readable).text());
 * ```
 */
export function connect<O extends ClientOptions>(
  options: O,
): Promise<RelayConn<O>> {
  return withRelay(options, "client", async (s) => {
    const { name, key } = options;
    await s.write(
      s.nonce !== undefined && key
        ? `${name} ${proof(key, s.nonce, "CLIENT", name)}`
        : name,
    );
    await s.expect(Word.CONNECTED);
    if ("setNoDelay" in s.conn) s.conn.setNoDelay(true);
    return s.conn as RelayConn<O>;
  });
}

/** The executable: its code is loaded only when run, not by importing the library. */
async function main(): Promise<never> {
  const { clientMain } = await import("./cli/_client.ts");
  return await clientMain(Deno.args);
}

if (import.meta.main) main();
