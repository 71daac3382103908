import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';

import test from 'ava';

import {
  EXPORT_VERSION,
  MAX_EXPORT_LINE_BYTES,
  exportGallery,
  importGallery,
} from '../../src/gallery/export.ts';
import { openGallery, type EnrolFace, type Gallery } from '../../src/gallery/gallery.ts';
import { CONFIG, randomFace, rng, tempDir } from './fixtures.ts';

function faces(random: () => number, n: number, prefix: string): EnrolFace[] {
  return Array.from({ length: n }, (_, i) => randomFace(random, `${prefix}-${i}.jpg`));
}

function open(dir: string): Promise<Gallery> {
  return openGallery(dir, { config: CONFIG, saveDelayMs: 0 });
}

/** The export's lines as parsed JSON, the trailer last. */
function readExport(file: string): any[] {
  return readFileSync(file, 'utf8')
    .trimEnd()
    .split('\n')
    .map((line) => JSON.parse(line));
}

/**
 * Writes `lines` (header and identity lines) with a trailer whose counts and sha256 are
 * recomputed, as anyone can for an unkeyed digest; `mac` replaces the sha256 when given.
 */
function writeExport(
  file: string,
  lines: unknown[],
  trailer: { mac?: string; faces?: number } = {},
): void {
  const body = lines.map((line) => JSON.stringify(line) + '\n').join('');
  const sha256 = createHash('sha256').update(body).digest('hex');
  const identities = lines.length - 1;
  const end =
    trailer.mac === undefined
      ? { type: 'end', identities, faces: trailer.faces ?? 0, sha256 }
      : { type: 'end', identities, faces: trailer.faces ?? 0, mac: trailer.mac };
  writeFileSync(file, body + JSON.stringify(end) + '\n');
}

/** The MAC the deployment would write for these lines. */
function macOf(gallery: Gallery, lines: unknown[]): string {
  const mac = gallery.deployment.exportMac();
  for (const line of lines) mac.update(JSON.stringify(line) + '\n');
  return mac.digest('hex');
}

function facesIn(lines: any[]): number {
  return lines.slice(1).reduce((sum, line) => sum + (line.record?.faces.length ?? 0), 0);
}

test('a sealed export refuses a plaintext record line; a plaintext export a sealed one', async (t) => {
  const random = rng(101);
  const gallery = await open(tempDir(t));
  t.teardown(() => gallery.close());
  gallery.enrol('ana', faces(random, 2, 'ana'));
  const folder = tempDir(t);
  const sealedFile = path.join(folder, 'sealed.jsonl');
  const plainFile = path.join(folder, 'plain.jsonl');
  exportGallery(gallery, sealedFile);
  exportGallery(gallery, plainFile, { plaintext: true });
  const sealed = readExport(sealedFile);
  const plain = readExport(plainFile);

  // A forged identity next to the sealed one, the trailer recomputed.
  const forged = { ...plain[1], record: { ...plain[1].record, identity: 'mallory' } };
  forged.record.faces = forged.record.faces.map((f: any, i: number) => ({
    ...f,
    uid: String(i).padStart(32, 'f'),
  }));
  const injected = path.join(folder, 'injected.jsonl');
  writeExport(injected, [sealed[0], sealed[1], forged], { faces: 4 });
  const error = await t.throwsAsync(importGallery(gallery, injected), {
    message: /line 3 holds a plaintext record, but the header says the export is sealed/,
  });
  t.is((error as any).code, 'export_invalid');
  t.deepEqual((error as any).details, { line: 3 });

  const mixed = path.join(folder, 'mixed.jsonl');
  writeExport(mixed, [plain[0], sealed[1]], { faces: 2 });
  await t.throwsAsync(importGallery(gallery, mixed), {
    message: /line 2 holds a sealed record, but the header says the export is plaintext/,
  });
  t.deepEqual(gallery.identityLabels(), ['ana']);
  t.is(gallery.stats().faces, 2);
});

test("a sealed export's trailer is a MAC: deleting, reordering or recomputing is refused", async (t) => {
  const random = rng(102);
  const dir = tempDir(t);
  const gallery = await open(dir);
  t.teardown(() => gallery.close());
  gallery.enrol('bo', faces(random, 1, 'bo'));
  gallery.enrol('cy', faces(random, 2, 'cy'));
  gallery.enrol('di', faces(random, 1, 'di'));
  const folder = tempDir(t);
  const file = path.join(folder, 'sealed.jsonl');
  const summary = exportGallery(gallery, file);
  const lines = readExport(file);
  const trailer = lines.at(-1);
  t.is(lines[0].version, EXPORT_VERSION);
  t.is(trailer.mac, summary.mac);
  t.false('sha256' in trailer, 'a sealed trailer holds no unkeyed digest');
  t.is(trailer.mac, macOf(gallery, lines.slice(0, -1)));

  const body = lines.slice(0, -1);
  const variants: [string, unknown[], Record<string, unknown>][] = [
    ['deleted', [body[0], body[1], body[3]], { mac: trailer.mac }],
    ['reordered', [body[0], body[2], body[1], body[3]], { mac: trailer.mac }],
    ['truncated', [body[0], body[1]], { mac: trailer.mac }],
  ];
  for (const [name, variant, end] of variants) {
    const changed = path.join(folder, `${name}.jsonl`);
    writeExport(changed, variant, { ...end, faces: 4 });
    await t.throwsAsync(
      importGallery(gallery, changed),
      { message: /do not match the trailer's MAC \(the file was changed, reordered or truncated/ },
      name,
    );
  }

  // An unkeyed sha256 in place of the MAC is not enough.
  const rehashed = path.join(folder, 'rehashed.jsonl');
  writeExport(rehashed, [body[0], body[1]], { faces: 1 });
  await t.throwsAsync(importGallery(gallery, rehashed), {
    message: /trailer of a sealed export must hold mac/,
  });
  t.is(gallery.stats().faces, 4);
});

test('a plaintext export keeps a sha256 trailer; version 1 files are refused', async (t) => {
  const random = rng(103);
  const gallery = await open(tempDir(t));
  t.teardown(() => gallery.close());
  gallery.enrol('eve', faces(random, 1, 'eve'));
  const folder = tempDir(t);
  const file = path.join(folder, 'plain.jsonl');
  const summary = exportGallery(gallery, file, { plaintext: true });
  const lines = readExport(file);
  t.is(lines.at(-1).sha256, summary.sha256);
  t.false('mac' in lines.at(-1));
  t.is(summary.mac, undefined);

  const v1 = path.join(folder, 'v1.jsonl');
  writeExport(v1, [{ ...lines[0], version: 1 }, lines[1]], { faces: 1 });
  await t.throwsAsync(importGallery(gallery, v1), {
    message: /version 1 export, which this reidb no longer reads.*make a new export/,
  });
});

test('a bad record half-way imports nothing: every line is checked before any is written', async (t) => {
  const random = rng(104);
  const source = await open(tempDir(t));
  t.teardown(() => source.close());
  source.enrol('a', faces(random, 2, 'a'));
  source.enrol('b', faces(random, 2, 'b'));
  source.enrol('c', faces(random, 2, 'c'));
  const folder = tempDir(t);
  const file = path.join(folder, 'plain.jsonl');
  exportGallery(source, file, { plaintext: true });
  const lines = readExport(file).slice(0, -1);

  const target = await open(tempDir(t));
  t.teardown(() => target.close());

  const damage: [string, (record: any) => void, RegExp][] = [
    ['uid', (r) => (r.faces[1].uid = 'not-a-uid'), /line 4: faces\[1\]\.uid must be 32/],
    ['enrolledAt', (r) => (r.faces[0].enrolledAt = '2099-01-01T00:00:00.000Z'), /future/],
    [
      'dims',
      (r) => (r.faces[0].fused = Buffer.alloc(4 * 7).toString('base64')),
      /faces\[0\]\.fused has 7 dimensions/,
    ],
    [
      'finite',
      (r) => (r.faces[0].appearance = Buffer.alloc(4 * 512, 0xff).toString('base64')),
      /faces\[0\]\.appearance must be finite/,
    ],
    ['base64', (r) => (r.faces[0].geometry = '***'), /geometry is not base64/],
    ['label', (r) => (r.identity = 'c\u0007'), /line 4: identity contains the control char/],
    ['metadata', (r) => (r.metadata = [1, 2]), /line 4: its metadata is not an object/],
    [
      'keepFor',
      (r) => (r.policy = { keepForSeconds: 0 }),
      /keep-for must be a whole number of seconds/,
    ],
    ['purpose', (r) => (r.policy = { purpose: '' }), /purpose must be text/],
    ['duplicate uid', (r) => (r.faces[0].uid = lines[2].record.faces[0].uid), /appears twice/],
  ];
  for (const [name, change, message] of damage) {
    const record = structuredClone(lines[3].record);
    change(record);
    const damaged = path.join(folder, `${name}.jsonl`);
    const variant = [lines[0], lines[1], lines[2], { type: 'identity', record }];
    writeExport(damaged, variant, { faces: facesIn(variant) });
    const error = await t.throwsAsync(importGallery(target, damaged), { message }, name);
    t.is((error as any)?.code, 'export_invalid', name);
    t.is(target.stats().faces, 0, `${name}: nothing was written`);
  }

  // A new identity kept longer than the gallery now allows is restored with the gallery's
  // keep-for (retention would cap it anyway), not refused; checked on a gallery of its own.
  const capped = await openGallery(tempDir(t), { config: CONFIG });
  t.teardown(() => capped.close());
  capped.setPolicy({ keepForSeconds: 3600 });
  const longer = structuredClone(lines[3].record);
  longer.policy = { keepForSeconds: 86_400 };
  const longerFile = path.join(folder, 'longer.jsonl');
  const longerLines = [lines[0], lines[1], lines[2], { type: 'identity', record: longer }];
  writeExport(longerFile, longerLines, { faces: facesIn(longerLines) });
  t.like(await importGallery(capped, longerFile), { identities: 3 });
  t.is(capped.getIdentity(longer.identity).policy.keepForSeconds, 3600);
  t.is(target.stats().faces, 0);

  // The same for a sealed record the deployment itself sealed, under a valid MAC.
  const sealedFile = path.join(folder, 'sealed.jsonl');
  exportGallery(source, sealedFile);
  const sealed = readExport(sealedFile).slice(0, -1);
  const bad = structuredClone(lines[3].record);
  bad.faces[1].uid = 'XYZ';
  const ref = source.deployment.identityRef('c');
  const resealed = {
    type: 'identity',
    sealed: source.deployment.exportKeys.seal(ref, Buffer.from(JSON.stringify(bad))),
  };
  const variant = [sealed[0], sealed[1], sealed[2], resealed];
  const damaged = path.join(folder, 'sealed-bad.jsonl');
  writeExport(damaged, variant, { mac: macOf(source, variant), faces: 6 });
  await t.throwsAsync(importGallery(source, damaged), { message: /line 4: faces\[1\]\.uid/ });
  t.is(source.stats().faces, 6);
});

test('an import adds faces to an existing identity, never its metadata or policy', async (t) => {
  const random = rng(105);
  const source = await open(tempDir(t));
  t.teardown(() => source.close());
  const shared = faces(random, 1, 'shared');
  const first = source.enrol('ana', shared, { team: 'blue' }, { keepForSeconds: 86_400 });
  source.enrol('ana', faces(random, 1, 'more'));
  source.enrol('new', faces(random, 1, 'new'), { note: 'n' }, { legalBasis: 'consent' });
  const file = path.join(tempDir(t), 'plain.jsonl');
  exportGallery(source, file, { plaintext: true });

  const target = await open(tempDir(t));
  t.teardown(() => target.close());
  target.enrol('ana', faces(random, 1, 'own'), { team: 'red' }, { purpose: 'door' });

  const summary = await importGallery(target, file);
  t.like(summary, { identities: 2, faces: 3, skippedDuplicate: 0 });
  const ana = target.getIdentity('ana');
  t.is(ana.faces.length, 3);
  t.true(ana.faces.some((face) => face.uid === first.faceUids[0]));
  t.deepEqual(ana.metadata, { team: 'red' });
  t.deepEqual(ana.policy, { keepForSeconds: null, legalBasis: null, purpose: 'door' });

  const fresh = target.getIdentity('new');
  t.deepEqual(fresh.metadata, { note: 'n' });
  t.deepEqual(fresh.policy, { keepForSeconds: null, legalBasis: 'consent', purpose: null });
});

test('an import refuses an over-long line, a device, a directory and a FIFO', async (t) => {
  const gallery = await open(tempDir(t));
  t.teardown(() => gallery.close());
  const folder = tempDir(t);

  // A header, then a second line longer than the limit: a sparse file, no disk used.
  const long = path.join(folder, 'long.jsonl');
  const header = {
    format: 'reidb-export',
    version: EXPORT_VERSION,
    createdAt: new Date().toISOString(),
    deploymentId: gallery.deployment.id,
    encrypted: false,
    config: CONFIG,
    policy: gallery.policy(),
  };
  const fd = openSync(long, 'w');
  writeSync(fd, JSON.stringify(header) + '\n');
  closeSync(fd);
  execFileSync('truncate', ['-s', String(MAX_EXPORT_LINE_BYTES + 1024 * 1024), long]);
  const before = process.memoryUsage().rss;
  const error = await t.throwsAsync(importGallery(gallery, long), {
    message: /line 2 is longer than 64 MiB/,
  });
  t.is((error as any).code, 'export_invalid');
  t.deepEqual((error as any).details, { line: 2 });
  t.true(process.memoryUsage().rss - before < 512 * 1024 * 1024, 'the line was not kept whole');

  await t.throwsAsync(importGallery(gallery, '/dev/zero'), {
    message: /it is a device, not a regular file/,
  });
  await t.throwsAsync(importGallery(gallery, folder), {
    message: /it is a directory, not a regular file/,
  });
  const fifo = path.join(folder, 'fifo');
  execFileSync('mkfifo', [fifo]);
  await t.throwsAsync(importGallery(gallery, fifo), { message: /it is a FIFO/ });
  t.is(gallery.stats().faces, 0);
});

test('exportGallery refuses a file inside the gallery directory, also through a link', async (t) => {
  const random = rng(106);
  const dir = tempDir(t);
  const gallery = await open(dir);
  t.teardown(() => gallery.close());
  gallery.enrol('ana', faces(random, 1, 'ana'));
  const deploymentFile = path.join(dir, 'deployment.sqlite');
  const before = readFileSync(deploymentFile);

  const outside = tempDir(t);
  const link = path.join(outside, 'link');
  symlinkSync(dir, link);
  mkdirSync(path.join(dir, 'sub'));
  for (const target of [
    deploymentFile,
    path.join(dir, 'gallery.sqlite'),
    path.join(dir, 'sub', 'x.jsonl'),
    path.join(link, 'index.hnsw'),
    dir,
  ]) {
    const error = t.throws(() => exportGallery(gallery, target), {
      message: /is inside the gallery folder/,
    });
    t.is((error as any)?.code, 'invalid_argument', target);
  }
  t.deepEqual(readFileSync(deploymentFile), before);
  t.is(gallery.getIdentity('ana').faces.length, 1);

  // Beside the gallery directory is fine.
  const file = path.join(outside, 'ok.jsonl');
  t.like(exportGallery(gallery, file), { identities: 1 });
  t.is(statSync(file).mode & 0o777, 0o600);
});
