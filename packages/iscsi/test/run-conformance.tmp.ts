import { listTests, runConformance } from './conformance.js';
import { writeFileSync } from 'node:fs';
const [url, url2, out, filter] = process.argv.slice(2);
const tests = await listTests(new RegExp(filter ?? '.'));
const lines: string[] = [];
const r = await runConformance({ tests, url: url!, url2: url2!, timeoutMs: 20000, onTest: (n, v, o) => { lines.push(`${v} ${n}`); if (v === 'failed') lines.push(o.split('\n').filter((l) => /FAIL|rror/.test(l)).slice(0, 4).join('\n')); } });
writeFileSync(out!, lines.join('\n'));
console.log(`passed ${r.passed.length} skipped ${r.skipped.length} failed ${r.failed.length} in ${r.ms} ms`);
