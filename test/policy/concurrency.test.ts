import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { openDeployment } from '../../src/policy/deployment.ts';
import { ref, tempDir } from './fixtures.ts';

const WORKER = fileURLToPath(new URL('./append-worker.ts', import.meta.url));
const REPO = fileURLToPath(new URL('../../', import.meta.url));

test('two connections appending in turn keep one chain', (t) => {
  const dir = tempDir(t);
  const server = openDeployment(dir);
  const cli = openDeployment(dir);
  t.teardown(() => {
    server.close();
    cli.close();
  });
  t.is(server.id, cli.id);

  for (let i = 0; i < 40; i++) {
    const writer = i % 3 === 0 ? cli : server;
    writer.audit.append({ actor: `cli:${i}`, action: 'search', details: { i } });
  }
  server.ledger.record({ identityRef: ref(1), faceUids: ['a'], reason: 'erase', actor: 'x' });
  cli.audit.append({ actor: 'cli:last', action: 'erase', identityRef: ref(1) });

  for (const reader of [server, cli]) {
    const result = reader.audit.verify();
    t.true(result.ok, JSON.stringify(result.firstBad));
    t.is(result.rows, 41);
  }
  t.deepEqual(
    server.audit.rows().map((row) => row.seq),
    Array.from({ length: 41 }, (_, i) => i + 1),
  );
  t.is(cli.audit.rows({ fromSeq: 41 })[0]!.actor, 'cli:last');
});

/** Starts a worker and resolves once it is ready; `result` resolves to its last line. */
async function startWorker(
  dir: string,
  count: number,
  name: string,
): Promise<{ child: ChildProcess; result: Promise<string> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, dir, String(count), name], {
    cwd: REPO,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));

  const result = new Promise<string>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(stdout.trim().split('\n').at(-1)!);
      else reject(new Error(`worker ${name} exited with ${code}: ${stderr}`));
    });
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.startsWith('ready\n')) resolve();
    });
    result.catch(reject);
  });
  return { child, result };
}

test('two processes creating and appending to one deployment at once keep one chain', async (t) => {
  const dir = path.join(tempDir(t), 'new-gallery');
  const count = 150;

  const workers = await Promise.all([startWorker(dir, count, 'a'), startWorker(dir, count, 'b')]);
  for (const { child } of workers) child.stdin!.end('go\n');
  const results = (await Promise.all(workers.map((w) => w.result))).map(
    (line) => JSON.parse(line) as { id: string; seqs: number[] },
  );

  t.is(results[0]!.id, results[1]!.id, 'one deployment id, though both created it at once');
  const seqs = [...results[0]!.seqs, ...results[1]!.seqs].sort((x, y) => x - y);
  t.deepEqual(
    seqs,
    Array.from({ length: 2 * count }, (_, i) => i + 1),
  );

  const deployment = openDeployment(dir, { mustExist: true });
  t.teardown(() => deployment.close());
  t.is(deployment.id, results[0]!.id);
  t.deepEqual(deployment.audit.verify().ok, true);
  t.is(deployment.audit.verify().rows, 2 * count);
  const actors = new Set(deployment.audit.rows().map((row) => row.actor));
  t.deepEqual([...actors].sort(), ['cli:a', 'cli:b']);
});
