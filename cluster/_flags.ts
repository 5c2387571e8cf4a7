/**
 * The relay's cluster flags as `serveRelay`'s `cluster` option, checked
 * (usage errors exit 2).
 *
 * @module
 */

import { UsageError } from "../cli/_common.ts";
import { parseHostPort } from "../protocol/_wire.ts";
import { checkClusterOptions, type ClusterOptions } from "./_node.ts";

/** The flags' values as parsed (`cli/_relay.ts`). */
type Values = Record<string, string | boolean | undefined>;

/**
 * `ClusterOptions` from `--cluster`, `--node`, `--peer-port`, `--advertise`,
 * `--cluster-secret-file` (or `TCP_RELAY_CLUSTER_SECRET`), `--peer-tls`,
 * `--peer-ca`; `undefined` without `--cluster`.
 */
export function clusterFlags(
  v: Values,
  readFile: (flag: string, path: string) => string,
): ClusterOptions | undefined {
  if (v.cluster === undefined) {
    for (
      const flag of ["node", "advertise", "cluster-secret-file", "peer-ca"]
    ) {
      if (v[flag] !== undefined) {
        throw new UsageError(`--${flag} goes with --cluster`);
      }
    }
    if (v["peer-tls"]) throw new UsageError("--peer-tls goes with --cluster");
    return undefined;
  }
  if (v.data !== undefined) {
    throw new UsageError(
      "--data and --cluster exclude each other: in a cluster, owned names live in Redis (relay.ts names add NAME --cluster URL)",
    );
  }
  if (!v.node) throw new UsageError("--cluster needs --node NAME");
  const secretFile = v["cluster-secret-file"] as string | undefined;
  const secret = secretFile !== undefined
    ? readFile("cluster-secret-file", secretFile).trim()
    : Deno.env.get("TCP_RELAY_CLUSTER_SECRET")?.trim();
  if (!secret) {
    throw new UsageError(
      "--cluster needs --cluster-secret-file FILE (or TCP_RELAY_CLUSTER_SECRET)",
    );
  }
  const peerPort = Number(v["peer-port"]);
  if (!/^\d{1,5}$/.test(String(v["peer-port"])) || peerPort > 65535) {
    throw new UsageError(`--peer-port takes a port, not "${v["peer-port"]}"`);
  }
  if (v.advertise !== undefined) {
    try {
      parseHostPort(v.advertise as string);
    } catch (e) {
      throw new UsageError(`--advertise: ${(e as Error).message}`);
    }
  }
  let tls: ClusterOptions["tls"];
  if (v["peer-tls"]) {
    if (!v["tls-cert"]) {
      throw new UsageError("--peer-tls needs --tls-cert and --tls-key");
    }
    tls = {
      cert: readFile("tls-cert", v["tls-cert"] as string),
      key: readFile("tls-key", v["tls-key"] as string),
      caCerts: v["peer-ca"] === undefined
        ? undefined
        : [readFile("peer-ca", v["peer-ca"] as string)],
    };
  } else if (v["peer-ca"] !== undefined) {
    throw new UsageError("--peer-ca goes with --peer-tls");
  }
  const options: ClusterOptions = {
    redis: v.cluster as string,
    node: v.node as string,
    secret,
    peerPort,
    advertise: v.advertise as string | undefined,
    tls,
  };
  try {
    checkClusterOptions(options);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return options;
}
