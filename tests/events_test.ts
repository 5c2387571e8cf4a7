// The engine's events and what is built on them: stats by code and by name,
// the live list of pairs, closing a pair or a name, the relay's state.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import type { RelayEvent } from "../relay.ts";
import {
  ask,
  pair,
  park,
  readExactly,
  startRelay,
  text,
  until,
} from "./_helpers.ts";

Deno.test("a pairing emits accepted, handshake, parked, paired and pairEnded with the bytes each way", async () => {
  await using relay = startRelay();
  const seen: RelayEvent[] = [];
  using _sub = relay.events.on((e) => seen.push(e));
  const { s, c } = await pair(relay, "ev");
  await c.send("hello");
  assertEquals(text(await readExactly(s.conn, 5)), "hello");
  await s.send("hi");
  assertEquals(text(await readExactly(c.conn, 2)), "hi");
  s.close();
  c.close();
  await until(() => seen.some((e) => e.type === "pairEnded"), "the pair end");
  const types = seen.map((e) => e.type);
  for (const t of ["accepted", "handshake", "parked", "paired"] as const) {
    ok(types.includes(t), `${t} in ${types}`);
  }
  const ended = seen.find((e) => e.type === "pairEnded");
  ok(ended?.type === "pairEnded");
  assertEquals(ended.pair.name, "ev");
  assertEquals(ended.pair.bytes, { clientToServer: 5, serverToClient: 2 });
  ok(ended.ms >= 0);
  assertEquals(relay.stats().names.ev, { parked: 0, waiting: 0, active: 0 });
});

Deno.test("refusals carry a code apart from their text: stats count them by code", async () => {
  await using relay = startRelay({ wait: 0 });
  using c = await ask(relay, "nobody-here");
  assertEquals(await c.line(), "NOEXIST");
  await until(() => relay.stats().refusals === 1, "the refusal");
  assertEquals(relay.stats().refusalsByCode, { NOEXIST: 1 });
});

Deno.test("pairs() lists a live pair with its bytes; closePair closes it", async () => {
  await using relay = startRelay();
  const { s, c } = await pair(relay, "live");
  using _s = s, _c = c;
  await c.send("12345678");
  await readExactly(s.conn, 8);
  const [info] = relay.pairs();
  assertEquals(
    [info.name, info.bytes.clientToServer, info.bytes.serverToClient],
    ["live", 8, 0],
  );
  assertEquals(relay.stats().names.live.active, 1);
  ok(relay.closePair(info.id));
  assertEquals(await c.line(), null);
  ok(!relay.closePair(info.id));
  assertEquals(relay.pairs(), []);
});

Deno.test("closeName closes the parked servers and pairs of a name and keeps the others", async () => {
  await using relay = startRelay();
  const { s, c } = await pair(relay, "gone");
  using _s = s, _c = c;
  using parkedGone = await park(relay, "gone");
  using other = await park(relay, "stays");
  await until(
    () => relay.stats().parked.gone === 1 && relay.stats().parked.stays === 1,
    "both parked",
  );
  assertEquals(relay.closeName("gone"), 3);
  assertEquals(await parkedGone.line(), null);
  assertEquals(await c.line(), null);
  assertEquals(relay.stats().parked.stays, 1);
  other.close();
});

Deno.test("state is serving, then draining while pairs finish, then stopped", async () => {
  const relay = startRelay({ drainTimeout: 5000 });
  const { s, c } = await pair(relay, "drain");
  assertEquals(relay.state, "serving");
  const stopping = relay.shutdown();
  assertEquals(relay.state, "draining");
  s.close();
  c.close();
  await stopping;
  assertEquals(relay.state, "stopped");
});
