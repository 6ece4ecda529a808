import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERRORS, StorpoolError, codeFromWire, toStorpoolError, wireStatus, type ErrorCode } from '../src/index.js';

describe('error registry', () => {
  it('maps every code to a unique wire status and back', () => {
    const codes = Object.keys(ERRORS) as ErrorCode[];
    const statuses = new Set(codes.map(wireStatus));
    expect(statuses.size).toBe(codes.length);
    for (const code of codes) expect(codeFromWire(wireStatus(code))).toBe(code);
    expect(codeFromWire(65000)).toBe('INTERNAL_ERR');
  });

  it('documents every code in docs/errors.md', () => {
    const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
    for (const code of Object.keys(ERRORS)) expect(doc, `docs/errors.md lacks ${code}`).toContain(`\`${code}\``);
  });

  it('brands instances so instanceof survives duplicated copies', () => {
    const e = new StorpoolError('STORE_ERR_NO_SPACE');
    expect(e instanceof StorpoolError).toBe(true);
    expect(e.transient).toBe(false);
    expect(Object.assign(new Error('x'), { [Symbol.for('storpool.error')]: true }) instanceof StorpoolError).toBe(true);
    expect(new Error('x') instanceof StorpoolError).toBe(false);
    class SubError extends StorpoolError {}
    expect(new SubError('INTERNAL_ERR') instanceof SubError).toBe(true);
    expect(new SubError('INTERNAL_ERR') instanceof StorpoolError).toBe(true);
    expect(e instanceof SubError).toBe(false);
    expect(toStorpoolError(Object.assign(new Error('disk'), { code: 'ENOSPC' })).code).toBe('STORE_ERR_NO_SPACE');
    expect(toStorpoolError('boom').code).toBe('INTERNAL_ERR');
  });
});
