import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import Database from 'better-sqlite3';
import sharp from 'sharp';
import test from 'ava';

import { openGallery } from '../../src/gallery/gallery.ts';
import { reidb } from '../helpers/cli.ts';
import { hasData } from '../helpers/data.ts';
import { lfw } from '../helpers/images.ts';

/** Every file under a directory, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? filesUnder(full) : [full];
  });
}

const A = 'Abdullah_Gul';
const B = 'Alejandro_Toledo';
const C = 'Alvaro_Uribe';

test('enrol a folder with bad files, search, erase, and find no trace of the erased identity', async (t) => {
  if (!hasData(t)) return;
  const work = mkdtempSync(path.join(os.tmpdir(), 'reidb-e2e-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const root = path.join(work, 'people');
  const db = path.join(work, 'gallery');

  for (const person of [A, B, C]) {
    mkdirSync(path.join(root, person), { recursive: true });
    for (const n of [1, 2, 3]) writeFileSync(path.join(root, person, `${n}.jpg`), lfw(person, n));
  }
  const good = lfw(A, 5);
  writeFileSync(path.join(root, A, 'truncated.jpg'), good.subarray(0, Math.floor(good.length / 2)));
  writeFileSync(path.join(root, A, 'notes.jpg'), 'this is a text file, not a photo\n');
  writeFileSync(
    path.join(root, A, '.DS_Store'),
    Buffer.from([0, 0, 0, 1, 0x42, 0x75, 0x64, 0x31, 0, 0]),
  );
  writeFileSync(path.join(root, B, 'webp-named.jpg'), await sharp(lfw(B, 4)).webp().toBuffer());
  symlinkSync(path.join(work, 'nowhere.jpg'), path.join(root, B, 'dangling.jpg'));
  symlinkSync(path.join(root, C, 'loop.jpg'), path.join(root, C, 'loop.jpg'));
  mkdirSync(path.join(root, C, 'nested'));
  execFileSync('mkfifo', [path.join(root, C, 'fifo.jpg')]);

  const enrol = await reidb(['enroll', '--db', db, '--layout', 'folder', root]);
  t.is(enrol.code, 0, enrol.stderr);
  t.is(enrol.json.enrolled, 10);
  t.is(enrol.json.identities, 3);
  const skipped = Object.fromEntries(
    enrol.json.skipped.map((s: { file: string; code: string }) => [path.basename(s.file), s.code]),
  );
  t.deepEqual(skipped, {
    'truncated.jpg': 'corrupt_image',
    'notes.jpg': 'not_an_image',
    '.DS_Store': 'not_an_image',
    'dangling.jpg': 'not_an_image',
    'loop.jpg': 'not_an_image',
    nested: 'invalid_argument',
    'fifo.jpg': 'not_an_image',
  });

  const raw = await reidb(['search', '--db', db, '--align', 'raw', path.join(root, A, '1.jpg')]);
  t.is(raw.code, 1);
  t.is(raw.json.error.code, 'gallery_mismatch');
  t.regex(raw.json.error.message, /alignMode is 'mesh' in the gallery but 'raw' here/);

  const probe = path.join(work, 'probe.jpg');
  writeFileSync(probe, lfw(A, 6));
  const found = await reidb(['search', '--db', db, '--top-k', '2', probe]);
  t.is(found.code, 0, found.stderr);
  t.is(found.json.faces.length, 1);
  t.is(found.json.faces[0].matches[0].identity, A);
  t.is(found.json.faces[0].matches.length, 2);

  const sqlite = new Database(path.join(db, 'gallery.sqlite'), { readonly: true });
  const rows = sqlite
    .prepare(
      `SELECT f.appearance, f.geometry, f.fused, f.source FROM faces f
       JOIN identities i ON i.id = f.identity_id WHERE i.external_id = ?`,
    )
    .all(A) as { appearance: Buffer; geometry: Buffer; fused: Buffer; source: string }[];
  sqlite.close();
  t.is(rows.length, 3);

  const erased = await reidb(['erase', '--db', db, '--identity', A]);
  t.is(erased.code, 0, erased.stderr);
  t.deepEqual(erased.json, { identity: A, facesRemoved: 3 });

  const needles: Buffer[] = [Buffer.from(A, 'utf8')];
  for (const row of rows) {
    for (const blob of [row.appearance, row.geometry, row.fused]) {
      for (const at of [0, 64, blob.length - 16]) needles.push(blob.subarray(at, at + 16));
    }
  }
  const files = filesUnder(db);
  t.true(
    files.some((f) => f.endsWith('.hnsw')),
    `index file present: ${files}`,
  );
  for (const file of files) {
    const bytes = readFileSync(file);
    for (const needle of needles)
      t.is(bytes.indexOf(needle), -1, `${file} still holds erased bytes`);
  }

  const after = await reidb(['search', '--db', db, '--top-k', '5', probe]);
  t.false(after.json.faces[0].matches.some((m: { identity: string }) => m.identity === A));

  const again = await reidb(['erase', '--db', db, '--identity', A]);
  t.is(again.code, 1);
  t.is(again.json.error.code, 'identity_not_found');
});

test('search of a missing file and a no-face image exits 0 with a reason for each', async (t) => {
  const work = mkdtempSync(path.join(os.tmpdir(), 'reidb-e2e-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  (await openGallery(path.join(work, 'g'))).close();
  const blank = path.join(work, 'blank.png');
  await sharp({ create: { width: 200, height: 160, channels: 3, background: '#88aacc' } })
    .png()
    .toFile(blank);

  const r = await reidb([
    'search',
    '--db',
    path.join(work, 'g'),
    blank,
    path.join(work, 'nope.jpg'),
  ]);
  t.is(r.code, 0, r.stderr);
  t.is(r.json.results[0].faces.length, 0);
  t.regex(r.json.results[0].reason, /no face detected in the 200x160 image/);
  t.is(r.json.results[1].error.code, 'file_not_found');
});

test('search of a gallery that does not exist is gallery_not_found and creates nothing', async (t) => {
  const work = mkdtempSync(path.join(os.tmpdir(), 'reidb-e2e-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const r = await reidb(['search', '--db', path.join(work, 'typo'), path.join(work, 'x.jpg')]);
  t.is(r.code, 1);
  t.is(r.json.error.code, 'gallery_not_found');
  t.false(existsSync(path.join(work, 'typo')));
});

test('a gallery held open by another process is refused with gallery_locked', async (t) => {
  const work = mkdtempSync(path.join(os.tmpdir(), 'reidb-e2e-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const held = await openGallery(path.join(work, 'g'));
  t.teardown(() => held.close());

  const r = await reidb(['erase', '--db', path.join(work, 'g'), '--identity', 'someone']);
  t.is(r.code, 1);
  t.is(r.json.error.code, 'gallery_locked');
  t.regex(r.json.error.message, new RegExp(`process ${process.pid}`));
});
