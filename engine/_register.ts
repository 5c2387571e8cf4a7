/**
 * Open registration, bounded: the first v2 `RESERVE` of a free name makes
 * the caller its owner, but
 * - every owned name counts toward `maxNames` together with the names
 *   reserved that nobody owns (and the registrations under way), so the
 *   names (and a store's file) cannot grow past it;
 * - one source IP registers at most `maxRegistrationsPerIp` names an hour
 *   (loopback only with `limitLoopback`);
 * - the owner's `RELEASE` (with its proof) gives the name up: the owner is
 *   forgotten and anyone may register it anew.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { Guard } from "./_guard.ts";
import type { NameOwners } from "./_owners.ts";
import type { NameTable } from "./_table.ts";
import { Word } from "../protocol/_wire.ts";

const log = getLogger(["tcp-relay", "relay"]);

/** The relay's open registration over `owners` (which can `add`). */
export class Registrar {
  #owners: NameOwners;
  #guard: Guard;
  #table: NameTable;
  /** Owned names, counted when first needed and after each change made here. */
  #owned?: number;
  #pending = 0;

  constructor(owners: NameOwners, guard: Guard, table: NameTable) {
    this.#owners = owners;
    this.#guard = guard;
    this.#table = table;
  }

  /** The names counted toward `maxNames`: reserved, owned, being registered. */
  held(): number {
    this.#owned ??= this.#owners.names?.().length ?? 0;
    return this.#table.unowned + this.#owned + this.#pending;
  }

  #recount(change: number): void {
    this.#owned = this.#owners.names?.().length ??
      Math.max(0, (this.#owned ?? 0) + change);
  }

  /**
   * Registers the free name `name` for a server at `ip`: the line to answer
   * (`OK <secret>`), or why not and the line to answer then.
   */
  async register(
    name: string,
    ip: string,
  ): Promise<{ reply: string; refused?: string }> {
    if (!this.#guard.mayRegister(ip)) {
      return {
        refused: "too many registrations",
        reply:
          `ERROR RATE too many names registered from ${ip}; try again later`,
      };
    }
    this.#pending++;
    let secret: string;
    try {
      ({ secret } = await this.#owners.add!(name));
    } catch {
      return { refused: "name in use", reply: Word.USED };
    } finally {
      this.#pending--;
    }
    this.#guard.registered(ip);
    this.#recount(1);
    // A v1 server may have parked under the name while it was written (it
    // was nobody's then): it must not serve the new owner's clients.
    this.#table.release(name);
    this.#table.entry(name, true, true);
    return { reply: `${Word.OK} ${secret}` };
  }

  /** Forgets the owner of `name` (its RELEASE, proved); `name` may be registered anew. */
  async forget(name: string): Promise<void> {
    if (!this.#owners.remove) return;
    try {
      if (await this.#owners.remove(name)) this.#recount(-1);
    } catch (e) {
      log.error("Cannot forget the owner of {name}: {error}", {
        name,
        error: String(e),
      });
    }
  }
}
