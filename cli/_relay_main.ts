/**
 * The relay executable: its settings from flags and a config file, logging,
 * the credentials store or the cluster, the admin server, live reloads, and
 * a drain on Ctrl-C. `relay.ts` loads it only when run as a program.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { serveRelay } from "../relay.ts";
import { formatAddr } from "../protocol/_wire.ts";
import {
  parseRelayFlags,
  readFlagFile,
  RELAY_USAGE,
  type RelayCommandLine,
  relayOptions,
  settle,
  stopOnSignals,
} from "./_relay.ts";
import { runNames } from "./_names.ts";
import { applyLive, ConfigReloader, readConfig } from "./_config.ts";
import { runMain, setupLogging } from "./_common.ts";
import { clusterFlags } from "../cluster/_flags.ts";
import { NameStore } from "../engine/_store.ts";
import { adminFromSettings } from "../admin/_flags.ts";
import { redact } from "../cluster/_registry.ts";

/** `relay.ts [flags]` and `relay.ts names …`: runs the relay executable. */
export async function runRelay(args: string[]): Promise<never> {
  if (args[0] === "names") return await runNames(args.slice(1));
  return await runMain(
    RELAY_USAGE,
    () => ({ ...parseRelayFlags(args) }),
    async (v) => {
      const { config, flags } = v as unknown as RelayCommandLine;
      const read = config ? await readConfig(config) : undefined;
      const file = read?.values ?? {};
      const running = settle(file, flags);
      const { options, cli } = relayOptions(running);
      await setupLogging(cli.logLevel as string, cli.logFormat as string);
      const log = getLogger(["tcp-relay", "relay"]);
      let store: NameStore | undefined;
      const cluster = clusterFlags(
        running as Record<string, string | boolean | undefined>,
        readFlagFile,
      );
      if (cli.data) {
        store = await NameStore.open(cli.data as string);
        options.names = store;
        log.info("Credentials from {path}: {count} owned names", {
          path: store.path,
          count: store.names().length,
        });
      }
      const admin = await adminFromSettings(running);
      const relay = serveRelay({ ...options, cluster });
      await using _admin = await admin?.start(relay, store);
      using _stop = stopOnSignals(
        relay,
        () => running["drain-timeout"] as number,
      );
      using _config = config
        ? new ConfigReloader({
          path: config,
          flags,
          file,
          text: read!.text,
          running,
          apply: (changes) => applyLive(relay, changes),
        }).watch()
        : undefined;
      if (cluster) {
        const timer = setTimeout(
          () =>
            log.warn(
              "Cluster's Redis unreachable: refusing every name until it is",
            ),
          5_000,
        );
        await relay.ready;
        clearTimeout(timer);
        log.info("Cluster node {node}: peers on {peer}, Redis {redis}", {
          node: cluster.node,
          peer: formatAddr(relay.peerAddr!),
          redis: redact(cluster.redis),
        });
      }
      using _watch = store?.watch(() =>
        log.info("Credentials reloaded from {path}", { path: store!.path })
      );
      const hup = () =>
        store?.reload().then(
          () => log.info("Credentials reloaded"),
          (e) =>
            log.error("Cannot reload credentials: {error}", {
              error: String(e),
            }),
        );
      if (store) {
        Deno.addSignalListener("SIGHUP", hup);
      }
      log.info("Relay listening: servers on {server}, clients on {client}", {
        server: formatAddr(relay.serverAddr),
        client: formatAddr(relay.clientAddr),
        tls: !!options.tls,
      });
      await relay.finished;
      if (store) Deno.removeSignalListener("SIGHUP", hup);
      log.info("Relay stopped");
    },
  );
}
