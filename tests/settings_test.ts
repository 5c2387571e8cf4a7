// The one table of settings: serveRelay's defaults and checks come from it,
// the executable's flags map onto serveRelay's options through it, and
// Relay.reconfigure changes what it marks live, over real sockets.

import {
  deepStrictEqual as assertEquals,
  ok,
  strictEqual,
  throws,
} from "node:assert/strict";
import { type Setting, SETTINGS } from "../engine/_settings.ts";
import { resolveOptions } from "../engine/_options.ts";
import { DEFAULT_LIMITS } from "../engine/_guard.ts";
import {
  DEFAULT_CLIENT_PORT,
  DEFAULT_DRAIN_TIMEOUT,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HEARTBEAT,
  DEFAULT_SERVER_PORT,
  DEFAULT_WAIT,
} from "../protocol/_wire.ts";
import { parseRelayFlags, relayOptions, settle } from "../cli/_relay.ts";
import { CLI_LIVE } from "../cli/_config.ts";
import { serveRelay } from "../relay.ts";
import { pair, Raw, send, startRelay } from "./_helpers.ts";

Deno.test("every setting has a flag, help, a type it can be checked by, and a default within its range", () => {
  const flags = new Set<string>(), keys = new Set<string>();
  for (const s of SETTINGS) {
    ok(/^[a-z][a-z-]*$/.test(s.flag), s.flag);
    ok(!flags.has(s.flag) && !keys.has(s.key), `${s.flag} declared twice`);
    flags.add(s.flag), keys.add(s.key);
    ok(s.help.length > 0, s.flag);
    if (s.type === "whole" || s.type === "seconds") {
      ok(s.min! <= s.max!, s.flag);
    }
    const d = s.default;
    if (d === undefined) continue;
    if (typeof d === "number") ok(d >= s.min! && d <= s.max!, s.flag);
    if (s.type === "choice") ok(s.choices!.includes(d as string), s.flag);
  }
});

Deno.test("serveRelay's defaults are the table's: the protocol's numbers and the default limits", () => {
  assertEquals(resolveOptions({}), {
    hostname: "0.0.0.0",
    serverPort: DEFAULT_SERVER_PORT,
    clientPort: DEFAULT_CLIENT_PORT,
    wait: DEFAULT_WAIT,
    handshakeTimeout: DEFAULT_HANDSHAKE_TIMEOUT,
    drainTimeout: DEFAULT_DRAIN_TIMEOUT,
    heartbeat: DEFAULT_HEARTBEAT,
    openRegistration: false,
    limits: DEFAULT_LIMITS,
    dataPath: "loop",
    reclaimMemory: false,
  });
});

/** Values of the library's type that a setting refuses, and the error class. */
function badValues(s: Setting): [unknown, ErrorConstructor][] {
  switch (s.type) {
    case "whole":
      return [[s.min! - 1, RangeError], [1.5, RangeError], ["7", TypeError]];
    case "seconds":
      return [[s.min! - 1, RangeError], [NaN, RangeError], ["5", TypeError]];
    case "boolean":
      return [["yes", TypeError], [1, TypeError]];
    case "choice":
      return [["nope", RangeError], [3, TypeError]];
    default:
      return [["", RangeError], [42, TypeError]];
  }
}

Deno.test("serveRelay refuses a bad value of every option with a TypeError or RangeError naming it", () => {
  for (const s of SETTINGS.filter((s) => s.library)) {
    for (const [value, E] of badValues(s)) {
      const options: Record<string, unknown> = {
        hostname: "127.0.0.1",
        serverPort: 0,
        clientPort: 0,
      };
      const [head, leaf] = s.key.split(".");
      if (leaf) {
        // tls needs both halves: give the other one a good value
        options[head] = { ...(head === "tls" ? { cert: "x", key: "x" } : {}) };
        (options[head] as Record<string, unknown>)[leaf] = value;
      } else options[head] = value;
      throws(() => serveRelay(options), (e: Error) => {
        ok(e instanceof E, `${s.key} = ${String(value)}: ${e}`);
        ok(e.message.startsWith(`${s.key} must be `), e.message);
        return true;
      });
    }
  }
});

Deno.test("serveRelay refuses equal ports, and a TLS certificate without its key", () => {
  throws(
    () => serveRelay({ serverPort: 8123, clientPort: 8123 }),
    (e: Error) =>
      e instanceof RangeError &&
      e.message === "serverPort and clientPort must differ (both 8123)",
  );
  throws(
    () => serveRelay({ tls: { cert: "x" } as { cert: string; key: string } }),
    (e: Error) =>
      e instanceof TypeError &&
      /tls\.cert and tls\.key go together/.test(e.message),
  );
});

for (const which of ["serverPort", "clientPort"] as const) {
  Deno.test(`serveRelay says which address it cannot listen on (${which} taken)`, () => {
    using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = taken.addr.port;
    throws(
      () =>
        serveRelay({
          hostname: "127.0.0.1",
          serverPort: 0,
          clientPort: 0,
          [which]: port,
        }),
      (e: Error) =>
        e instanceof Deno.errors.AddrInUse &&
        e.message === `Cannot listen on 127.0.0.1:${port}: address in use`,
    );
  });
}

Deno.test("every flag maps onto its serveRelay option, seconds to ms, files read", async () => {
  const tmp = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(tmp, "PEM TEXT");
    const cmd = parseRelayFlags([
      ...["--host", "127.0.0.2", "--server-port", "1", "--client-port", "2"],
      ...["--wait", "1.5", "--handshake-timeout", "2", "--drain-timeout", "3"],
      ...["--heartbeat", "0.25", "--data", "/srv/names", "--open-registration"],
      ...["--tls-cert", tmp, "--tls-key", tmp, "--max-connections", "11"],
      ...["--max-per-ip", "12", "--max-parked-per-name", "13"],
      ...["--max-failed-proofs", "14", "--max-names", "15", "--limit-loopback"],
      ...["--max-registrations-per-ip", "16"],
      ...["--data-path", "streams", "--no-reclaim", "--log-level", "debug"],
      ...["--log-format", "json", "--cluster", "redis://127.0.0.1:6379"],
      ...["--node", "a", "--peer-port", "7011", "--advertise", "h:7011"],
      ...["--cluster-secret-file", tmp, "--peer-tls", "--peer-ca", tmp],
      ...["--admin", "9100", "--admin-token-file", tmp],
    ]);
    // every setting given: none left to its default
    assertEquals(
      Object.keys(cmd.flags).sort(),
      SETTINGS.map((s) => s.flag).sort(),
    );
    const { options, cli } = relayOptions(settle({}, cmd.flags));
    assertEquals(options, {
      hostname: "127.0.0.2",
      serverPort: 1,
      clientPort: 2,
      wait: 1500,
      handshakeTimeout: 2000,
      drainTimeout: 3000,
      heartbeat: 250,
      openRegistration: true,
      tls: { cert: "PEM TEXT", key: "PEM TEXT" },
      limits: {
        maxConnections: 11,
        maxPerIp: 12,
        maxParkedPerName: 13,
        maxFailedProofs: 14,
        maxNames: 15,
        maxRegistrationsPerIp: 16,
        limitLoopback: true,
      },
      dataPath: "streams",
      reclaimMemory: false,
    });
    assertEquals(cli, {
      data: "/srv/names",
      logLevel: "debug",
      logFormat: "json",
      cluster: "redis://127.0.0.1:6379",
      node: "a",
      peerPort: 7011,
      advertise: "h:7011",
      clusterSecretFile: tmp,
      peerTls: true,
      peerCa: tmp,
      admin: "9100",
      adminTokenFile: tmp,
    });
  } finally {
    await Deno.remove(tmp);
  }
});

Deno.test("relay.reconfigure lowers a limit live: a pair open stays and carries bytes, a new connection is refused", async () => {
  await using relay = startRelay({
    handshakeTimeout: 60_000,
    limits: { limitLoopback: true, maxPerIp: 3 },
  });
  const { s, c } = await pair(relay, "live");
  using _s = s, _c = c;
  using held = await Raw.open(relay.clientAddr.port); // in its handshake
  strictEqual(await held.line(), "CLIENT");
  relay.reconfigure({ limits: { maxPerIp: 1 } });
  const refusals = relay.stats().refusals;
  using late = await Raw.open(relay.clientAddr.port);
  await late.text(); // closed
  strictEqual(relay.stats().refusals, refusals + 1);
  // refused on arrival, not at the handshake's deadline: the connection
  // opened before it is still in its handshake
  strictEqual(relay.stats().handshaking, 1);
  await send(c.conn, s.conn, "after the change");
  await send(s.conn, c.conn, "and back");
  // the limits not given stay: loopback still limited
  relay.reconfigure({ limits: { maxPerIp: 5 } });
  using _again = await Raw.open(relay.clientAddr.port);
  strictEqual(await _again.line(), "CLIENT");
  strictEqual(relay.stats().handshaking, 2);
});

Deno.test("relay.reconfigure refuses what needs a restart and bad values, changing nothing", async () => {
  await using relay = startRelay();
  for (
    const changes of [{ serverPort: 1 }, { wait: 1 }, { tls: {} }, { nope: 1 }]
  ) {
    throws(() => relay.reconfigure(changes as never), TypeError);
  }
  throws(
    () => relay.reconfigure({ handshakeTimeout: 50, limits: { maxPerIp: 0 } }),
    (e: Error) => e instanceof RangeError && /limits\.maxPerIp/.test(e.message),
  );
  // the good half of a refused change was not applied: handshakes still get 10 s
  using raw = await Raw.open(relay.clientAddr.port);
  strictEqual(await raw.line(), "CLIENT");
  await new Promise((r) => setTimeout(r, 200));
  strictEqual(relay.stats().handshaking, 1);
});

Deno.test("every live setting can be applied: serveRelay's by reconfigure, the executable's by its own applier", async () => {
  await using relay = startRelay();
  for (const s of SETTINGS.filter((s) => s.live)) {
    if (!s.library) {
      ok(CLI_LIVE[s.flag], `${s.flag} is live but nothing applies it`);
      continue;
    }
    const [head, leaf] = s.key.split(".");
    relay.reconfigure(
      (leaf
        ? { [head]: { [leaf]: s.default } }
        : { [head]: s.default }) as never,
    );
  }
});
