/**
 * In-memory block allocator: one bit per data block (1 = used), rebuilt from the index at open().
 * Next-fit from a rotating cursor hands out contiguous runs where it can, so one group-commit cycle
 * usually lands in one run and is written with one writev.
 *
 * Memory: blockCount / 8 bytes (32 MiB for a 1 TiB disk).
 */
import assert from 'node:assert/strict';

export interface Extent {
  /** First physical block (0 = first block of the data area). */
  start: number;
  count: number;
}

export class BlockAllocator {
  readonly blockCount: number;
  private readonly words: Uint32Array;
  private used = 0;
  private cursor = 0;

  constructor(blockCount: number) {
    assert(Number.isInteger(blockCount) && blockCount > 0);
    this.blockCount = blockCount;
    this.words = new Uint32Array(Math.ceil(blockCount / 32));
  }

  get usedBlocks(): number {
    return this.used;
  }

  get freeBlocks(): number {
    return this.blockCount - this.used;
  }

  isUsed(block: number): boolean {
    assert(block >= 0 && block < this.blockCount, 'physical block in range');
    return ((this.words[block >>> 5] as number) & (1 << (block & 31))) !== 0;
  }

  /** Marks a block used while rebuilding from the index; false if it was already used (a duplicate). */
  markUsed(block: number): boolean {
    if (this.isUsed(block)) return false;
    this.setBit(block);
    return true;
  }

  /**
   * Allocates `count` blocks as few runs as the free space allows, or returns null (and allocates
   * nothing) when fewer than `count` blocks are free.
   */
  allocate(count: number): Extent[] | null {
    assert(Number.isInteger(count) && count > 0);
    if (count > this.freeBlocks) return null;
    const extents: Extent[] = [];
    let need = count;
    let scanned = 0;
    let block = this.cursor;
    while (need > 0) {
      assert(scanned <= this.blockCount + 32, 'free count said there was room');
      if (block >= this.blockCount) block = 0;
      const word = this.words[block >>> 5] as number;
      if ((block & 31) === 0 && word === 0xffff_ffff) {
        block += 32;
        scanned += 32;
        continue;
      }
      if ((word & (1 << (block & 31))) === 0) {
        this.setBit(block);
        const last = extents[extents.length - 1];
        if (last !== undefined && last.start + last.count === block) last.count++;
        else extents.push({ start: block, count: 1 });
        need--;
      }
      block++;
      scanned++;
    }
    this.cursor = block >= this.blockCount ? 0 : block;
    return extents;
  }

  /** Returns a block to the free pool. It must be allocated (asserted: a double free is our bug). */
  free(block: number): void {
    assert(this.isUsed(block), `freeing block ${block} that is not allocated`);
    this.words[block >>> 5] = (this.words[block >>> 5] as number) & ~(1 << (block & 31));
    this.used--;
    assert(this.used >= 0);
  }

  private setBit(block: number): void {
    assert(!this.isUsed(block), `block ${block} handed out twice`);
    this.words[block >>> 5] = (this.words[block >>> 5] as number) | (1 << (block & 31));
    this.used++;
    assert(this.used <= this.blockCount);
  }
}
