// listen()'s RelayListener: leaving a for await closes it, and its ready,
// state and lastError tell a parked listener from one whose relay is away
// or refuses for good.

import { ok, strictEqual } from "node:assert/strict";
import { connect, listen, RelayError } from "../mod.ts";
import {
  freePorts,
  localService,
  Raw,
  readAll,
  rejectsWith,
  sendAndClose,
  startRelay,
  type TestRelay,
  until,
} from "./_helpers.ts";

function parked(relay: TestRelay, name: string): number {
  return relay.stats().parked[name] ?? 0;
}

Deno.test("breaking out of for await over listen() closes the listener: nothing stays parked or reconnects", async () => {
  await using relay = startRelay();
  const listener = listen({ relay: relay.server, name: "brk", pool: 2 });
  const served = (async () => {
    for await (const conn of listener) {
      conn.close();
      break;
    }
  })();
  await until(() => parked(relay, "brk") === 2, "2 parked conns");
  using client = await connect({ relay: relay.client, name: "brk" });
  await client.closeWrite();
  await readAll(client);
  await served;
  strictEqual(listener.state, "closed");
  await until(() => parked(relay, "brk") === 0, "the pool to be gone");
  // and it stays gone: no slot reconnects
  await new Promise((r) => setTimeout(r, 300));
  strictEqual(parked(relay, "brk"), 0);
  strictEqual(relay.stats().connections, 0);
  await listener[Symbol.asyncDispose]();
});

Deno.test("an exception thrown in the body of for await over listen() closes the listener", async () => {
  await using relay = startRelay();
  const listener = listen({ relay: relay.server, name: "thr", pool: 1 });
  const served = (async () => {
    for await (const conn of listener) {
      conn.close();
      throw new Error("handler failed");
    }
  })().catch((e) => e);
  await until(() => parked(relay, "thr") === 1, "a parked conn");
  using client = await connect({ relay: relay.client, name: "thr" });
  await readAll(client);
  strictEqual((await served).message, "handler failed");
  await until(() => parked(relay, "thr") === 0, "the pool to be gone");
  strictEqual(listener.state, "closed");
  await listener[Symbol.asyncDispose]();
});

Deno.test("listen() against a dead relay says so (retrying, UNREACHABLE), then is ready once the relay is up", async () => {
  const [serverPort, clientPort] = freePorts(2);
  await using listener = listen({
    relay: `127.0.0.1:${serverPort}`,
    name: "late",
    pool: 2,
    minBackoff: 10,
    maxBackoff: 50,
  });
  strictEqual(listener.state, "connecting");
  await until(() => listener.state === "retrying", "state retrying");
  ok(listener.lastError instanceof RelayError);
  strictEqual((listener.lastError as RelayError).code, "UNREACHABLE");
  ok(
    (listener.lastError as RelayError).message.includes(
      `127.0.0.1:${serverPort}`,
    ),
  );
  await using relay = startRelay({ serverPort, clientPort });
  await listener.ready;
  strictEqual(listener.state, "parked");
  strictEqual(listener.lastError, undefined);
  await until(() => parked(relay, "late") === 2, "2 parked conns");
  // the relay goes away: retrying again, and back once it returns
  await relay.shutdown();
  await until(() => listener.state === "retrying", "retrying again");
  await using again = startRelay({ serverPort, clientPort });
  await until(() => listener.state === "parked", "parked again");
  using c = await connect({ relay: again.client, name: "late" });
  using s = await listener.accept();
  await sendAndClose(c, s, "back");
});

Deno.test("listen() refused for good rejects ready with the error and ends in state failed", async () => {
  await using fake = localService(async (conn) => {
    const raw = new Raw(conn);
    await raw.send("SERVER\n");
    await raw.line();
    await raw.send("HELLO 2 0123456789abcdef\n");
    await raw.line();
    await raw.send("ERROR AUTH wrong proof\n");
  });
  const listener = listen({ relay: fake.to, name: "x", pool: 1 });
  await rejectsWith(listener.ready, "AUTH");
  strictEqual(listener.state, "failed");
  strictEqual((listener.lastError as RelayError).code, "AUTH");
  await rejectsWith(listener.accept(), "AUTH");
  await listener[Symbol.asyncDispose]();
});

Deno.test("a listener closed before it parked rejects ready with CLOSED; a ready left unawaited is no unhandled rejection", async () => {
  const [port] = freePorts(1);
  const unawaited = listen({ relay: `127.0.0.1:${port}`, name: "x" });
  unawaited.close();
  const listener = listen({ relay: `127.0.0.1:${port}`, name: "x" });
  listener.close();
  await rejectsWith(listener.ready, "CLOSED");
  strictEqual(listener.state, "closed");
  await listener[Symbol.asyncDispose]();
  await unawaited[Symbol.asyncDispose]();
  await new Promise((r) => setTimeout(r, 10)); // an unhandled rejection would show now
});
