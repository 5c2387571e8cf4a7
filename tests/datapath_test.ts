// Both data paths of the relay (`loop`, the default, and `streams`, pipeTo over
// our own Web Streams) under the same checks: half-close each way, every byte
// in order while both directions stream at once, and a reader that stalls.

import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import {
  firstDifference,
  pair,
  randomBytes,
  readAll,
  readExactly,
  sendAndClose,
  startRelay,
} from "./_helpers.ts";
import { writeAll } from "../protocol/_wire.ts";

for (const dataPath of ["loop", "streams"] as const) {
  Deno.test(`${dataPath} data path: a half-close each way, the answer after it still arrives`, async () => {
    await using relay = startRelay({ dataPath });
    const { s, c } = await pair(relay);
    using _s = s, _c = c;
    await sendAndClose(c.conn, s.conn, "question");
    await sendAndClose(s.conn, c.conn, "answer");
  });

  Deno.test(`${dataPath} data path: 16 MiB each way at once arrive in order`, async () => {
    await using relay = startRelay({ dataPath });
    const { s, c } = await pair(relay);
    using _s = s, _c = c;
    const up = randomBytes(16 << 20, 7), down = randomBytes(16 << 20, 8);
    const [atServer, atClient] = await Promise.all([
      readAll(s.conn),
      readAll(c.conn),
      writeAll(c.conn, up).then(() => c.conn.closeWrite()),
      writeAll(s.conn, down).then(() => s.conn.closeWrite()),
    ]);
    assertEquals(firstDifference(atServer, up), -1);
    assertEquals(firstDifference(atClient, down), -1);
    assertEquals(relay.stats().bytes, {
      clientToServer: up.length,
      serverToClient: down.length,
    });
  });

  Deno.test(`${dataPath} data path: a reader that stalls holds the writer back, then gets every byte`, async () => {
    await using relay = startRelay({ dataPath });
    const { s, c } = await pair(relay);
    using _s = s, _c = c;
    const data = randomBytes(48 << 20, 9);
    let written = 0;
    const writing = (async () => {
      for (let off = 0; off < data.length; off += 1 << 16) {
        await writeAll(c.conn, data.subarray(off, off + (1 << 16)));
        written = off + (1 << 16);
      }
      await c.conn.closeWrite();
    })();
    // Wait until the writer stops making progress: the relay stopped reading.
    let last = -1;
    while (written !== last) {
      last = written;
      await new Promise((r) => setTimeout(r, 200));
    }
    ok(written < data.length, `the writer never stalled (${written} bytes)`);
    const got = await readExactly(s.conn, data.length);
    await writing;
    assertEquals(firstDifference(got, data), -1);
  });
}
