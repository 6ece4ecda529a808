import { describe, expect, it } from 'vitest';
import { planCreate, parseSize } from '../src/options.js';

const defaults = { sizeBytes: 10 * 2 ** 30, template: 'default', fs: 'ext4' as const };

describe('docker create options', () => {
  it('sizes: binary units, optional B/iB, multiples of 512', () => {
    expect(parseSize('1G')).toBe(2 ** 30);
    expect(parseSize('10GiB')).toBe(10 * 2 ** 30);
    expect(parseSize('512m')).toBe(512 * 2 ** 20);
    expect(parseSize('1.5T')).toBe(1.5 * 2 ** 40);
    expect(parseSize('4096')).toBe(4096);
    for (const bad of ['', 'G', '-1G', '1000', '0', '1X', '1e9']) expect(() => parseSize(bad), bad).toThrow(/size=/);
  });

  it('defaults: size and template; fs tag', () => {
    expect(planCreate('v', {}, defaults)).toEqual({ fs: 'ext4', request: { name: 'v', size: 10 * 2 ** 30, template: 'default', tags: { dockerFs: 'ext4' } } });
    expect(planCreate('v', null, defaults).request.size).toBe(10 * 2 ** 30);
  });

  it('a clone inherits placement and size unless given', () => {
    expect(planCreate('c', { snapshot: 's1' }, defaults).request).toEqual({ name: 'c', parent: 's1', tags: { dockerFs: 'ext4' } });
    expect(planCreate('c', { parent: 's1', size: '20G', replication: '2' }, defaults).request).toEqual({ name: 'c', parent: 's1', size: 20 * 2 ** 30, replication: 2, template: 'default', tags: { dockerFs: 'ext4' } });
  });

  it('rejects what it does not understand, with the option in the message', () => {
    expect(() => planCreate('v', { colour: 'x' }, defaults)).toThrow(/unknown option 'colour'/);
    expect(() => planCreate('v', { fs: 'zfs' }, defaults)).toThrow(/fs=zfs/);
    expect(() => planCreate('v', { replication: '0' }, defaults)).toThrow(/replication=0/);
    expect(() => planCreate('v', { template: 'a.b' }, defaults)).toThrow(/template=a.b/);
    expect(() => planCreate('v', { snapshot: 'a', parent: 'b' }, defaults)).toThrow(/only one/);
    expect(() => planCreate('v', { size: 1 }, defaults)).toThrow(/must be a string/);
    expect(() => planCreate('../x', {}, defaults)).toThrow(/invalid volume name/);
    expect(() => planCreate('x'.repeat(200), {}, defaults)).toThrow(/invalid volume name/);
  });
});
