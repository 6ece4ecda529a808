/** Reads DT_NEEDED entries of an ELF64 little-endian file (the shared libraries it links). */
export function elfNeeded(file: Buffer): string[] | undefined {
  if (file.length < 64 || file.readUInt32BE(0) !== 0x7f454c46) return undefined; // not ELF
  if (file[4] !== 2 || file[5] !== 1) throw new Error('only ELF64 little-endian is supported');
  const shoff = Number(file.readBigUInt64LE(0x28));
  const shentsize = file.readUInt16LE(0x3a);
  const shnum = file.readUInt16LE(0x3c);
  const section = (i: number): { type: number; offset: number; size: number; link: number } => {
    const at = shoff + i * shentsize;
    return { type: file.readUInt32LE(at + 4), offset: Number(file.readBigUInt64LE(at + 0x18)), size: Number(file.readBigUInt64LE(at + 0x20)), link: file.readUInt32LE(at + 0x28) };
  };
  const needed: string[] = [];
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (s.type !== 6) continue; // SHT_DYNAMIC
    const strtab = section(s.link);
    for (let at = s.offset; at + 16 <= s.offset + s.size; at += 16) {
      const tag = file.readBigUInt64LE(at);
      if (tag === 0n) break;
      if (tag !== 1n) continue; // DT_NEEDED
      const start = strtab.offset + Number(file.readBigUInt64LE(at + 8));
      needed.push(file.toString('utf8', start, file.indexOf(0, start)));
    }
  }
  return needed;
}
