// The seed's wire protocol (v1), byte for byte, spoken by hand over raw sockets.
// Every exchange is read to the end of stream so that nothing extra can hide.

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import {
  ask,
  park,
  Raw,
  startRelay,
  type TestRelay,
  until,
} from "./_helpers.ts";

/** Opens the server port, sends `input` at once, returns every byte until EOF. */
async function serverSays(relay: TestRelay, input: string): Promise<string> {
  using raw = await Raw.open(relay.serverAddr.port);
  await raw.send(input);
  return await raw.text();
}

/** Opens the client port, sends `input` at once, returns every byte until EOF. */
async function clientSays(relay: TestRelay, input: string): Promise<string> {
  using raw = await Raw.open(relay.clientAddr.port);
  await raw.send(input);
  return await raw.text();
}

Deno.test("server port greets with exactly SERVER and STOP closes without a reply", async () => {
  await using relay = startRelay();
  using raw = await Raw.open(relay.serverAddr.port);
  assertEquals(await raw.line(), "SERVER");
  await raw.send("STOP\n");
  assertEquals(await raw.text(), "");
});

Deno.test("client port greets with exactly CLIENT and an EOF instead of a name closes silently", async () => {
  await using relay = startRelay();
  using raw = await Raw.open(relay.clientAddr.port);
  await raw.conn.closeWrite();
  assertEquals(await raw.text(), "CLIENT\n");
  await until(() => relay.stats().connections === 0, "the relay to close it");
});

Deno.test("RESERVE answers OK, a second RESERVE of the same name answers USED", async () => {
  await using relay = startRelay();
  assertEquals(await serverSays(relay, "RESERVE\nweb\n"), "SERVER\nOK\n");
  assertEquals(await serverSays(relay, "RESERVE\nweb\n"), "SERVER\nUSED\n");
  assertEquals(await serverSays(relay, "RESERVE\nother\n"), "SERVER\nOK\n");
});

Deno.test("a name taken by CONNECT alone is reserved: RESERVE answers USED", async () => {
  await using relay = startRelay();
  using s = await park(relay, "web");
  await until(() => relay.stats().parked.web === 1, "the server to park");
  assertEquals(await serverSays(relay, "RESERVE\nweb\n"), "SERVER\nUSED\n");
  s.close();
});

Deno.test("RELEASE answers OK; the name then gets NOEXIST and its parked conns are closed", async () => {
  await using relay = startRelay({ wait: 10_000 });
  assertEquals(await serverSays(relay, "RESERVE\nweb\n"), "SERVER\nOK\n");
  using s = await park(relay, "web");
  await until(() => relay.stats().parked.web === 1, "the server to park");
  assertEquals(await serverSays(relay, "RELEASE\nweb\n"), "SERVER\nOK\n");
  assertEquals(await s.text(), ""); // closed, never told CONNECTED
  assertEquals(await clientSays(relay, "web\n"), "CLIENT\nNOEXIST\n");
  // Releasing a name nobody holds is harmless.
  assertEquals(await serverSays(relay, "RELEASE\nweb\n"), "SERVER\nOK\n");
});

Deno.test("STOP closes without a reply", async () => {
  await using relay = startRelay();
  assertEquals(await serverSays(relay, "STOP\n"), "SERVER\n");
  assertEquals(await serverSays(relay, "stop\r\n"), "SERVER\n");
});

Deno.test("an unknown command gets UNKNOWN COMMAND and a close", async () => {
  await using relay = startRelay();
  assertEquals(await serverSays(relay, "HELLO\n"), "SERVER\nUNKNOWN COMMAND\n");
  assertEquals(await serverSays(relay, "\n"), "SERVER\nUNKNOWN COMMAND\n");
  assertEquals(
    await serverSays(relay, "RESERVED\nweb\n"),
    "SERVER\nUNKNOWN COMMAND\n",
  );
  assertEquals(relay.stats().parked, {}); // nothing was reserved by them
});

Deno.test("commands are case-insensitive", async () => {
  await using relay = startRelay({ wait: 50 });
  assertEquals(await serverSays(relay, "reserve\nweb\n"), "SERVER\nOK\n");
  assertEquals(await serverSays(relay, "ReSeRvE\nweb\n"), "SERVER\nUSED\n");
  assertEquals(await serverSays(relay, "Release\nweb\n"), "SERVER\nOK\n");
  using s = await Raw.open(relay.serverAddr.port);
  await s.send("connect\nweb\n");
  await until(
    () => relay.stats().parked.web === 1,
    "a lower-case CONNECT to park",
  );
  using c = await ask(relay, "web");
  assertEquals(await c.line(), "CONNECTED");
  assertEquals(await s.line(), "SERVER");
  assertEquals(await s.line(), "CONNECTED");
});

Deno.test("names are case-sensitive: Web is not web", async () => {
  await using relay = startRelay();
  assertEquals(await serverSays(relay, "RESERVE\nweb\n"), "SERVER\nOK\n");
  assertEquals(await clientSays(relay, "Web\n"), "CLIENT\nNOEXIST\n");
});

Deno.test("lines ending in \\r\\n are tolerated on both ports", async () => {
  await using relay = startRelay({ wait: 50 });
  assertEquals(await serverSays(relay, "RESERVE\r\nweb\r\n"), "SERVER\nOK\n");
  assertEquals(await serverSays(relay, "RESERVE\nweb\n"), "SERVER\nUSED\n");
  using s = await Raw.open(relay.serverAddr.port);
  await s.send("CONNECT\r\nweb\r\n");
  await until(() => relay.stats().parked.web === 1, "the server to park");
  using c = await Raw.open(relay.clientAddr.port);
  await c.send("web\r\n");
  assertEquals(await c.line(), "CLIENT");
  assertEquals(await c.line(), "CONNECTED");
  await s.conn.closeWrite();
  await c.conn.closeWrite();
  assertEquals(await s.text(), "SERVER\nCONNECTED\n");
  assertEquals(await c.text(), "");
});

Deno.test("a client asking for an unknown name gets NOEXIST at once, even with a long wait", async () => {
  await using relay = startRelay({ wait: 10_000 });
  assertEquals(await clientSays(relay, "nobody\n"), "CLIENT\nNOEXIST\n");
  assertEquals(relay.stats().waiting, 0);
});

Deno.test("a client asking for a reserved name with nothing parked gets OFFLINE after waiting", async () => {
  await using relay = startRelay({ wait: 300 });
  assertEquals(await serverSays(relay, "RESERVE\nweb\n"), "SERVER\nOK\n");
  using c = await ask(relay, "web");
  const answer = c.text();
  await until(() => relay.stats().waiting === 1, "the client to wait");
  assertEquals(await answer, "OFFLINE\n"); // CLIENT was read by ask()
  assertEquals(relay.stats().waiting, 0);
});

Deno.test("on pairing the server gets CONNECTED, the client gets CONNECTED, and nothing else is sent", async () => {
  await using relay = startRelay();
  using s = await Raw.open(relay.serverAddr.port);
  await s.send("CONNECT\nweb\n");
  await until(() => relay.stats().parked.web === 1, "the server to park");
  using c = await Raw.open(relay.clientAddr.port);
  await c.send("web\n");
  // The relay writes to the server first: by the time the client holds its
  // CONNECTED, the server's is already on its way.
  assertEquals(await c.line(), "CLIENT");
  assertEquals(await c.line(), "CONNECTED");
  assertEquals(await s.line(), "SERVER");
  assertEquals(await s.line(), "CONNECTED");
  await until(() => relay.stats().activePairs === 1, "the pair");
  await c.conn.closeWrite();
  await s.conn.closeWrite();
  assertEquals(await s.text(), "");
  assertEquals(await c.text(), "");
  await until(() => relay.stats().connections === 0, "the pair to close");
});

Deno.test("a parked server hears nothing but SERVER until a client comes", async () => {
  await using relay = startRelay({ wait: 50 });
  using s = await Raw.open(relay.serverAddr.port);
  await s.send("CONNECT\nweb\n");
  await until(() => relay.stats().parked.web === 1, "the server to park");
  // Other traffic about the name leaves the parked server untouched.
  assertEquals(await serverSays(relay, "RESERVE\nweb\n"), "SERVER\nUSED\n");
  await s.conn.closeWrite(); // a parked server that ends is dropped and closed
  assertEquals(await s.text(), "SERVER\n");
});
