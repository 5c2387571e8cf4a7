/**
 * Who owns names: the contract every owners store keeps (the credentials
 * store `_store.ts`, the cluster's Redis `cluster/_owners.ts`), and the
 * owners kept in memory for open registration without a store.
 *
 * @module
 */

import { newSecret } from "../protocol/_auth.ts";

/** The owners of names: who may serve a name, and who may reach a private one. */
export interface NameOwners {
  /** The secrets of `name`, or `undefined` for a name nobody owns. */
  get(name: string): { secret: string; clientKey?: string } | undefined;
  /** Makes the caller the owner of `name` (open registration); rejects if it has one. */
  add?(name: string): Promise<{ secret: string }>;
  /** Forgets the owner of `name` (its RELEASE under open registration); true if it had one. */
  remove?(name: string): Promise<boolean>;
  /** Every owned name: with open registration they count toward `limits.maxNames`. */
  names?(): string[];
}

/** Owners kept in memory: open registration without a credentials store. */
export class MemoryOwners implements NameOwners {
  #owners = new Map<string, { secret: string }>();
  get(name: string) {
    return this.#owners.get(name);
  }
  add(name: string) {
    if (this.#owners.has(name)) {
      return Promise.reject(new RangeError(`Name ${name} exists`));
    }
    const owner = { secret: newSecret() };
    this.#owners.set(name, owner);
    return Promise.resolve(owner);
  }
  remove(name: string) {
    return Promise.resolve(this.#owners.delete(name));
  }
  names() {
    return [...this.#owners.keys()];
  }
}
