// For the admin server's tests: relay.ts as a process with --admin on a free
// loopback port, HTTP requests to it, and pairs made by hand through it.

import { strictEqual } from "node:assert/strict";
import { Raw } from "./_helpers.ts";
import { type Proc, type RelayProc, relayProc } from "./_proc.ts";

/** relay.ts with an admin server: see {@linkcode adminRelay}. */
export interface AdminRelay extends RelayProc {
  /** The admin server's URL, "http://127.0.0.1:PORT/". */
  url: string;
  /** The token the requests of {@linkcode AdminRelay.get} carry, if any. */
  token?: string;
  /** A request to `path` (with the token, if set); the body is read. */
  fetch(path: string, init?: RequestInit): Promise<Reply>;
  /** `fetch` parsed as JSON. */
  json(path: string, init?: RequestInit): Promise<JsonReply>;
}

/** A response with its body read. */
export interface Reply {
  status: number;
  headers: Headers;
  body: string;
}

/** A response with its body parsed as JSON. */
export interface JsonReply extends Reply {
  // deno-lint-ignore no-explicit-any
  data: any;
}

/** A request to `url`, its body read (so that nothing is left open). */
export async function request(
  url: string | URL,
  init: RequestInit = {},
): Promise<Reply> {
  const res = await fetch(url, init);
  return { status: res.status, headers: res.headers, body: await res.text() };
}

/** The admin URL from a relay's startup log. */
export async function adminUrl(proc: Proc): Promise<string> {
  const m = await proc.wait(/Admin server on "(http:\/\/[^"]+)"/, "err");
  return m[1];
}

/**
 * relay.ts on free loopback ports with `--admin 127.0.0.1:0` and `extra`
 * flags; requests carry `Bearer token` if given.
 */
export async function adminRelay(
  extra: string[] = [],
  token?: string,
): Promise<AdminRelay> {
  const relay = await relayProc("--admin=127.0.0.1:0", ...extra);
  const url = await adminUrl(relay.proc).catch(async (e) => {
    await relay[Symbol.asyncDispose]();
    throw e;
  });
  const withToken = (init: RequestInit = {}): RequestInit => {
    const headers = new Headers(init.headers);
    if (token && !headers.has("authorization")) {
      headers.set("authorization", `Bearer ${token}`);
    }
    return { ...init, headers };
  };
  const get = (path: string, init?: RequestInit) =>
    request(new URL(path, url), withToken(init));
  return {
    ...relay,
    url,
    token,
    fetch: get,
    async json(path, init) {
      const reply = await get(path, init);
      return { ...reply, data: JSON.parse(reply.body) };
    },
  };
}

/** Polls `GET /api/status` until `check(status)` holds; returns that status. */
export async function statusUntil(
  relay: AdminRelay,
  // deno-lint-ignore no-explicit-any
  check: (status: any) => boolean,
  what: string,
  ms = 10_000,
  // deno-lint-ignore no-explicit-any
): Promise<any> {
  const end = Date.now() + ms;
  for (;;) {
    const { data } = await relay.json("/api/status");
    if (check(data)) return data;
    if (Date.now() > end) {
      throw new Error(
        `Timed out waiting for ${what}: ${JSON.stringify(data).slice(0, 500)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A v1 server connection parked under `name`, once the relay counts it. */
export async function parkAt(relay: AdminRelay, name: string): Promise<Raw> {
  const before = await parkedOf(relay, name);
  const raw = await Raw.open(relay.serverPort);
  strictEqual(await raw.line(), "SERVER");
  await raw.send(`CONNECT\n${name}\n`);
  await statusUntil(
    relay,
    (s) => nameCounts(s, name).parked > before,
    `${name} to park`,
  );
  return raw;
}

/** A v1 client connection that asked for `name` (its answer not read). */
export async function askAt(relay: AdminRelay, name: string): Promise<Raw> {
  const raw = await Raw.open(relay.clientPort);
  strictEqual(await raw.line(), "CLIENT");
  await raw.send(`${name}\n`);
  return raw;
}

/** A server and a client paired under `name` at the relay process. */
export async function pairAt(
  relay: AdminRelay,
  name: string,
): Promise<{ s: Raw; c: Raw }> {
  const s = await parkAt(relay, name);
  const c = await askAt(relay, name);
  strictEqual(await c.line(), "CONNECTED");
  strictEqual(await s.line(), "CONNECTED");
  return { s, c };
}

// deno-lint-ignore no-explicit-any
function nameCounts(status: any, name: string) {
  return status.names.find((n: { name: string }) => n.name === name) ??
    { parked: 0, waiting: 0, active: 0 };
}

async function parkedOf(relay: AdminRelay, name: string): Promise<number> {
  return nameCounts((await relay.json("/api/status")).data, name).parked;
}

/** A temporary file holding `text`; removed on dispose. */
export async function tempFile(
  text: string,
): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempFile({ prefix: "tcp-relay-admin-" });
  await Deno.writeTextFile(path, text);
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path) };
}
