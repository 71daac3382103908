/**
 * A second process for concurrency.test.ts: prints 'ready', waits for a line on stdin, then
 * opens the deployment in argv[2] (perhaps creating it, racing the other worker) and appends
 * argv[3] audit rows as actor `cli:<argv[4]>`. Prints the deployment id and the seqs it got as
 * one JSON line.
 */
import { once } from 'node:events';

import { openDeployment } from '../../src/policy/deployment.ts';

const [dir, count, name] = process.argv.slice(2);

process.stdout.write('ready\n');
await once(process.stdin, 'data');
process.stdin.pause();

const deployment = openDeployment(dir!);
const seqs: number[] = [];
for (let i = 0; i < Number(count); i++) {
  const row = deployment.audit.append({ actor: `cli:${name}`, action: 'read', details: { i } });
  seqs.push(row.seq);
}
deployment.close();

process.stdout.write(JSON.stringify({ id: deployment.id, seqs }) + '\n');
