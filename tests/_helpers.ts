// Shared by the tests: a relay on free ports, raw protocol sockets, pairs and
// resets, free ports, local services, temporary folders, RelayError checks,
// and byte helpers.

import {
  deepStrictEqual as assertEquals,
  ok,
  rejects,
  strictEqual,
} from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { accept, connect, RelayError, type RelayErrorCode } from "../mod.ts";
import { type Relay, type RelayOptions, serveRelay } from "../relay.ts";
import { readLineExact, writeAll } from "../protocol/_wire.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A relay on 127.0.0.1, free ports, with `server`/`client` as "host:port". */
export interface TestRelay extends Relay {
  server: string;
  client: string;
}

/** Starts a relay for one test; `await using` shuts it down (drain 0). */
export function startRelay(options: RelayOptions = {}): TestRelay {
  const relay = serveRelay({
    hostname: "127.0.0.1",
    serverPort: 0,
    clientPort: 0,
    drainTimeout: 0,
    ...options,
  });
  return Object.assign(relay, {
    server: `127.0.0.1:${relay.serverAddr.port}`,
    client: `127.0.0.1:${relay.clientAddr.port}`,
  });
}

/** A raw TCP connection speaking the protocol by hand. */
export class Raw implements Disposable {
  constructor(readonly conn: Deno.TcpConn) {}

  static async open(port: number): Promise<Raw> {
    return new Raw(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Reads one line exactly (no byte past `\n`); `null` at end of stream. */
  line(): Promise<string | null> {
    return readLineExact(this.conn);
  }

  /** Writes `text` as is (add "\n" yourself). */
  send(text: string | Uint8Array): Promise<void> {
    return writeAll(
      this.conn,
      typeof text === "string" ? encoder.encode(text) : text,
    );
  }

  /** Everything until the end of stream, as text. */
  async text(): Promise<string> {
    return decoder.decode(await readAll(this.conn));
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // closed already
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A server connection parked under `name` (greeting read, CONNECT sent). */
export async function park(relay: TestRelay, name: string): Promise<Raw> {
  const raw = await Raw.open(relay.serverAddr.port);
  if (await raw.line() !== "SERVER") throw new Error("no SERVER greeting");
  await raw.send(`CONNECT\n${name}\n`);
  return raw;
}

/** A client connection that asked for `name` (greeting read; answer not read). */
export async function ask(relay: TestRelay, name: string): Promise<Raw> {
  const raw = await Raw.open(relay.clientAddr.port);
  if (await raw.line() !== "CLIENT") throw new Error("no CLIENT greeting");
  await raw.send(`${name}\n`);
  return raw;
}

/** Reads until end of stream. */
export async function readAll(
  r: { read(p: Uint8Array): Promise<number | null> },
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const buf = new Uint8Array(64 * 1024);
    const n = await r.read(buf);
    if (n === null) break;
    chunks.push(buf.subarray(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Reads exactly `n` bytes (rejects at an early end of stream). */
export async function readExactly(
  r: { read(p: Uint8Array): Promise<number | null> },
  n: number,
): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const got = await r.read(out.subarray(off));
    if (got === null) {
      throw new Error(`end of stream after ${off} of ${n} bytes`);
    }
    off += got;
  }
  return out;
}

/** Seeded pseudo-random bytes (xorshift32), so failures replay. */
export function randomBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Waits until `check()` is true, polling; throws after `ms` with `what`. */
export async function until(
  check: () => boolean,
  what: string,
  ms = 5000,
): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** `text` as bytes. */
export function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

/** `data` as text. */
export function text(data: Uint8Array): string {
  return decoder.decode(data);
}

/** A parked server and a client paired under `name`, CONNECTED read on both. */
export async function pair(
  relay: TestRelay,
  name = "n",
): Promise<{ s: Raw; c: Raw }> {
  const s = await park(relay, name);
  await until(() => relay.stats().parked[name] === 1, "the server to park");
  const c = await ask(relay, name);
  strictEqual(await c.line(), "CONNECTED");
  strictEqual(await s.line(), "CONNECTED");
  return { s, c };
}

/** Waits until `n` servers are parked under "n". */
export function parked(relay: TestRelay, n: number): Promise<void> {
  return until(() => relay.stats().parked.n === n, `${n} parked servers`);
}

/** Reserves `name` with RESERVE, expecting OK. */
export async function reserve(relay: TestRelay, name: string): Promise<void> {
  using r = await Raw.open(relay.serverAddr.port);
  await r.send(`RESERVE\n${name}\n`);
  strictEqual(await r.text(), "SERVER\nOK\n");
}

/** A healthy request/response through the relay, then every conn gone. */
export async function healthyPairWorks(relay: TestRelay): Promise<void> {
  const { s, c } = await pair(relay, "healthy");
  using _s = s, _c = c;
  await sendAndClose(c.conn, s.conn, "ping");
  await sendAndClose(s.conn, c.conn, "pong");
  await until(
    () => relay.stats().connections === 0,
    "connections to return to 0",
  );
}

/** Index of the first difference of `a` and `b`, -1 if equal. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Settles with "eof" or "error" when `conn` ends, reading what comes. */
export function ends(conn: Deno.Conn): Promise<string> {
  return readAll(conn).then(() => "eof", () => "error");
}

/**
 * A socket able to send a real TCP reset (RST), which `Deno.Conn.close()`
 * cannot: it shuts the write side down (FIN) first. Sends `input` at once.
 */
export async function resettable(
  port: number,
  input: string,
): Promise<net.Socket> {
  const sock = net.connect(port, "127.0.0.1");
  sock.on("error", () => {});
  sock.on("data", () => {});
  await once(sock, "connect");
  sock.write(input);
  return sock;
}

/** Sends RST on `sock` and waits until it is closed. */
export async function reset(sock: net.Socket): Promise<void> {
  const closed = once(sock, "close");
  sock.resetAndDestroy();
  await closed;
}

/** Runs `task` over 0..n-1, `width` at a time. */
export async function inParallel(
  n: number,
  width: number,
  task: (i: number) => Promise<void>,
) {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) await task(next++);
  }));
}

/**
 * `n` distinct ports on 127.0.0.1 with nothing listening on them: all are
 * listened on at once (so they differ), then closed.
 */
export function freePorts(n: number): number[] {
  const ls = Array.from(
    { length: n },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  for (const l of ls) l.close();
  return ls.map((l) => l.addr.port);
}

/** One port on 127.0.0.1 with nothing listening on it: {@linkcode freePorts}. */
export function freePort(): number {
  return freePorts(1)[0];
}

/** A local service on 127.0.0.1; `await using` stops it. */
export interface LocalService extends AsyncDisposable {
  /** Its port. */
  port: number;
  /** Its address as "127.0.0.1:port" (server.ts's `--to`). */
  to: string;
}

/**
 * A local service on a free port: `handle` runs for each connection, which
 * is closed after it (errors are ignored). Disposing of it stops listening,
 * closes the connections still open and waits for every `handle`.
 */
export function localService(
  handle: (conn: Deno.TcpConn) => Promise<void>,
): LocalService {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.TcpConn>();
  const handled: Promise<void>[] = [];
  const close = (conn: Deno.TcpConn) => {
    if (!open.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // closed already
    }
  };
  const loop = (async () => {
    for await (const conn of listener) {
      open.add(conn);
      handled.push(handle(conn).catch(() => {}).finally(() => close(conn)));
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    to: `127.0.0.1:${listener.addr.port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await loop;
      for (const conn of [...open]) close(conn);
      await Promise.all(handled);
    },
  };
}

/** A local service that reads to EOF, then answers "echo:" + what it read. */
export function echoService(): LocalService {
  return localService(async (conn) => {
    await writeAll(conn, bytes("echo:" + text(await readAll(conn))));
  });
}

/** Writes `msg` on `from`; `to` reads exactly that many bytes, and they are `msg`. */
export async function send(
  from: Deno.Conn,
  to: Deno.Conn,
  msg: string,
): Promise<void> {
  const data = bytes(msg);
  await writeAll(from, data);
  assertEquals(text(await readExactly(to, data.length)), msg);
}

/** Writes `msg` on `from` and half-closes it; `to` reads `msg`, then EOF. */
export async function sendAndClose(
  from: Deno.Conn,
  to: Deno.Conn,
  msg: string,
): Promise<void> {
  await writeAll(from, bytes(msg));
  await from.closeWrite();
  assertEquals(text(await readAll(to)), msg);
}

/**
 * A server (`accept`, with `secret`) and a client (`connect`) paired through
 * `relay` under `name`, which must be reserved or owned (5 s allowed each).
 */
export async function helperPair(
  relay: { server: string; client: string },
  name: string,
  secret?: string,
): Promise<{ s: Deno.TcpConn; c: Deno.TcpConn }> {
  const served = accept({ relay: relay.server, name, secret, timeout: 5000 });
  try {
    const c = await connect({ relay: relay.client, name, timeout: 5000 });
    return { s: await served, c };
  } catch (e) {
    served.then((s) => s.close(), () => {});
    throw e;
  }
}

/**
 * Checks that `p` rejects with a RelayError of `code` (and, if given, a
 * message matching `message`); returns the error.
 */
export async function rejectsWith(
  p: Promise<unknown>,
  code: RelayErrorCode,
  message?: RegExp,
): Promise<RelayError> {
  let caught: unknown;
  await rejects(p, (e) => {
    caught = e;
    return true;
  });
  ok(caught instanceof RelayError, `expected a RelayError, got ${caught}`);
  strictEqual(caught.code, code, caught.message);
  if (message) ok(message.test(caught.message), caught.message);
  return caught;
}

/** A temporary folder whose name starts with `prefix`; disposal removes it. */
export async function tempDir(
  prefix: string,
): Promise<AsyncDisposable & { dir: string }> {
  const dir = await Deno.makeTempDir({ prefix });
  return {
    dir,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}
