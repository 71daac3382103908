import {
  copyFileSync,
  existsSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';

import test from 'ava';
import Database from 'better-sqlite3';

import { DATABASE_FILE, openGallery, type EnrolFace } from '../../src/gallery/gallery.ts';
import { exportGallery, importGallery } from '../../src/gallery/export.ts';
import { DEFAULT_MIGRATIONS_DIR, readMigrations } from '../../src/gallery/migrations.ts';
import { runRetention } from '../../src/policy/retention.ts';
import { subjectAccessReport } from '../../src/policy/subject-access.ts';
import { CONFIG, randomFace, rng, tempDir } from './fixtures.ts';

function faces(random: () => number, n: number, prefix: string): EnrolFace[] {
  return Array.from({ length: n }, (_, i) => randomFace(random, `${prefix}-${i}.jpg`));
}

/** Copies gallery.sqlite of a closed gallery (its WAL is checkpointed at close). */
function backup(dir: string, to: string): void {
  copyFileSync(path.join(dir, DATABASE_FILE), to);
}

function restore(dir: string, from: string): void {
  for (const suffix of ['-wal', '-shm'])
    rmSync(path.join(dir, DATABASE_FILE + suffix), { force: true });
  copyFileSync(from, path.join(dir, DATABASE_FILE));
}

test('a gallery.sqlite restored from before an erasure is cleaned at open', async (t) => {
  const dir = tempDir(t);
  const random = rng(11);
  const gallery = await openGallery(dir, { config: CONFIG, saveDelayMs: 0 });
  const erased = faces(random, 3, 'erased');
  gallery.enrol('erased-one', erased);
  gallery.enrol('kept-one', faces(random, 2, 'kept'));
  gallery.close();

  const old = path.join(tempDir(t), 'old.sqlite');
  backup(dir, old);

  const again = await openGallery(dir, { config: CONFIG });
  again.erase('erased-one', { actor: 'test' });
  again.close();

  restore(dir, old);
  const reopened = await openGallery(dir, { config: CONFIG });
  t.teardown(() => reopened.close());

  t.throws(() => reopened.getIdentity('erased-one'), { message: /no identity/ });
  t.is(reopened.getIdentity('kept-one').faces.length, 2);
  t.deepEqual(
    { faces: reopened.stats().faces, indexCount: reopened.stats().indexCount },
    { faces: 2, indexCount: 2 },
  );
  for (const face of erased) {
    t.false(reopened.search(face.fused, 10).some((m) => m.identity === 'erased-one'));
  }

  const ref = reopened.deployment.identityRef('erased-one');
  const actions = reopened.deployment.audit.rows({ identityRef: ref }).map((r) => r.action);
  t.deepEqual(actions, ['erasure_reapplied']);
});

test('a person enrolled again after an erasure survives a restore of an older copy', async (t) => {
  const dir = tempDir(t);
  const random = rng(12);
  const gallery = await openGallery(dir, { config: CONFIG });
  gallery.enrol('ana', faces(random, 2, 'old'));
  gallery.erase('ana');
  const second = gallery.enrol('ana', faces(random, 1, 'new'));
  gallery.close();

  const copy = path.join(tempDir(t), 'copy.sqlite');
  backup(dir, copy);
  restore(dir, copy);

  const reopened = await openGallery(dir, { config: CONFIG });
  t.teardown(() => reopened.close());
  t.deepEqual(
    reopened.getIdentity('ana').faces.map((f) => f.uid),
    second.faceUids,
  );
});

test('export, erase, import: the erased identity stays gone, the others come back', async (t) => {
  const dir = tempDir(t);
  const random = rng(13);
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  gallery.enrol('bo', faces(random, 2, 'bo'), { team: 'blue' }, { purpose: 'site access' });
  gallery.enrol('cy', faces(random, 3, 'cy'));
  gallery.enrol('di', faces(random, 1, 'di'));

  const file = path.join(tempDir(t), 'gallery.reidbx');
  const exported = exportGallery(gallery, file);
  t.like(exported, { identities: 3, faces: 6, encrypted: true });
  t.false(readFileSync(file, 'utf8').includes('"bo"'), 'labels are sealed');

  gallery.erase('bo');
  gallery.erase('cy');
  gallery.enrol('cy', faces(random, 1, 'cy-again'));

  // Lose di, then restore the export.
  gallery.erase('di');
  const summary = await importGallery(gallery, file);
  // bo and cy: keys destroyed at erasure, unreadable; di: erased too. Nothing comes back.
  t.deepEqual(summary, {
    identities: 0,
    faces: 0,
    skippedErased: 0,
    skippedDuplicate: 0,
    unreadable: 3,
  });
  t.throws(() => gallery.getIdentity('bo'));
  t.is(gallery.getIdentity('cy').faces.length, 1);
});

test('an export restores the identities that were lost, not those erased', async (t) => {
  const dir = tempDir(t);
  const random = rng(14);
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  const kept = faces(random, 2, 'kept');
  gallery.enrol('kept', kept, { note: 'x' }, { keepForSeconds: 86_400, legalBasis: 'consent' });
  gallery.enrol('gone', faces(random, 2, 'gone'));

  for (const plaintext of [false, true]) {
    const file = path.join(tempDir(t), `export-${plaintext}.jsonl`);
    exportGallery(gallery, file, { plaintext });

    // A fresh copy of the deployment's gallery data: the same deployment, an empty gallery.
    const again = await importGallery(gallery, file);
    t.like(again, { identities: 0, faces: 0, skippedDuplicate: 4 }, 'all already held');

    const target = await openGallery(tempDir(t), { config: CONFIG });
    t.teardown(() => target.close());
    if (!plaintext) {
      await t.throwsAsync(importGallery(target, file), { message: /sealed by deployment/ });
      continue;
    }
    const moved = await importGallery(target, file);
    t.like(moved, { identities: 2, faces: 4, unreadable: 0 });
    const record = target.getIdentity('kept');
    t.deepEqual(record.metadata, { note: 'x' });
    t.deepEqual(record.policy, { keepForSeconds: 86_400, legalBasis: 'consent', purpose: null });
    t.deepEqual(
      record.faces.map((f) => f.uid),
      gallery.getIdentity('kept').faces.map((f) => f.uid),
    );
    const [best] = target.search(kept[1]!.fused, 1);
    t.is(best?.identity, 'kept');
  }

  // After an erasure, the plaintext export's faces of 'gone' are refused by the ledger.
  const plainFile = path.join(tempDir(t), 'plain.jsonl');
  exportGallery(gallery, plainFile, { plaintext: true });
  gallery.erase('gone');
  const restored = await importGallery(gallery, plainFile);
  t.like(restored, { identities: 0, skippedErased: 2, skippedDuplicate: 2 });
  t.throws(() => gallery.getIdentity('gone'));
});

test('a damaged or cut export changes nothing', async (t) => {
  const dir = tempDir(t);
  const random = rng(15);
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  gallery.enrol('eve', faces(random, 2, 'eve'));
  const file = path.join(tempDir(t), 'e.jsonl');
  exportGallery(gallery, file, { plaintext: true });
  gallery.erase('eve');

  const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
  const cut = file + '.cut';
  writeFileSync(cut, lines.slice(0, -1).join('\n') + '\n');
  await t.throwsAsync(importGallery(gallery, cut), { message: /no trailer/ });

  const edited = file + '.edited';
  writeFileSync(edited, [lines[0], lines[1]!.replace('eve-0', 'eve-9'), lines[2]].join('\n'));
  await t.throwsAsync(importGallery(gallery, edited), { message: /do not match the trailer/ });

  await t.throwsAsync(importGallery(gallery, path.join(dir, 'missing.jsonl')), {
    message: /cannot read/,
  });
  t.is(gallery.stats().faces, 0);
});

test('retention erases exactly the faces that are due, once', async (t) => {
  const dir = tempDir(t);
  const random = rng(16);
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  gallery.setPolicy({ keepForSeconds: 86_400 });

  // Faces enrolled two days ago (an enrolment time only an import sets), judged against
  // moments after that.
  const enrolledAt = Date.now() - 2 * 86_400_000;
  const at = (seconds: number): Date => new Date(enrolledAt + seconds * 1000 + 500);
  const past = (list: EnrolFace[], seconds = 0): EnrolFace[] =>
    list.map((face) => ({
      ...face,
      enrolledAt: new Date(enrolledAt + seconds * 1000).toISOString(),
    }));
  gallery.enrol('short', past(faces(random, 2, 's')), undefined, { keepForSeconds: 60 });
  gallery.enrol('default', past(faces(random, 2, 'd')));
  gallery.enrol('mid', past(faces(random, 1, 'm')), undefined, { keepForSeconds: 3600 });

  t.like(runRetention(gallery, { now: at(30) }), { facesDue: 0, facesErased: 0 });
  const dry = runRetention(gallery, { now: at(61), dryRun: true });
  t.like(dry, { facesDue: 2, facesErased: 0, dryRun: true });
  t.is(gallery.getIdentity('short').faces.length, 2);

  const first = runRetention(gallery, { now: at(61) });
  t.like(first, { facesDue: 2, identitiesDue: 1, facesErased: 2, identitiesErased: 1 });
  t.deepEqual(first.erased, [
    { identityRef: gallery.deployment.identityRef('short'), faces: 2, whole: true },
  ]);
  t.like(runRetention(gallery, { now: at(61) }), { facesDue: 0, facesErased: 0 });
  t.throws(() => gallery.getIdentity('short'));
  t.is(gallery.getIdentity('default').faces.length, 2);

  t.like(runRetention(gallery, { now: at(3601) }), { facesErased: 1, identitiesErased: 1 });
  t.throws(() => gallery.getIdentity('mid'));

  // A later face of 'default' (enrolled half an hour after the others) keeps the identity
  // alive when its first faces expire.
  gallery.enrol('default', past([randomFace(random, 'd-late.jpg')], 1800));
  const late = runRetention(gallery, { now: at(86_401) });
  t.like(late, { facesErased: 2, identitiesErased: 0 });
  t.is(gallery.getIdentity('default').faces.length, 1);
  t.is(gallery.stats().indexCount, gallery.stats().faces);

  const ledger = gallery.deployment.ledger.counts();
  t.deepEqual(ledger, { faces: 5, identities: 3 });
  const actions = gallery.deployment.audit.rows().map((r) => r.action);
  t.deepEqual(actions, ['retention_erase', 'retention_erase', 'retention_erase']);
});

test('subject access lists every face and the processing record, vectors only on request', async (t) => {
  const dir = tempDir(t);
  const random = rng(17);
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  gallery.setPolicy({ keepForSeconds: 7200, legalBasis: 'Art. 6(1)(f)', purpose: 'access' });
  const enrolled = faces(random, 2, 'f');
  gallery.enrol('fay', enrolled, { badge: 7 }, { purpose: 'visitor log' });
  gallery.deployment.audit.append({
    actor: 'test',
    action: 'read',
    identityRef: gallery.deployment.identityRef('fay'),
  });

  const report = subjectAccessReport(gallery, 'fay');
  t.is(report.identity, 'fay');
  t.deepEqual(report.metadata, { badge: 7 });
  t.deepEqual(report.processing, {
    purpose: 'visitor log',
    legalBasis: 'Art. 6(1)(f)',
    keepForSeconds: 7200,
    setBy: { purpose: 'identity', legalBasis: 'gallery', keepForSeconds: 'gallery' },
  });
  t.is(report.faces.length, 2);
  t.is(Date.parse(report.faces[0]!.expiresAt!) - Date.parse(report.faces[0]!.enrolledAt), 7200_000);
  t.false('vectors' in report.faces[0]!);
  t.deepEqual(
    report.audit.map((r) => r.action),
    ['read'],
  );

  const full = subjectAccessReport(gallery, 'fay', { vectors: true });
  t.deepEqual(full.faces[1]!.vectors!.fused, Array.from(enrolled[1]!.fused));
  t.throws(() => subjectAccessReport(gallery, 'nobody'), { message: /no identity/ });
});

test('bad policy fields are refused, naming the field, and nothing changes', async (t) => {
  const dir = tempDir(t);
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  const before = gallery.policy();

  const cases: [Record<string, unknown>, RegExp][] = [
    [{ keepForSeconds: 0 }, /keep-for/],
    [{ keepForSeconds: 1.5 }, /keep-for/],
    [{ keepForSeconds: 1e12 }, /keep-for/],
    [{ legalBasis: '' }, /legalBasis/],
    [{ purpose: 'x'.repeat(1001) }, /purpose/],
    [{ purpose: 'a\u0007b' }, /purpose/],
    [{ purpose: 'a\u009bb' }, /purpose/],
    [{ legalBasis: 'consent\u202e' }, /legalBasis .*bidirectional/],
    [{ legalBasis: 'consent\u061c' }, /legalBasis/],
    [{ purpose: 'do\u200bors' }, /purpose .*invisible/],
    [{ thumbnails: 'maybe' }, /thumbnails/],
    [{ colour: 'red' }, /unknown policy field colour/],
  ];
  for (const [patch, message] of cases) {
    t.throws(() => gallery.setPolicy(patch as never), { message }, JSON.stringify(patch));
  }
  t.deepEqual(gallery.policy(), before);

  const random = rng(18);
  t.throws(() => gallery.enrol('x', faces(random, 1, 'x'), undefined, { keepForSeconds: -5 }), {
    message: /keep-for/,
  });
  t.is(gallery.stats().identities, 0);
  t.false(existsSync(path.join(dir, 'missing')));
});

test("an identity's retention is set when it is created; enrolments cannot change it", async (t) => {
  const dir = tempDir(t);
  const random = rng(19);
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  gallery.setPolicy({ keepForSeconds: 30 * 86_400 });

  gallery.enrol('vic', faces(random, 1, 'v'), undefined, { keepForSeconds: 86_400 });
  // Repeating the recorded values is fine; changing them, in either direction, is not.
  gallery.enrol('vic', faces(random, 1, 'v2'), undefined, { keepForSeconds: 86_400 });
  // A field not recorded yet (purpose) may be recorded once, then no more changed.
  gallery.enrol('vic', faces(random, 1, 'v3'), undefined, { purpose: 'visitors' });
  for (const policy of [{ keepForSeconds: 1 }, { keepForSeconds: 7200 }, { purpose: 'other' }]) {
    t.throws(() => gallery.enrol('vic', faces(random, 1, 'x'), undefined, policy), {
      message: /already exists with .* cannot be changed by an enrolment/,
    });
  }
  t.is(gallery.getIdentity('vic').faces.length, 3);
  t.is(gallery.getIdentity('vic').policy.purpose, 'visitors');
  t.is(gallery.getIdentity('vic').policy.keepForSeconds, 86_400);

  // No identity may be kept longer than the gallery's keep-for.
  t.throws(() => gallery.enrol('new', faces(random, 1, 'n'), undefined, { keepForSeconds: 1e8 }), {
    message: /longer than the gallery's/,
  });

  // Shortening the gallery's keep-for later reaches identities with a longer one of their own.
  gallery.setPolicy({ keepForSeconds: 3600 });
  const due = gallery.expiredFaces(new Date(Date.now() + 3601_000)).map((f) => f.identity);
  t.deepEqual(due, ['vic', 'vic', 'vic']);
  t.is(subjectAccessReport(gallery, 'vic').processing.keepForSeconds, 3600);
});

test('an enrolment that started before an acknowledged erasure stores nothing', async (t) => {
  const dir = tempDir(t);
  const random = rng(20);
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  gallery.enrol('bea', faces(random, 1, 'b'));

  const startedAt = performance.now();
  gallery.erase('bea');
  const error = t.throws(() =>
    gallery.enrol('bea', faces(random, 2, 'late'), undefined, {}, { startedAt }),
  );
  t.is((error as { code?: string }).code, 'conflict');
  t.throws(() => gallery.getIdentity('bea'));

  // One that starts after the erasure enrols the person anew.
  gallery.enrol(
    'bea',
    faces(random, 1, 'anew'),
    undefined,
    {},
    { startedAt: performance.now() + 1 },
  );
  t.is(gallery.getIdentity('bea').faces.length, 1);
});

test('retention that takes some of an identity keeps its export key; a whole one loses it', async (t) => {
  const dir = tempDir(t);
  const random = rng(21);
  const gallery = await openGallery(dir, { config: CONFIG });
  const old = new Date(Date.now() - 86_400_000).toISOString();
  const aged = (list: EnrolFace[]) => list.map((face) => ({ ...face, enrolledAt: old }));
  gallery.enrol('ali', aged(faces(random, 1, 'a-old')));
  const kept = gallery.enrol('ali', faces(random, 1, 'a-new'));
  gallery.enrol('bob', aged(faces(random, 1, 'b-old')));
  const file = path.join(tempDir(t), 'backup.jsonl');
  exportGallery(gallery, file);

  gallery.setPolicy({ keepForSeconds: 3600 });
  t.like(runRetention(gallery), { facesErased: 2, identitiesErased: 1 });
  gallery.setPolicy({ keepForSeconds: null });
  gallery.close();

  // The gallery's data is lost (deployment.sqlite survives); the backup is restored: ali's
  // face that was not due comes back, the expired ones do not.
  for (const name of readdirSync(dir)) {
    if (name.startsWith('gallery.sqlite') || name.startsWith('index.'))
      rmSync(path.join(dir, name));
  }
  const restored = await openGallery(dir, { config: CONFIG });
  t.teardown(() => restored.close());
  t.deepEqual(await importGallery(restored, file), {
    identities: 1,
    faces: 1,
    skippedErased: 1,
    skippedDuplicate: 0,
    unreadable: 1,
  });
  t.deepEqual(
    restored.getIdentity('ali').faces.map((f) => f.uid),
    kept.faceUids,
  );
  t.throws(() => restored.getIdentity('bob'));
});

test('opening a gallery leaves no WAL content behind', async (t) => {
  const dir = tempDir(t);
  (await openGallery(dir, { config: CONFIG })).close();
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  for (const file of ['gallery.sqlite-wal', 'deployment.sqlite-wal']) {
    const wal = path.join(dir, file);
    t.true(!existsSync(wal) || readFileSync(wal).byteLength === 0, file);
  }
});

test('a gallery whose deployment.sqlite is missing or replaced refuses to open', async (t) => {
  const dir = tempDir(t);
  const random = rng(22);
  const gallery = await openGallery(dir, { config: CONFIG });
  gallery.enrol('gone', faces(random, 1, 'g'));
  const old = path.join(tempDir(t), 'old.sqlite');
  gallery.close();
  backup(dir, old);
  const again = await openGallery(dir, { config: CONFIG });
  again.erase('gone');
  again.close();

  // An old gallery copy and no ledger: without the refusal, 'gone' would come back.
  restore(dir, old);
  const ledgerFile = path.join(dir, 'deployment.sqlite');
  const kept = path.join(tempDir(t), 'deployment.sqlite');
  copyFileSync(ledgerFile, kept);
  for (const suffix of ['', '-wal', '-shm']) rmSync(ledgerFile + suffix, { force: true });
  await t.throwsAsync(openGallery(dir, { config: CONFIG }), {
    message: /deployment.sqlite is missing/,
  });
  t.false(existsSync(ledgerFile), 'no new, empty ledger was made');

  // Another deployment's file is refused too.
  const other = tempDir(t);
  (await openGallery(other, { config: CONFIG })).close();
  copyFileSync(path.join(other, 'deployment.sqlite'), ledgerFile);
  await t.throwsAsync(openGallery(dir, { config: CONFIG }), { message: /belongs to deployment/ });

  // Its own file back: the ledger cleans the old copy.
  copyFileSync(kept, ledgerFile);
  const restored = await openGallery(dir, { config: CONFIG });
  t.throws(() => restored.getIdentity('gone'));
  restored.close();

  // Lost for good: the operator may accept a new ledger, knowingly.
  for (const suffix of ['', '-wal', '-shm']) rmSync(ledgerFile + suffix, { force: true });
  const accepted = await openGallery(dir, { config: CONFIG, acceptNewDeployment: true });
  t.teardown(() => accepted.close());
  t.is(accepted.stats().identities, 0);
});

test('a restore into a new gallery brings the policy back; a bad file leaves it unconfigured', async (t) => {
  const random = rng(23);
  const source = await openGallery(tempDir(t), { config: CONFIG });
  t.teardown(() => source.close());
  source.setPolicy({ keepForSeconds: 30 * 86_400, legalBasis: 'Art. 6(1)(c)', purpose: 'doors' });
  source.enrol('zed', faces(random, 1, 'z'), undefined, { keepForSeconds: 86_400 });
  const file = path.join(tempDir(t), 'plain.jsonl');
  exportGallery(source, file, { plaintext: true });

  // A damaged copy into an empty gallery: refused, and the gallery takes nothing from it.
  const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
  const record = JSON.parse(lines[1]!);
  record.record.faces[0].fused = 'AAAA';
  const damaged = file + '.bad';
  const body = [lines[0], JSON.stringify(record)].map((line) => line + '\n').join('');
  const sha256 = createHash('sha256').update(body).digest('hex');
  writeFileSync(
    damaged,
    body + JSON.stringify({ type: 'end', identities: 1, faces: 1, sha256 }) + '\n',
  );
  const empty = await openGallery(tempDir(t));
  t.teardown(() => empty.close());
  await t.throwsAsync(importGallery(empty, damaged), { message: /fused/ });
  t.is(empty.config(), null);
  t.is(empty.policy().keepForSeconds, null);

  // The intact file: the configuration and the gallery's policy come back with the faces.
  t.like(await importGallery(empty, file), { identities: 1, faces: 1 });
  t.like(empty.policy(), {
    keepForSeconds: 30 * 86_400,
    legalBasis: 'Art. 6(1)(c)',
    purpose: 'doors',
  });
  t.is(empty.getIdentity('zed').policy.keepForSeconds, 86_400);

  // Into a gallery whose keep-for is now shorter than the identity's: kept for the shorter.
  const strict = await openGallery(tempDir(t), { config: CONFIG });
  t.teardown(() => strict.close());
  strict.setPolicy({ keepForSeconds: 3600 });
  t.like(await importGallery(strict, file), { identities: 1 });
  t.is(strict.getIdentity('zed').policy.keepForSeconds, 3600);
  t.is(strict.policy().keepForSeconds, 3600, 'a configured gallery keeps its own policy');
});

test('a gallery from before deployment links still refuses to open without its deployment', async (t) => {
  const dir = tempDir(t);
  (await openGallery(dir, { config: CONFIG })).close();

  // As a copy taken before migration 003 looks: schema 2, no link recorded.
  const db = new Database(path.join(dir, DATABASE_FILE));
  db.exec('DELETE FROM deployment_link');
  db.close();
  for (const suffix of ['', '-wal', '-shm']) {
    rmSync(path.join(dir, 'deployment.sqlite' + suffix), { force: true });
  }
  await t.throwsAsync(openGallery(dir, { config: CONFIG }), { message: /is missing/ });

  // A gallery from before schema 2 never had a deployment: it gets its first one.
  const old = tempDir(t);
  const legacy = new Database(path.join(old, DATABASE_FILE));
  legacy.exec(readFileSync(path.join(DEFAULT_MIGRATIONS_DIR, '001_initial.sql'), 'utf8'));
  legacy.exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
    sha256 TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT`);
  const first = readMigrations(DEFAULT_MIGRATIONS_DIR)[0]!;
  legacy
    .prepare('INSERT INTO schema_migrations VALUES (?, ?, ?, ?)')
    .run(first.version, first.name, first.sha256, new Date().toISOString());
  legacy.close();
  const upgraded = await openGallery(old, { config: CONFIG });
  t.teardown(() => upgraded.close());
  t.true(existsSync(path.join(old, 'deployment.sqlite')));
});

test("an export's policy is checked before use and never replaces a gallery's own", async (t) => {
  const random = rng(24);
  const source = await openGallery(tempDir(t), { config: CONFIG });
  t.teardown(() => source.close());
  source.setPolicy({ keepForSeconds: 30 * 86_400, legalBasis: 'consent' });
  source.enrol('ann', faces(random, 1, 'a'), undefined, { keepForSeconds: 20 * 86_400 });
  const file = path.join(tempDir(t), 'plain.jsonl');
  exportGallery(source, file, { plaintext: true });

  // A crafted header policy (a bidirectional control in the legal basis): refused, and the new
  // gallery is left without a configuration.
  const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
  const header = JSON.parse(lines[0]!);
  header.policy.legalBasis = 'con\u202esent';
  const body = [JSON.stringify(header), lines[1]].map((line) => line + '\n').join('');
  const sha256 = createHash('sha256').update(body).digest('hex');
  const crafted = file + '.crafted';
  writeFileSync(
    crafted,
    body + JSON.stringify({ type: 'end', identities: 1, faces: 1, sha256 }) + '\n',
  );
  const empty = await openGallery(tempDir(t));
  t.teardown(() => empty.close());
  const error = await t.throwsAsync(importGallery(empty, crafted), {
    message: /line 1: legalBasis/,
  });
  t.is((error as { code?: string }).code, 'export_invalid');
  t.is(empty.config(), null);

  // A gallery not yet configured but with a policy of its own keeps it; the identity's longer
  // keep-for is capped at that policy's.
  const own = await openGallery(tempDir(t));
  t.teardown(() => own.close());
  own.setPolicy({ keepForSeconds: 86_400 });
  t.like(await importGallery(own, file), { identities: 1 });
  t.like(own.policy(), { keepForSeconds: 86_400, legalBasis: null });
  t.is(own.getIdentity('ann').policy.keepForSeconds, 86_400);
});

test('an enrolment older than the erasure fence is refused', async (t) => {
  const gallery = await openGallery(tempDir(t), { config: CONFIG });
  t.teardown(() => gallery.close());
  const random = rng(25);
  const startedAt = performance.now() - 11 * 60_000;
  const error = t.throws(() =>
    gallery.enrol('late', faces(random, 1, 'l'), undefined, {}, { startedAt }),
  );
  t.is((error as { code?: string }).code, 'conflict');
  t.is(gallery.stats().faces, 0);
});

test('an empty deployment.sqlite beside a linked gallery is refused and left as it is', async (t) => {
  const dir = tempDir(t);
  (await openGallery(dir, { config: CONFIG })).close();
  const file = path.join(dir, 'deployment.sqlite');
  for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
  writeFileSync(file, '');
  await t.throwsAsync(openGallery(dir, { config: CONFIG }), { message: /is empty/ });
  t.is(readFileSync(file).byteLength, 0);
});

test("a new gallery's folder and files are readable by their owner only", async (t) => {
  const dir = path.join(tempDir(t), 'new-gallery');
  const gallery = await openGallery(dir, { config: CONFIG, saveDelayMs: 0 });
  gallery.enrol('ann', faces(rng(26), 1, 'a'));
  gallery.close();

  const mode = (file: string) => statSync(path.join(dir, file)).mode & 0o777;
  t.is(mode('.'), 0o700);
  for (const file of ['gallery.sqlite', 'deployment.sqlite', 'index.hnsw', 'index.meta.json']) {
    t.is(mode(file), 0o600, file);
  }
});
