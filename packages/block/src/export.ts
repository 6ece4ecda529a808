/**
 * An NBD export whose backing volume can be switched while connections use it: after a snapshot
 * (or revert) the volume has a new data identity, and new requests must go to it. Requests in
 * flight on the old identity are counted so that a switch can wait for them to finish before the
 * block service confirms it applied the change (a write that lands in a snapshot's data after the
 * snapshot call returned would change the snapshot).
 */
import type { Volume } from '@storpool/client';
import { volumeExport, type NbdExport } from '@storpool/nbd';

interface Backing {
  export: NbdExport;
  inFlight: number;
  drained: (() => void)[];
}

export class SwitchableVolume {
  #backing: Backing;

  constructor(volume: Volume, name: string, readOnly: boolean) {
    this.#backing = { export: volumeExport(volume, { name, readOnly }), inFlight: 0, drained: [] };
  }

  /** New requests go to `volume`; resolves when the previous volume has no request in flight. */
  async switchTo(volume: Volume, name: string, readOnly: boolean): Promise<void> {
    const old = this.#backing;
    this.#backing = { export: volumeExport(volume, { name, readOnly }), inFlight: 0, drained: [] };
    if (old.inFlight > 0) await new Promise<void>((resolve) => old.drained.push(resolve));
  }

  async #run<T>(fn: (e: NbdExport) => Promise<T>): Promise<T> {
    const b = this.#backing;
    b.inFlight++;
    try {
      return await fn(b.export);
    } finally {
      if (--b.inFlight === 0) for (const r of b.drained.splice(0)) r();
    }
  }

  /** An export object for the NBD catalog (size and flags are fixed per object: make a new one when they change). */
  export(name: string, sizeBytes: number, readOnly: boolean): NbdExport {
    return {
      name, sizeBytes, readOnly,
      read: (offset, length) => this.#run((e) => e.read(offset, length)),
      write: (offset, data, fua) => this.#run((e) => e.write(offset, data, fua)),
      trim: (offset, length, fua) => this.#run((e) => e.trim(offset, length, fua)),
      writeZeroes: (offset, length, o) => this.#run((e) => e.writeZeroes(offset, length, o)),
      flush: () => this.#run((e) => e.flush()),
      cache: async () => {},
      blockStatus: (offset, length) => this.#run((e) => e.blockStatus(offset, length)),
    };
  }
}
