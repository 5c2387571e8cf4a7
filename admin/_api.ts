/**
 * The admin server's JSON API: the status the page shows, the names (owned
 * ones made and removed in the credentials store), the pairs, and closing a
 * pair or every connection of a name.
 *
 * @module
 */

import { nameProblem, REFUSAL_CODES, VERSION } from "../protocol/_wire.ts";
import type { ClusterStatus, PairInfo, Relay, RelayStats } from "../relay.ts";
import type { Series } from "./_history.ts";

/**
 * A credentials store the admin server can write: the relay's `NameStore`
 * (`--data DIR`) is one.
 */
export interface AdminNames {
  /** The owned names. */
  names(): string[];
  /** The secrets of an owned name, or `undefined`. */
  get(name: string): { clientKey?: string; created?: string } | undefined;
  /** Makes `name` owned; rejects with a RangeError if it is already. */
  add(
    name: string,
    options: { private?: boolean },
  ): Promise<{ secret: string; clientKey?: string; created?: string }>;
  /** Removes `name`; resolves `false` if it was not owned. */
  remove(name: string): Promise<boolean>;
}

/** At most this many names and pairs in `/api/status` (the page's tables). */
export const STATUS_ROWS = 200;
const NO_STORE =
  "This relay has no credentials store to write: start it with --data DIR to make and remove owned names (in a cluster: relay.ts names add NAME --cluster URL)";

/** A JSON response. */
export function json(body: unknown, status = 200, headers = {}): Response {
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** A JSON `{ "error": message }` response. */
export function fail(status: number, message: string): Response {
  return json({ error: message }, status);
}

/** One name as the API shows it. */
interface NameRow {
  name: string;
  owned: boolean;
  private: boolean;
  parked: number;
  waiting: number;
  active: number;
}

/** What the API needs of the admin server. */
export interface ApiContext {
  relay: Relay;
  names?: AdminNames;
  series(): Series;
}

function nameRow(
  ctx: ApiContext,
  name: string,
  counts?: RelayStats["names"][string],
): NameRow {
  const owner = ctx.names?.get(name);
  return {
    name,
    owned: !!owner,
    private: !!owner?.clientKey,
    parked: counts?.parked ?? 0,
    waiting: counts?.waiting ?? 0,
    active: counts?.active ?? 0,
  };
}

function pairRow(p: PairInfo, now: number) {
  return { ...p, seconds: Math.max(0, Math.round(now - p.started) / 1000) };
}

function address(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

/**
 * The cluster as `/api/status` shows it: per node at most
 * {@linkcode STATUS_ROWS} names (those with most parked), and the pairings
 * by route.
 */
function clusterRow(c: ClusterStatus, pairings: number) {
  return {
    node: c.node,
    registered: c.registered,
    readAt: c.readAt,
    pairings: {
      local: Math.max(0, pairings - c.forwardedIn - c.forwardedOut),
      forwardedOut: c.forwardedOut,
      forwardedIn: c.forwardedIn,
    },
    nodes: c.nodes.map((n) => {
      const names = Object.entries(n.parked).sort(([a, x], [b, y]) =>
        y - x || (a < b ? -1 : 1)
      );
      return {
        ...n,
        parked: Object.fromEntries(names.slice(0, STATUS_ROWS)),
        names: names.length,
        servers: names.reduce((sum, [, count]) => sum + count, 0),
      };
    }),
  };
}

/** `GET /api/status`: everything the status page shows. */
export async function status(ctx: ApiContext): Promise<Response> {
  const { relay } = ctx;
  const cluster = await relay.cluster?.status();
  const s = relay.stats(), now = Date.now();
  const busy = Object.entries(s.names).sort(([a, x], [b, y]) =>
    y.parked + y.waiting + y.active - (x.parked + x.waiting + x.active) ||
    (a < b ? -1 : 1)
  );
  const rows = busy.slice(0, STATUS_ROWS).map(([n, c]) => nameRow(ctx, n, c));
  let namesTotal = busy.length;
  for (const name of ctx.names?.names() ?? []) {
    if (name in s.names) continue;
    namesTotal++;
    if (rows.length < STATUS_ROWS) rows.push(nameRow(ctx, name));
  }
  const pairs = relay.pairs().sort((a, b) => b.id - a.id);
  const refusals = Object.fromEntries(
    REFUSAL_CODES.map((code) => [code, s.refusalsByCode[code] ?? 0]),
  );
  return json({
    version: VERSION,
    state: relay.state,
    now,
    uptime: Math.round(performance.now()) / 1000,
    serverAddr: address(relay.serverAddr),
    clientAddr: address(relay.clientAddr),
    totals: {
      connections: s.connections,
      handshaking: s.handshaking,
      parked: Object.values(s.parked).reduce((a, b) => a + b, 0),
      waiting: s.waiting,
      activePairs: s.activePairs,
      pairings: s.pairings,
      refusals: s.refusals,
      names: namesTotal,
      bytes: s.bytes,
    },
    names: rows,
    namesTotal,
    pairs: pairs.slice(0, STATUS_ROWS).map((p) => pairRow(p, now)),
    pairsTotal: pairs.length,
    refusals,
    throughput: ctx.series(),
    cluster: cluster ? clusterRow(cluster, s.pairings) : null,
  });
}

/** `GET /api/names`: every name the relay knows, owned or reserved, sorted. */
export function listNames(ctx: ApiContext): Response {
  const counts = ctx.relay.stats().names;
  const all = new Set([...Object.keys(counts), ...ctx.names?.names() ?? []]);
  const names = [...all].sort().map((n) => nameRow(ctx, n, counts[n]));
  return json({ names, store: !!ctx.names });
}

/** `GET /api/pairs`: every pair being relayed, newest first. */
export function listPairs(ctx: ApiContext): Response {
  const now = Date.now();
  const pairs = ctx.relay.pairs().sort((a, b) => b.id - a.id);
  return json({ pairs: pairs.map((p) => pairRow(p, now)) });
}

/** A name from a request, or the 400 response saying what is wrong with it. */
export function checkName(name: unknown): string | Response {
  if (typeof name !== "string") {
    return fail(400, "name must be a string");
  }
  const problem = nameProblem(name);
  return problem ? fail(400, `Invalid name: ${problem}`) : name;
}

/** `POST /api/names` with `{ "name": NAME, "private"?: boolean }`. */
export async function addName(
  ctx: ApiContext,
  body: unknown,
): Promise<Response> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return fail(400, 'Expected a JSON object: {"name": NAME, "private": bool}');
  }
  const extra = Object.keys(body).filter((k) =>
    k !== "name" && k !== "private"
  );
  if (extra.length) return fail(400, `Unknown field ${extra[0]}`);
  const { name, private: isPrivate = false } = body as Record<string, unknown>;
  const checked = checkName(name);
  if (checked instanceof Response) return checked;
  if (typeof isPrivate !== "boolean") {
    return fail(400, "private must be true or false");
  }
  if (!ctx.names) return fail(409, NO_STORE);
  if (ctx.names.get(checked)) {
    return fail(409, `Name ${checked} is owned already`);
  }
  let record;
  try {
    record = await ctx.names.add(checked, { private: isPrivate });
  } catch (e) {
    if (e instanceof RangeError) return fail(409, e.message);
    throw e;
  }
  const key = record.clientKey ? { clientKey: record.clientKey } : {};
  return json({ name: checked, secret: record.secret, ...key }, 201);
}

/** `DELETE /api/names/NAME`: the name is no longer owned. */
export async function removeName(
  ctx: ApiContext,
  name: string,
): Promise<Response> {
  if (!ctx.names) return fail(409, NO_STORE);
  if (!await ctx.names.remove(name)) {
    return fail(404, `Name ${name} is not owned`);
  }
  return json({ name, removed: true });
}

/** `POST /api/names/NAME/close`: closes every connection of the name. */
export function closeName(ctx: ApiContext, name: string): Response {
  return json({ name, closed: ctx.relay.closeName(name) });
}

/** `DELETE /api/pairs/ID`: closes one pair. */
export function closePair(ctx: ApiContext, id: string): Response {
  const n = Number(id);
  if (!/^[1-9][0-9]{0,15}$/.test(id)) {
    return fail(400, `Invalid pair id ${JSON.stringify(id.slice(0, 40))}`);
  }
  if (!ctx.relay.closePair(n)) return fail(404, `No pair ${n}`);
  return json({ id: n, closed: true });
}
