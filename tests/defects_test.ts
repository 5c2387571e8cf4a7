// Defects found by reading the engine (issue 8), each shown by a test that
// failed before its fix: bytes lost after a failed pairing (1), the PONG
// check outliving the heartbeat (4), a name entry held across an await (5),
// and the other windows of #pair (a RELEASE or a client gone while a PONG is
// awaited). Real relays and real sockets; where a window opens only on a
// slow link, over tests/_slowlink.ts.

import { strictEqual } from "node:assert/strict";
import {
  ask,
  park,
  Raw,
  readAll,
  reserve,
  reset,
  resettable,
  startRelay,
  type TestRelay,
  text,
  until,
} from "./_helpers.ts";
import { within } from "./_hostile.ts";
import { Proc } from "./_proc.ts";
import { type Role, slowRelay } from "./_slowlink.ts";

function hasRuby(): boolean {
  try {
    return new Deno.Command("ruby", { args: ["--version"] }).outputSync()
      .success;
  } catch {
    return false;
  }
}
const NO_RUBY = !hasRuby();

/** A raw v2 server on `port`: greeting, HELLO 2, and `request` sent; returns it. */
async function v2Server(port: number, request: string): Promise<Raw> {
  const raw = await Raw.open(port);
  strictEqual(await raw.line(), "SERVER");
  await raw.send("HELLO 2\n");
  strictEqual((await raw.line())?.slice(0, 8), "HELLO 2 ");
  await raw.send(`${request}\n`);
  return raw;
}

// A peer that sends `CONNECT name` and resets its connection (SO_LINGER 0),
// told to go on its stdin; it prints SERVER once greeted.
const CONNECT_AND_RESET = `
require 'socket'
$stdout.sync = true
port, name, marker = ARGV
s = TCPSocket.new('127.0.0.1', Integer(port))
puts s.gets
$stdin.gets
s.write "CONNECT\\n#{name}\\n"
s.setsockopt(Socket::SOL_SOCKET, Socket::SO_LINGER, [1, 0].pack('ii'))
s.close
File.write(marker, 'sent')
`;

/**
 * A server that sends `CONNECT name` and resets at once, so that the relay's
 * write of CONNECTED to it fails: this thread (and the relay in it) is held
 * until both the request and the reset are in, and the relay reads them
 * together.
 */
async function connectAndReset(relay: TestRelay, name: string) {
  const marker = await Deno.makeTempFile();
  await Deno.remove(marker);
  await using peer = new Proc("ruby", [
    ...["-e", CONNECT_AND_RESET, String(relay.serverAddr.port), name, marker],
  ], { stdin: true });
  await peer.wait(/SERVER/);
  await until(() => relay.stats().handshaking === 1, "the relay to read");
  await peer.write("go\n");
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const end = Date.now() + 10_000;
  for (;;) {
    try {
      Deno.statSync(marker);
      break;
    } catch {
      if (Date.now() > end) throw new Error("the peer never reset");
      Atomics.wait(pause, 0, 0, 5); // holds the thread: no relay code runs
    }
  }
  await peer.status();
  await Deno.remove(marker);
}

Deno.test({
  name:
    "a waiting client's bytes all arrive in order after a server that reset at once was passed over",
  ignore: NO_RUBY,
  fn: async () => {
    await using relay = startRelay({ wait: 10_000 });
    await reserve(relay, "n");
    using c = await ask(relay, "n");
    await until(() => relay.stats().waiting === 1, "the client to wait");
    await c.send("A");
    await connectAndReset(relay, "n");
    await until(() => relay.stats().connections === 1, "the reset one gone");
    await c.send("B");
    using s = await park(relay, "n");
    strictEqual(await c.line(), "CONNECTED");
    strictEqual(await s.line(), "CONNECTED");
    await c.send("C");
    await c.conn.closeWrite();
    strictEqual(text(await readAll(s.conn)), "ABC");
  },
});

/** A promise, and when each role's writes of a line starting with `word` happen. */
function holdLine(role: Role, word: string) {
  const gate = Promise.withResolvers<void>();
  const reached = Promise.withResolvers<void>();
  return {
    gate,
    reached: reached.promise,
    write: (r: Role, bytes: Uint8Array) => {
      if (r !== role || !text(bytes).startsWith(word)) return;
      reached.resolve();
      return gate.promise;
    },
  };
}

/** Waits a task: what the relay's reads brought has been dealt with. */
const aTask = () => new Promise((r) => setTimeout(r, 0));

for (const v2 of [true, false]) {
  Deno.test(
    `a ${
      v2 ? "v2" : "v1"
    } server that speaks and half-closes the moment it hears CONNECTED is relayed, not dropped`,
    async () => {
      const hold = holdLine("client", "CONNECTED");
      const spoke = Promise.withResolvers<void>();
      await using relay = slowRelay({
        write: hold.write,
        read: (role, bytes) => {
          if (role === "server" && text(bytes).includes("SSH-2.0")) {
            spoke.resolve();
          }
        },
      });
      using s = v2
        ? await v2Server(relay.serverPort, "CONNECT n")
        : await Raw.open(relay.serverPort);
      if (v2) strictEqual(await s.line(), "PARKED 15");
      else {
        strictEqual(await s.line(), "SERVER");
        await s.send("CONNECT\nn\n");
        await until(() => relay.engine.stats().parked.n === 1, "parked");
      }
      using c = await Raw.open(relay.clientPort);
      strictEqual(await c.line(), "CLIENT");
      await c.send("n\n");
      await hold.reached; // the server has its CONNECTED, the client not yet
      strictEqual(await s.line(), "CONNECTED");
      await s.send("SSH-2.0-test\r\n");
      await s.conn.closeWrite();
      await spoke.promise;
      await aTask();
      hold.gate.resolve();
      strictEqual(await c.line(), "CONNECTED");
      strictEqual(await c.line(), "SSH-2.0-test");
      strictEqual(await c.line(), null);
      await c.send("reply");
      await c.conn.closeWrite();
      strictEqual(await s.text(), "reply");
    },
  );
}

Deno.test("a RELEASE while a v2 server's PARKED is on its way closes that server too", async () => {
  const hold = holdLine("server", "PARKED");
  await using relay = slowRelay({ write: hold.write });
  using s = await v2Server(relay.serverPort, "CONNECT n");
  await hold.reached;
  using r = await Raw.open(relay.serverPort);
  await r.send("RELEASE\nn\n");
  strictEqual(await r.text(), "SERVER\nOK\n");
  hold.gate.resolve();
  strictEqual(await s.line(), "PARKED 15");
  await until(
    () => relay.engine.stats().connections === 0,
    "the server parked for a released name to be closed",
  );
  strictEqual(await s.line(), null);
});

/** A v2 server parked under "n" on `relay` that has a PING it has not answered. */
async function pingedServer(relay: TestRelay): Promise<Raw> {
  const s = await v2Server(relay.serverAddr.port, "CONNECT n");
  strictEqual(await s.line(), "PARKED 0.5");
  strictEqual(await s.line(), "PING");
  return s;
}

Deno.test("a RELEASE while a client waits for a parked server's PONG closes both, as it closes waiting connections", async () => {
  await using relay = startRelay({ heartbeat: 500 });
  using s = await pingedServer(relay);
  using c = await ask(relay, "n");
  await until(() => relay.stats().parked.n === 0, "the client to be matched");
  using r = await Raw.open(relay.serverAddr.port);
  await r.send("RELEASE\nn\n");
  strictEqual(await r.text(), "SERVER\nOK\n");
  await s.send("PONG\n");
  strictEqual(await within(c.text(), 5000, "the client to be closed"), "");
  strictEqual(await within(s.line(), 5000, "the server to be closed"), null);
});

Deno.test("a client that resets while the relay waits for a PONG leaves the server parked for the next client", async () => {
  await using relay = startRelay({ heartbeat: 500 });
  using s = await pingedServer(relay);
  const gone = await resettable(relay.clientAddr.port, "n\n");
  await until(() => relay.stats().parked.n === 0, "the client to be matched");
  await reset(gone);
  await until(() => relay.stats().connections === 1, "the client to be gone");
  await s.send("PONG\n");
  await until(() => relay.stats().parked.n === 1, "the server back in line");
  using c = await ask(relay, "n");
  strictEqual(await c.line(), "CONNECTED");
  strictEqual(await s.line(), "CONNECTED");
  await c.send("hi");
  await c.conn.closeWrite();
  strictEqual(text(await readAll(s.conn)), "hi");
});
