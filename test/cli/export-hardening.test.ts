import { execFileSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  lstatSync,
  openSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { EXPORT_VERSION } from '../../src/gallery/export.ts';
import { openGallery } from '../../src/gallery/gallery.ts';
import { reidb, REPO_ROOT } from '../helpers/cli.ts';
import { CONFIG, randomFace, rng, tempDir } from '../gallery/fixtures.ts';

/** A closed gallery in `dir` with two identities of synthetic faces, for the CLI to open. */
async function buildGallery(dir: string): Promise<void> {
  const gallery = await openGallery(dir, { config: CONFIG, saveDelayMs: 0 });
  const random = rng(201);
  try {
    gallery.enrol('A', [randomFace(random, 'a-0.jpg'), randomFace(random, 'a-1.jpg')]);
    gallery.enrol('B', [randomFace(random, 'b-0.jpg')]);
  } finally {
    gallery.close();
  }
}

/** The bytes of every live file of a gallery directory, to show that none changed. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of ['deployment.sqlite', 'gallery.sqlite', 'index.hnsw', 'index.meta.json']) {
    const file = path.join(dir, name);
    out[name] = existsSync(file) ? readFileSync(file).toString('base64') : 'absent';
  }
  return out;
}

test('import --in /dev/zero, a directory or a FIFO ends at once with a JSON error, exit 1', async (t) => {
  const dir = tempDir(t, 'reidb-import-dev-');
  await buildGallery(dir);
  const fifo = path.join(tempDir(t, 'reidb-import-fifo-'), 'fifo');
  execFileSync('mkfifo', [fifo]);

  for (const [input, kind] of [
    ['/dev/zero', 'a device'],
    [tempDir(t, 'reidb-import-dir-'), 'a directory'],
    [fifo, 'a FIFO'],
  ] as const) {
    const started = Date.now();
    const result = await reidb(['import', '--db', dir, '--in', input]);
    t.is(result.code, 1, `${input}: ${result.stderr}`);
    t.is(result.json.error.code, 'export_invalid', input);
    t.true(result.json.error.message.includes(`it is ${kind}, not a regular file`), input);
    t.true(Date.now() - started < 30_000, `${input} took ${Date.now() - started} ms`);
  }
});

test('import of a file with a line of hundreds of MB is export_invalid naming the line', async (t) => {
  const dir = tempDir(t, 'reidb-import-long-');
  await buildGallery(dir);
  const before = snapshot(dir);

  // A valid header, then 600 MB without a line end (sparse: no disk is used).
  const file = path.join(tempDir(t, 'reidb-import-long-file-'), 'long.jsonl');
  const header = {
    format: 'reidb-export',
    version: EXPORT_VERSION,
    createdAt: new Date().toISOString(),
    deploymentId: '00000000-0000-0000-0000-000000000000',
    encrypted: false,
    config: CONFIG,
    policy: {},
  };
  const fd = openSync(file, 'w');
  writeSync(fd, JSON.stringify(header) + '\n');
  closeSync(fd);
  execFileSync('truncate', ['-s', String(600 * 1024 * 1024), file]);

  const started = Date.now();
  const result = await reidb(['import', '--db', dir, '--in', file]);
  t.is(result.code, 1, result.stderr);
  t.is(result.json.error.code, 'export_invalid');
  t.regex(result.json.error.message, /line 2 is longer than 64 MiB/);
  t.true(Date.now() - started < 30_000);
  t.deepEqual(snapshot(dir), before);
});

test('export and audit export refuse an --out inside the gallery directory', async (t) => {
  const dir = tempDir(t, 'reidb-out-');
  await buildGallery(dir);
  const before = snapshot(dir);
  const outside = tempDir(t, 'reidb-out-elsewhere-');
  const link = path.join(outside, 'link-to-gallery');
  symlinkSync(dir, link);

  const attempts = [
    [
      'audit',
      'export',
      '--db',
      dir,
      '--format',
      'json',
      '--out',
      path.join(dir, 'deployment.sqlite'),
    ],
    ['export', '--db', dir, '--out', path.join(dir, 'gallery.sqlite')],
    ['export', '--db', dir, '--out', path.join(dir, 'index.hnsw'), '--plaintext'],
    ['export', '--db', dir, '--out', path.join(link, 'deployment.sqlite')],
    ['audit', 'export', '--db', dir, '--format', 'csv', '--out', path.join(link, 'gallery.sqlite')],
    ['audit', 'export', '--db', dir, '--format', 'csv', '--out', path.join(dir, 'trail.csv')],
  ];
  for (const args of attempts) {
    const result = await reidb(args);
    t.is(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    t.is(result.json.error.code, 'invalid_argument');
    t.is(result.json.error.input, '--out');
    t.regex(result.json.error.message, /inside the gallery folder/);
  }
  t.deepEqual(snapshot(dir), before);
  t.false(existsSync(path.join(dir, 'trail.csv')));

  // A link outside that points at a live file is replaced, never written through.
  const pointer = path.join(outside, 'pointer.json');
  symlinkSync(path.join(dir, 'deployment.sqlite'), pointer);
  const audit = await reidb(['audit', 'export', '--db', dir, '--format', 'json', '--out', pointer]);
  t.is(audit.code, 0, audit.stderr);
  const exportLink = path.join(outside, 'export-link.jsonl');
  symlinkSync(path.join(dir, 'gallery.sqlite'), exportLink);
  const exported = await reidb(['export', '--db', dir, '--out', exportLink]);
  t.is(exported.code, 0, exported.stderr);
  for (const replaced of [pointer, exportLink]) t.true(lstatSync(replaced).isFile(), replaced);
  t.deepEqual(JSON.parse(readFileSync(pointer, 'utf8')).rows, []);
  t.is(JSON.parse(readFileSync(exportLink, 'utf8').split('\n')[0]!).format, 'reidb-export');
  const sqliteHeader = readFileSync(path.join(dir, 'gallery.sqlite')).subarray(0, 16);
  t.is(sqliteHeader.toString('latin1'), 'SQLite format 3\0');
  const verify = await reidb(['audit', 'verify', '--db', dir]);
  t.is(verify.code, 0, verify.stderr);
  t.like(verify.json, { ok: true, rows: 2 });
});

test("the default gallery's folders are refused too, before anything is opened", async (t) => {
  const inIndexes = path.join(REPO_ROOT, 'indexes', `reidb-test-${process.pid}.jsonl`);
  const inDefault = path.join(REPO_ROOT, '.reidb', 'deployment.sqlite');
  t.teardown(() => rmSync(inIndexes, { force: true }));
  const hadDefault = existsSync(path.join(REPO_ROOT, '.reidb'));

  const exported = await reidb(['export', '--out', inIndexes]);
  t.is(exported.code, 2, exported.stderr);
  t.is(exported.json.error.input, '--out');
  const audit = await reidb(['audit', 'export', '--format', 'json', '--out', inDefault]);
  t.is(audit.code, 2, audit.stderr);
  t.is(audit.json.error.input, '--out');
  t.false(existsSync(inIndexes));
  t.is(existsSync(path.join(REPO_ROOT, '.reidb')), hadDefault, 'no default gallery was made');
});
