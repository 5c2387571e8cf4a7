/**
 * The relay's admin server: `/healthz`, `/readyz`, `/metrics`, the live
 * status page `/` and the JSON API under `/api/`, over HTTP on a loopback
 * address by default, with an optional bearer token.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { Relay } from "../relay.ts";
import { crossSite, TokenCheck } from "./_auth.ts";
import { isLoopback } from "./_flags.ts";
import {
  addName,
  type AdminNames,
  type ApiContext,
  checkName,
  closeName,
  closePair,
  fail,
  json,
  listNames,
  listPairs,
  removeName,
  status,
} from "./_api.ts";
import { History } from "./_history.ts";
import { RelayMetrics } from "./_metrics.ts";
import { PAGE, PAGE_CSP } from "./_page.ts";

export type { AdminNames } from "./_api.ts";

/** Options of {@linkcode startAdmin} (`serveAdmin` in relay.ts). */
export interface AdminOptions {
  /** Address to listen on. Default `"127.0.0.1"`. */
  hostname?: string;
  /** Port to listen on; `0` picks a free one. */
  port: number;
  /**
   * The bearer token every request but `/healthz` must carry. Required on
   * an address that is not loopback. Default: none (loopback only).
   */
  token?: string;
  /**
   * A credentials store for `POST /api/names` and `DELETE /api/names/NAME`,
   * the same one the relay uses (its `names` option). Default: none, and
   * those requests answer 409.
   */
  names?: AdminNames;
  /** Aborting it stops the admin server. */
  signal?: AbortSignal;
}

/** A running admin server. */
export interface AdminServer extends AsyncDisposable {
  /** Where it listens. */
  readonly addr: Deno.NetAddr;
  /** Its address as a URL, `http://127.0.0.1:PORT/`. */
  readonly url: string;
  /** Settles when it has stopped. */
  readonly finished: Promise<void>;
  /**
   * Sets the token (or drops it with `undefined`, which a server on a
   * non-loopback address refuses with a RangeError); requests from now on
   * need the new one.
   */
  setToken(token: string | undefined): void;
  /** Stops listening and answering; resolves when stopped. */
  shutdown(): Promise<void>;
}

const log = getLogger(["tcp-relay", "admin"]);
const REFUSED = "Refused admin request {method} {path} from {peer}: {why}";
/** The largest request body read (a name and a flag need far less). */
const MAX_BODY = 64 * 1024;

type Handler = (
  req: Request,
  param: string,
) => Response | Promise<Response>;
type Route = [RegExp, Partial<Record<string, Handler>>];

function text(body: string, status = 200): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

/** The body of `req` as JSON, or the 400 response saying why not. */
async function readJson(req: Request): Promise<unknown> {
  const reader = req.body?.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const r = await reader?.read();
    if (!r || r.done) break;
    size += r.value.length;
    if (size > MAX_BODY) {
      await reader!.cancel();
      return fail(413, `Request body over ${MAX_BODY} bytes`);
    }
    chunks.push(r.value);
  }
  const all = new Uint8Array(size);
  chunks.reduce((at, c) => (all.set(c, at), at + c.length), 0);
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(all));
  } catch {
    return fail(400, "The request body is not valid JSON");
  }
}

function url(addr: Deno.NetAddr): string {
  const host = addr.hostname.includes(":")
    ? `[${addr.hostname}]`
    : addr.hostname;
  return `http://${host}:${addr.port}/`;
}

/**
 * Starts the admin server of `relay`; it stops with the relay, or on
 * `shutdown()`.
 */
export function startAdmin(relay: Relay, options: AdminOptions): AdminServer {
  const hostname = options.hostname ?? "127.0.0.1";
  const { port } = options;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`port must be a whole number 0-65535, not ${port}`);
  }
  const loopback = isLoopback(hostname);
  if (!loopback && options.token === undefined) {
    throw new RangeError(
      `The admin server cannot listen on ${hostname} without a token: it is not a loopback address`,
    );
  }
  const tokens = new TokenCheck(options.token);
  let known = false; // whether the relay knows its owned names yet
  relay.ready.then(() => known = true, () => {});
  const metrics = new RelayMetrics(relay);
  const history = new History(() => {
    const s = relay.stats();
    return { ...s.bytes, activePairs: s.activePairs };
  });
  const ctx: ApiContext = {
    relay,
    names: options.names,
    series: () => history.series(),
  };
  const withName = (
    f: (name: string) => Response | Promise<Response>,
  ): Handler =>
  (_req, param) => {
    const name = checkName(param);
    return name instanceof Response ? name : f(name);
  };
  const routes: Route[] = [
    [/^\/$/, {
      GET: () =>
        new Response(PAGE, {
          headers: {
            "content-type": "text/html; charset=utf-8",
            "content-security-policy": PAGE_CSP,
          },
        }),
    }],
    [/^\/healthz$/, { GET: () => text("ok\n") }],
    [/^\/readyz$/, {
      GET: () =>
        relay.state !== "serving"
          ? text(`${relay.state}\n`, 503)
          : known
          ? text("ready\n")
          : text("starting\n", 503), // a cluster node before Redis answered
    }],
    [/^\/metrics$/, {
      GET: async () =>
        new Response(await metrics.metrics(), {
          headers: { "content-type": metrics.contentType },
        }),
    }],
    [/^\/api\/status$/, { GET: () => status(ctx) }],
    [/^\/api\/names$/, {
      GET: () => listNames(ctx),
      POST: async (req) => {
        const body = await readJson(req);
        return body instanceof Response ? body : addName(ctx, body);
      },
    }],
    [/^\/api\/names\/([^/]+)$/, {
      DELETE: withName((name) => removeName(ctx, name)),
    }],
    [/^\/api\/names\/([^/]+)\/close$/, {
      POST: withName((name) => closeName(ctx, name)),
    }],
    [/^\/api\/pairs$/, { GET: () => listPairs(ctx) }],
    [/^\/api\/pairs\/([^/]+)$/, {
      DELETE: (_req, id) => closePair(ctx, id),
    }],
  ];

  const handle = async (
    req: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ): Promise<Response> => {
    const path = new URL(req.url).pathname;
    const peer = `${info.remoteAddr.hostname}:${info.remoteAddr.port}`;
    const said = { method: req.method, path, peer };
    const foreign = crossSite(req, tokens.required);
    if (foreign) {
      log.warn(REFUSED, { ...said, why: foreign });
      return fail(403, `Refused: ${foreign}`);
    }
    if (path !== "/healthz") {
      const why = tokens.refuse(req.headers.get("authorization"));
      if (why) {
        metrics.unauthorized.inc();
        log.warn(REFUSED, { ...said, why });
        return new Response(
          JSON.stringify({ error: `Unauthorized: ${why}` }) + "\n",
          {
            status: 401,
            headers: [
              ["content-type", "application/json; charset=utf-8"],
              ["www-authenticate", 'Bearer realm="tcp-relay"'],
              ["www-authenticate", 'Basic realm="tcp-relay", charset="UTF-8"'],
            ],
          },
        );
      }
    }
    for (const [re, methods] of routes) {
      const m = re.exec(path);
      if (!m) continue;
      const method = req.method === "HEAD" ? "GET" : req.method;
      const handler = methods[method];
      if (!handler) {
        const allow = Object.keys(methods).flatMap((k) =>
          k === "GET" ? ["GET", "HEAD"] : [k]
        );
        const res = fail(405, `${req.method} is not allowed on ${path}`);
        res.headers.set("allow", allow.join(", "));
        return res;
      }
      let param = "";
      try {
        param = m[1] === undefined ? "" : decodeURIComponent(m[1]);
      } catch {
        return fail(400, `Invalid percent-encoding in ${path}`);
      }
      const res = await handler(req, param);
      if (method !== "GET") {
        log.info("Admin {method} {path} from {peer}: {status}", {
          ...said,
          status: res.status,
        });
      }
      return res;
    }
    return fail(404, `No such endpoint: ${path}`);
  };

  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname,
      port,
      onListen: () => {},
      onError: (e) => {
        log.error("Admin request failed: {error}", { error: String(e) });
        return json({ error: "Internal error" }, 500);
      },
    }, async (req, info) => {
      const res = await handle(req, info);
      res.headers.set("cache-control", "no-store");
      res.headers.set("x-content-type-options", "nosniff");
      return res;
    });
  } catch (e) {
    history[Symbol.dispose]();
    metrics[Symbol.dispose]();
    const why = e instanceof Deno.errors.AddrInUse
      ? "address in use"
      : (e as Error).message;
    throw new Error(
      `Cannot listen on ${hostname}:${port} for the admin server: ${why}`,
      { cause: e },
    );
  }
  const addr = server.addr;
  let stopping: Promise<void> | undefined;
  const shutdown = () =>
    stopping ??= (async () => {
      options.signal?.removeEventListener("abort", shutdown);
      history[Symbol.dispose]();
      metrics[Symbol.dispose]();
      await server.shutdown();
    })();
  options.signal?.addEventListener("abort", shutdown, { once: true });
  if (options.signal?.aborted) shutdown();
  relay.finished.then(shutdown);
  return {
    addr,
    url: url(addr),
    finished: server.finished,
    setToken(token) {
      if (token === undefined && !loopback) {
        throw new RangeError(
          `The admin server on ${hostname} needs a token: it is not a loopback address`,
        );
      }
      tokens.set(token);
    },
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}
