// Shared by the hostile tests: owned names in memory, a relay with loopback
// held to the limits, seeded randomness, and v2 handshakes by hand.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { proof } from "../protocol/_auth.ts";
import { writeAll } from "../protocol/_wire.ts";
import { accept, connect } from "../mod.ts";
import type { NameOwners, RelayOptions } from "../relay.ts";
import {
  randomBytes,
  Raw,
  readAll,
  startRelay,
  type TestRelay,
  until,
} from "./_helpers.ts";

export const SECRET = "a1".repeat(32), KEY = "b2".repeat(32);
export const latin1 = new TextDecoder("latin1");
export const TABLE: Record<string, { secret: string; clientKey?: string }> = {
  owned: { secret: SECRET },
  spare: { secret: SECRET },
  private: { secret: SECRET, clientKey: KEY },
};
/** "owned" and "spare" (secret only), "private" (secret and clients' key). */
export const NAMES: NameOwners = { get: (name) => TABLE[name] };

/** A relay with those names and its limits applied to loopback peers too. */
export const hostileRelay = (o: RelayOptions = {}) =>
  startRelay({
    names: NAMES,
    ...o,
    limits: { limitLoopback: true, ...o.limits },
  });

/** A seeded xorshift32 generator of whole numbers below `n`. */
export function prng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

export const hex = (b: Uint8Array) =>
  Array.from(b, (x) => (x + 256).toString(16).slice(1)).join("");
export const bytesOf = (s: string) =>
  Uint8Array.from(s, (ch) => ch.charCodeAt(0) & 0xff);

/** `p`, or a rejection naming `what` after `ms`: a regression fails, not hangs. */
export async function within<T>(
  p: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) =>
    timer = setTimeout(() => reject(new Error(`Timed out: ${what}`)), ms)
  );
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

export const connections0 = (relay: TestRelay) =>
  until(() => relay.stats().connections === 0, "connections to return to 0");

/** A raw v2 handshake on `port`: greeting read, HELLO 2 sent, nonce read. */
export async function hello(
  port: number,
): Promise<{ raw: Raw; nonce: string }> {
  const raw = await Raw.open(port);
  await raw.line();
  await raw.send("HELLO 2\n");
  const reply = (await raw.line()) ?? "";
  ok(/^HELLO 2 [0-9a-f]{32}$/.test(reply), `bad HELLO reply ${reply}`);
  return { raw, nonce: reply.slice(8) };
}

/** A nonce the relay issued on a connection that was then dropped. */
export const staleNonce = (port: number) =>
  hello(port).then((h) => (h.raw.close(), h.nonce));

/** Sends the v2 request `request(nonce)` on `port`; the rest of the stream as text. */
export async function v2Say(port: number, request: (nonce: string) => string) {
  const { raw, nonce } = await hello(port);
  using _r = raw;
  const sent = request(nonce);
  await raw.send(`${sent}\n`);
  const reading = raw.text().catch((e) => String(e));
  return {
    sent,
    answer: await within(reading, 3000, "no answer").catch(String),
  };
}

/** The owner of "owned" parked over v2 (PARKED read), with the line it sent. */
export async function parkOwner(relay: TestRelay) {
  const { raw, nonce } = await hello(relay.serverAddr.port);
  const sent = `CONNECT owned ${proof(SECRET, nonce, "CONNECT", "owned")}`;
  await raw.send(`${sent}\n`);
  ok((await raw.line())?.startsWith("PARKED"), "the owner is not parked");
  return Object.assign(raw, { sent });
}

/** Seeded bytes both ways over a paired client `c` and server `s`, with half-closes. */
export async function exchange(c: Deno.TcpConn, s: Deno.TcpConn, seed: number) {
  const up = randomBytes(3000, seed), down = randomBytes(2000, seed + 1);
  await writeAll(c, up);
  await c.closeWrite();
  assertEquals(await readAll(s), up, `client to server, seed ${seed}`);
  await writeAll(s, down);
  await s.closeWrite();
  assertEquals(await readAll(c), down, `server to client, seed ${seed}`);
}

/** A v1 client pairs with the parked owner, whose next line is CONNECTED. */
export async function ownerPairs(relay: TestRelay, owner: Raw, seed: number) {
  ok(relay.stats().parked.owned === 1, "the owner is no longer parked");
  using c = await Raw.open(relay.clientAddr.port);
  await c.send("owned\n");
  assertEquals([await c.line(), await c.line()], ["CLIENT", "CONNECTED"]);
  assertEquals(await owner.line(), "CONNECTED");
  await exchange(c.conn, owner.conn, seed);
  await connections0(relay);
}

/** A live v2 pair through the helpers under `name` (with its secrets), bytes checked. */
export async function livePair(relay: TestRelay, name: string, seed: number) {
  const ac = new AbortController();
  const { secret, clientKey: key } = TABLE[name] ?? {};
  const opts = { name, timeout: 3000, signal: ac.signal };
  const served = accept({ ...opts, relay: relay.server, secret });
  try {
    using c = await connect({ ...opts, relay: relay.client, key });
    using s = await within(served, 3000, "the live server to be paired");
    await exchange(c, s, seed);
  } finally {
    ac.abort();
    await served.catch(() => {});
  }
}

// 1. Random bytes.
