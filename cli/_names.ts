/**
 * The relay executable's `names` subcommand: adds, removes and lists the
 * owned names of a credentials store (`DIR/names.json`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { runMain, UsageError } from "./_common.ts";
import { NameStore } from "../engine/_store.ts";
import { ClusterNames } from "../cluster/_owners.ts";

/** The `names` subcommand's `--help`. */
export const NAMES_USAGE =
  `Usage: deno run -A jsr:@x/tcp-relay/relay names add NAME [--private] [--replace] --data DIR
       deno run -A jsr:@x/tcp-relay/relay names remove NAME --data DIR
       deno run -A jsr:@x/tcp-relay/relay names list --data DIR
       (or --cluster redis://HOST:PORT[/DB] in place of --data: a cluster's names)

add prints the owner's secret (give it to the server: --secret) and, with
--private, the clients' key (give it to the clients: --key); --replace gives an
existing name a new secret. A running relay with the same --data picks the
change up at once.`;

/** The subcommand's flags and positionals; a UsageError if they do not parse. */
function parse(args: string[]): Record<string, unknown> {
  try {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        data: { type: "string" },
        cluster: { type: "string" },
        private: { type: "boolean", default: false },
        replace: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
        version: { type: "boolean", short: "V", default: false },
      },
    });
    return { ...values, positionals };
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\.$/, ""));
  }
}

/** Whether `dir` exists. */
async function exists(dir: string): Promise<boolean> {
  try {
    await Deno.stat(dir);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * `relay.ts names ...`: manages the credentials store. Exits 0 on success, 1
 * if `remove` finds no such name or the store fails, 2 on a usage error (an
 * existing name without `--replace` among them).
 *
 * @example Add an owned name
 * ```ts ignore
 * import { runNames } from "./_names.ts";
 * await runNames(["add", "home-ssh", "--data", "/var/lib/tcp-relay"]);
 * ```
 */
export function runNames(args: string[]): Promise<never> {
  return runMain(NAMES_USAGE, () => parse(args), async (v) => {
    const [action, name, ...extra] = v.positionals as string[];
    if (!v.data === !v.cluster) {
      throw new UsageError("--data DIR or --cluster URL is required (one)");
    }
    const dir = v.data as string;
    const wantsName = action === "add" || action === "remove";
    if (
      !["add", "remove", "list"].includes(action) || wantsName !== !!name ||
      extra.length
    ) {
      throw new UsageError(`expected add NAME, remove NAME or list`);
    }
    if (action === "list" && !v.cluster && !await exists(dir)) return 0; // nothing to list
    const store = v.cluster
      ? await ClusterNames.open(v.cluster as string)
      : await NameStore.open(dir);
    if (action === "list") {
      for (const n of store.names()) {
        console.log(`${n}${store.get(n)?.clientKey ? " (private)" : ""}`);
      }
      return 0;
    }
    if (action === "remove") {
      if (await store.remove(name)) {
        console.log(`Removed ${name} from ${store.path}`);
        return 0;
      }
      console.error(`error: no name ${name} in ${store.path}`);
      return 1;
    }
    let record;
    try {
      record = await store.add(name, {
        private: !!v.private,
        replace: !!v.replace,
      });
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      const hint = e.message === `Name ${name} exists`
        ? " (use --replace to give it a new secret)"
        : "";
      throw new UsageError(e.message + hint);
    }
    console.log(`name:   ${name}\nsecret: ${record.secret}`);
    if (record.clientKey) console.log(`key:    ${record.clientKey}`);
    return 0;
  });
}
