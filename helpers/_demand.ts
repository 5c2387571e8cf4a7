/**
 * On-demand parking, the helper's side: one control connection per listener
 * (`WATCH <name>`) on which the relay tells how many clients wait beyond the
 * parked connections (`NEED <n>`). The listener then opens that many more at
 * once, in parallel, up to `maxPool` connections parked or being dialed (the
 * ones already on their way count against `n`); each extra one is parked
 * once and not replaced. Once no `NEED` came for `shrinkAfter` ms
 * ({@linkcode DEFAULT_SHRINK_AFTER} by default), each extra one still parked
 * answers its next `PING` with `STOP` and leaves: the pool shrinks back to
 * `pool`. Leaving on a `PING` and not at once is what keeps a client from
 * being paired with a connection as it closes: while a `PING` is out the
 * relay pairs none.
 *
 * A relay that does not know `WATCH` (`ERROR UNKNOWN`, or a v1 relay) is
 * remembered for 5 minutes, as a v1 relay is by the dial: the listener keeps
 * its fixed pool. A refusal that retrying cannot mend (`AUTH`) turns on-demand
 * parking off for the listener; the pool itself goes on as before.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { relayKey, withRelay } from "./_dial.ts";
import { isPermanent, refusal } from "./_hints.ts";
import { pause } from "../datapath/_accept.ts";
import { proof } from "../protocol/_auth.ts";
import { RelayError } from "../protocol/_errors.ts";
import {
  parseErrorLine,
  parseNeed,
  parseWatching,
  requestLine,
  Word,
} from "../protocol/_wire.ts";
import type { PoolOptions } from "./_listener.ts";

const log = getLogger(["tcp-relay", "server"]);

/** `maxPool` by default: connections parked or dialed at once at most. */
export const DEFAULT_MAX_POOL = 64;
/** How long after the last `NEED` the extra connections are closed, in ms. */
export const DEFAULT_SHRINK_AFTER = 5_000;
/** How long a relay that does not know `WATCH` is remembered, in ms. */
const NO_WATCH_MEMORY = 5 * 60_000;

/** Relays that do not know `WATCH`, and since when. */
const noWatch = new Map<string, number>();

/** An extra connection's answer of `STOP` to a `PING`: not needed any more. */
export class Unparked extends RelayError {
  constructor() {
    super("CLOSED", "Unparked: the crowd is gone");
  }
}

/** What on-demand parking needs of the listener. */
export interface DemandHost {
  /** Connections being dialed, parked, and paired but not yet accepted. */
  counts(): { dialing: number; parked: number; queued: number };
  /**
   * Opens one more connection, which leaves at a `PING` once `stay()` is
   * false; resolves once it was paired and delivered, failed, or left.
   */
  extra(stay: () => boolean): Promise<void>;
}

/** On-demand parking for one listener. */
export class Demand {
  #options: PoolOptions;
  #host: DemandHost;
  #signal: AbortSignal;
  #unmet = 0;
  #lastNeed = 0;
  #extras = new Set<Promise<void>>();
  #watching: Promise<void>;

  /** Starts watching; `signal` (the listener's) stops it all. */
  constructor(options: PoolOptions, signal: AbortSignal, host: DemandHost) {
    this.#options = options;
    this.#host = host;
    this.#signal = signal;
    this.#watching = this.#watch();
  }

  /** Room may have freed up: opens what the last `NEED` still asks for. */
  poke(): void {
    if (this.#unmet > 0) this.#fill();
  }

  /** Resolves once the watch connection and the extra ones are gone. */
  async closed(): Promise<void> {
    await this.#watching;
    await Promise.all(this.#extras);
  }

  #onNeed(n: number): void {
    // The connections on their way will each take one of the n.
    this.#unmet = Math.max(0, n - this.#host.counts().dialing);
    if (n > 0) this.#lastNeed = Date.now();
    this.#fill();
  }

  /** Whether an extra connection is still wanted: a `NEED` came lately. */
  #stay = (): boolean =>
    Date.now() - this.#lastNeed <
      (this.#options.shrinkAfter ?? DEFAULT_SHRINK_AFTER);

  #fill(): void {
    if (this.#signal.aborted) return;
    if (!this.#stay()) return void (this.#unmet = 0); // that NEED is old
    const { dialing, parked, queued } = this.#host.counts();
    const room = this.#options.maxPool - dialing - parked - queued;
    for (let k = Math.min(this.#unmet, room); k > 0; k--) {
      this.#unmet--;
      const extra: Promise<void> = this.#host.extra(this.#stay).finally(() =>
        this.#extras.delete(extra)
      );
      this.#extras.add(extra);
    }
  }

  /** Keeps a watch connection open, with backoff while the relay is away. */
  async #watch(): Promise<void> {
    const o = this.#options, signal = this.#signal;
    const min = o.minBackoff ?? 100, max = o.maxBackoff ?? 5_000;
    const { key, where } = relayKey(o, "server");
    let failures = 0;
    while (!signal.aborted) {
      const since = noWatch.get(key);
      const left = since === undefined
        ? 0
        : since + NO_WATCH_MEMORY - Date.now();
      if (left > 0) {
        await pause(left, signal);
        continue;
      }
      try {
        await watchOnce(
          { ...o, signal },
          () => failures = 0,
          (n) => this.#onNeed(n),
        );
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof RelayError && e.code === "UNKNOWN_COMMAND") {
          noWatch.set(key, Date.now());
          log.info(
            "Relay {relay} does not know WATCH: a fixed pool of {pool} for {name}",
            { relay: where, pool: o.pool, name: o.name },
          );
          continue;
        }
        if (isPermanent(e)) {
          log.warn("On-demand parking off for {name}: {error}", {
            name: o.name,
            error: String((e as Error)?.message ?? e),
          });
          return;
        }
        log.debug("Watch connection for {name} failed: {error}", {
          name: o.name,
          error: String((e as Error)?.message ?? e),
        });
      }
      const ms = Math.min(max, min * 2 ** failures++) * Math.random();
      await pause(ms, signal);
    }
  }
}

/**
 * One watch connection: `WATCH <name> [<proof>]`, then `NEED` lines to
 * `need` and `PONG` to each `PING`, until the connection ends (a
 * {@linkcode RelayError}). A relay that does not know `WATCH` rejects with
 * `UNKNOWN_COMMAND`.
 */
async function watchOnce(
  options: PoolOptions,
  watching: () => void,
  need: (n: number) => void,
): Promise<never> {
  const { name, secret } = options;
  const early = secret ? undefined : requestLine(Word.WATCH, name);
  return await withRelay(options, "server", async (s) => {
    if (secret) {
      const p = proof(secret, s.nonce!, Word.WATCH, name);
      await s.write(requestLine(Word.WATCH, name, p));
    }
    const answer = await s.read();
    const beat = parseWatching(answer);
    if (beat === undefined) {
      if (parseErrorLine(answer)?.code === "UNKNOWN") {
        throw new RelayError(
          "UNKNOWN_COMMAND",
          `Relay ${s.where} does not know WATCH`,
        );
      }
      throw refusal(answer, s.where, name);
    }
    watching();
    for (;;) {
      s.deadline(3 * beat); // two heartbeats missed, and some slack
      const got = await s.read();
      const n = parseNeed(got);
      if (n !== undefined) need(n);
      else if (got.toUpperCase() === Word.PING) await s.write(Word.PONG);
      else throw refusal(got, s.where, name);
    }
  }, { early, v2Only: true });
}
