import { execFile, spawn } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';

import Database from 'better-sqlite3';
import test from 'ava';

import { isLoopbackHost, checkServeAuth } from '../../src/cli/serve-command.ts';
import { ReidbError } from '../../src/errors.ts';
import { openGallery, type Gallery } from '../../src/gallery/gallery.ts';
import type { EnrolReport, SearchReport } from '../../src/engine/service.ts';
import { auditEnrolment, auditRead, auditSearch, cliActor } from '../../src/policy/audit-events.ts';
import { openDeployment } from '../../src/policy/deployment.ts';
import { startRetentionSchedule } from '../../src/policy/retention-schedule.ts';
import type { RetentionSummary } from '../../src/policy/retention.ts';
import type { AuditRow } from '../../src/policy/types.ts';
import { silentLogger, type Logger } from '../../src/log.ts';
import { reidb, REPO_ROOT } from '../helpers/cli.ts';
import { hasData } from '../helpers/data.ts';
import { lfw } from '../helpers/images.ts';
import { CONFIG, randomFace, rng, tempDir } from '../gallery/fixtures.ts';

const BIN = path.join(REPO_ROOT, 'bin', 'reidb.js');

/** Runs the real `reidb` without --json: exit code and the text on stdout and stderr. */
function reidbText(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: REPO_ROOT }, (error, stdout, stderr) => {
      const code = error ? Number((error as { code?: number }).code ?? 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Every file under a directory, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? filesUnder(full) : [full];
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `done()` holds, checking every 10 ms; false after `timeoutMs`. */
async function waitFor(done: () => boolean, timeoutMs = 10_000): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > until) return false;
    await sleep(10);
  }
  return true;
}

/** Opens the gallery in `dir` with the test configuration, saving the index at once. */
function open(dir: string): Promise<Gallery> {
  return openGallery(dir, { config: CONFIG, saveDelayMs: 0 });
}

/**
 * A gallery in `dir` with the given identities and face counts (synthetic faces), closed
 * again so that the CLI can take its lock. Returns each identity's face uids and reference.
 */
async function buildGallery(
  dir: string,
  people: { identity: string; faces: number; keepForSeconds?: number }[],
): Promise<Record<string, { uids: string[]; ref: string }>> {
  const gallery = await open(dir);
  const random = rng(7);
  const out: Record<string, { uids: string[]; ref: string }> = {};
  try {
    for (const person of people) {
      const faces = Array.from({ length: person.faces }, (_, i) =>
        randomFace(random, `${person.identity}-${i}.jpg`),
      );
      const policy =
        person.keepForSeconds === undefined ? undefined : { keepForSeconds: person.keepForSeconds };
      const { faceUids } = gallery.enrol(person.identity, faces, undefined, policy);
      out[person.identity] = {
        uids: faceUids,
        ref: gallery.deployment.identityRef(person.identity),
      };
    }
  } finally {
    gallery.close();
  }
  return out;
}

/** The audit rows of a deployment directory, read in the test process. */
function auditRows(dir: string): AuditRow[] {
  const deployment = openDeployment(dir, { mustExist: true });
  try {
    return deployment.audit.rows();
  } finally {
    deployment.close();
  }
}

test('keys create, list and revoke: the key authenticates until revoked and is stored nowhere', async (t) => {
  const dir = tempDir(t, 'reidb-keys-');

  const created = await reidb([
    'keys',
    'create',
    '--db',
    dir,
    '--role',
    'enrol,search',
    '--label',
    'ops',
  ]);
  t.is(created.code, 0, created.stderr);
  const { key, id, roles, label, createdAt } = created.json;
  t.regex(key, /^reidb_k_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
  t.is(id, key.split('_').slice(1, 3).join('_'));
  t.deepEqual(roles, ['enrol', 'search']);
  t.is(label, 'ops');
  t.false(Number.isNaN(Date.parse(createdAt)));

  const text = await reidbText(['keys', 'create', '--db', dir, '--role', 'admin']);
  t.is(text.code, 0, text.stderr);
  const [printed, notice] = text.stdout.split('\n');
  t.regex(printed!, /^reidb_k_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
  t.regex(notice!, /shown only once/);

  const listed = await reidb(['keys', 'list', '--db', dir]);
  t.is(listed.code, 0, listed.stderr);
  t.deepEqual(
    listed.json.keys.map((k: { id: string }) => k.id),
    [id, printed!.split('_').slice(1, 3).join('_')],
  );
  // 'reidb_' + 'k_' + 12 hex digits + '_', then the secret (which may itself hold '_').
  const secret = key.slice(21) as string;
  t.is(secret.length, 43);
  t.false(JSON.stringify(listed.json).includes(secret), 'a listing never holds a secret');
  t.false(JSON.stringify(listed.json).includes(key));

  let deployment = openDeployment(dir, { mustExist: true });
  t.is(deployment.keys.authenticate(key)?.id, id);
  deployment.close();

  const revoked = await reidb(['keys', 'revoke', '--db', dir, '--id', id]);
  t.is(revoked.code, 0, revoked.stderr);
  t.is(revoked.json.id, id);
  t.truthy(revoked.json.revokedAt);
  const missing = await reidb(['keys', 'revoke', '--db', dir, '--id', 'k_000000000000']);
  t.is(missing.code, 1);
  t.is(missing.json.error.code, 'key_not_found');

  deployment = openDeployment(dir, { mustExist: true });
  t.is(deployment.keys.authenticate(key), null, 'a revoked key authenticates nothing');
  const rows = deployment.audit.rows();
  deployment.close();
  t.deepEqual(
    rows.map((row) => [row.action, row.details]),
    [
      ['key_create', { keyId: id, roles: ['enrol', 'search'] }],
      ['key_create', { keyId: printed!.split('_').slice(1, 3).join('_'), roles: ['admin'] }],
      ['key_revoke', { keyId: id, roles: ['enrol', 'search'] }],
    ],
  );
  t.true(rows.every((row) => row.actor === cliActor() && row.identityRef === null));

  // Neither the key nor its secret, as text or as bytes, is in any file of the directory.
  const secretBytes = Buffer.from(secret, 'base64url');
  for (const file of filesUnder(dir)) {
    const bytes = readFileSync(file);
    t.false(bytes.includes(key), file);
    t.false(bytes.includes(secret), file);
    t.false(bytes.includes(secretBytes), file);
  }
});

test('keys create: an unknown role or a missing --role is exit 2 naming it', async (t) => {
  const dir = tempDir(t, 'reidb-keys-');

  const unknown = await reidb(['keys', 'create', '--db', dir, '--role', 'enrol,wizard']);
  t.is(unknown.code, 2);
  t.is(unknown.json.error.code, 'invalid_argument');
  t.is(unknown.json.error.input, 'wizard');
  t.regex(unknown.json.error.message, /--role: unknown role 'wizard'/);

  const none = await reidb(['keys', 'create', '--db', dir]);
  t.is(none.code, 2);
  t.regex(none.json.error.message, /--role is required/);

  const label = await reidb(['keys', 'create', '--db', dir, '--role', 'read', '--label', 'a\tb']);
  t.is(label.code, 2);
  t.is(label.json.error.input, '--label');

  const group = await reidbText(['keys']);
  t.is(group.code, 2);
  const help = await reidbText(['keys', '--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /reidb keys create .*\n.*reidb keys list .*\n.*reidb keys revoke/);
});

test('keys and audit commands work while another process holds the gallery lock', async (t) => {
  const dir = tempDir(t, 'reidb-locked-');
  const gallery = await open(dir);
  t.teardown(() => gallery.close());

  const created = await reidb(['keys', 'create', '--db', dir, '--role', 'read']);
  t.is(created.code, 0, created.stderr);
  const listed = await reidb(['keys', 'list', '--db', dir]);
  t.is(listed.json.keys.length, 1);
  const verified = await reidb(['audit', 'verify', '--db', dir]);
  t.is(verified.code, 0, verified.stderr);
  t.is(verified.json.rows, 1);

  // The gallery itself is locked: a command that needs it is refused.
  const retention = await reidb(['retention', 'run', '--db', dir]);
  t.is(retention.code, 1);
  t.is(retention.json.error.code, 'gallery_locked');

  // The holder sees the key at once (its own connection to deployment.sqlite).
  t.true(gallery.deployment.keys.hasActive());
});

test('retention run erases exactly the faces whose keep-for ran out, once', async (t) => {
  const dir = tempDir(t, 'reidb-retention-');
  const people = await buildGallery(dir, [
    { identity: 'A', faces: 3, keepForSeconds: 1 },
    { identity: 'B', faces: 2 },
  ]);
  await sleep(1200);

  const dry = await reidb(['retention', 'run', '--db', dir, '--dry-run']);
  t.is(dry.code, 0, dry.stderr);
  t.like(dry.json, { facesDue: 3, identitiesDue: 1, facesErased: 0, dryRun: true, erased: [] });

  const first = await reidb(['retention', 'run', '--db', dir]);
  t.is(first.code, 0, first.stderr);
  const summary = first.json as RetentionSummary;
  t.like(summary, {
    facesDue: 3,
    identitiesDue: 1,
    facesErased: 3,
    identitiesErased: 1,
    dryRun: false,
  });
  t.deepEqual(summary.erased, [{ identityRef: people.A!.ref, faces: 3, whole: true }]);
  t.regex(first.stderr, /retention: 1\/1 identities done/);

  const second = await reidb(['retention', 'run', '--db', dir]);
  t.like(second.json, { facesDue: 0, facesErased: 0, identitiesErased: 0, erased: [] });
  const text = await reidbText(['retention', 'run', '--db', dir]);
  t.regex(text.stdout, /^retention: nothing due/);

  const gallery = await open(dir);
  try {
    t.deepEqual(gallery.identityLabels(), ['B']);
    t.is(gallery.stats().faces, 2);
    t.is(gallery.stats().indexCount, 2);
    t.is(gallery.deployment.ledger.erasedAmong(people.A!.uids).size, 3);
    t.is(gallery.deployment.ledger.erasedAmong(people.B!.uids).size, 0);
    const rows = gallery.deployment.audit.rows({ identityRef: people.A!.ref });
    t.deepEqual(
      rows.map((row) => [row.action, row.actor, row.details]),
      [['retention_erase', cliActor(), { faces: 3, identityRemoved: true }]],
    );
  } finally {
    gallery.close();
  }
});

test('policy set --keep-for applies to stored faces, also those with a longer keep-for of their own', async (t) => {
  const dir = tempDir(t, 'reidb-policy-');
  const people = await buildGallery(dir, [
    { identity: 'C', faces: 2 },
    { identity: 'D', faces: 1, keepForSeconds: 365 * 86400 },
  ]);

  const shown = await reidb(['policy', 'show', '--db', dir]);
  t.is(shown.code, 0, shown.stderr);
  t.like(shown.json, { keepForSeconds: null, keepFor: null, thumbnails: 'off', legalBasis: null });

  const set = await reidb(['policy', 'set', '--db', dir, '--keep-for', '1s']);
  t.is(set.code, 0, set.stderr);
  t.like(set.json, { keepForSeconds: 1, keepFor: '1s', changed: ['keepForSeconds'] });
  await sleep(1200);

  // The gallery's keep-for is a ceiling: D's own year does not outlast it.
  const run = await reidb(['retention', 'run', '--db', dir]);
  t.like(run.json, { facesDue: 3, facesErased: 3, identitiesErased: 2 });
  t.deepEqual(
    run.json.erased.map((e: { identityRef: string }) => e.identityRef).sort(),
    [people.C!.ref, people.D!.ref].sort(),
  );

  const more = await reidb([
    'policy',
    'set',
    '--db',
    dir,
    '--keep-for',
    'none',
    '--legal-basis',
    'Art. 6(1)(e) and 9(2)(g) GDPR',
    '--purpose',
    'finding missing persons',
    '--thumbnails',
    'blurred',
  ]);
  t.is(more.code, 0, more.stderr);
  t.like(more.json, {
    keepForSeconds: null,
    keepFor: null,
    legalBasis: 'Art. 6(1)(e) and 9(2)(g) GDPR',
    purpose: 'finding missing persons',
    thumbnails: 'blurred',
  });
  t.deepEqual(more.json.changed, ['keepForSeconds', 'legalBasis', 'purpose', 'thumbnails']);
  const text = await reidbText(['policy', 'show', '--db', dir]);
  t.regex(text.stdout, /keep-for: +none/);
  t.regex(text.stdout, /thumbnails: +blurred/);

  const cleared = await reidb(['policy', 'set', '--db', dir, '--purpose', 'none']);
  t.is(cleared.json.purpose, null);

  const changes = auditRows(dir).filter((row) => row.action === 'policy_change');
  t.deepEqual(
    changes.map((row) => row.details),
    [
      { changed: ['keepForSeconds'], keepForSeconds: 1 },
      {
        changed: ['keepForSeconds', 'legalBasis', 'purpose', 'thumbnails'],
        keepForSeconds: null,
        legalBasis: 'Art. 6(1)(e) and 9(2)(g) GDPR',
        purpose: 'finding missing persons',
        thumbnails: 'blurred',
      },
      { changed: ['purpose'], purpose: null },
    ],
  );

  const bad: [string[], string][] = [
    [['--keep-for', '30 days'], '--keep-for'],
    [['--keep-for', '0s'], '--keep-for'],
    [['--thumbnails', 'sometimes'], '--thumbnails'],
    [['--purpose', ' '], '--purpose'],
    [['--legal-basis', 'a\nb'], '--legal-basis'],
  ];
  for (const [flags, input] of bad) {
    const r = await reidb(['policy', 'set', '--db', dir, ...flags]);
    t.is(r.code, 2, flags.join(' '));
    t.is(r.json.error.input, input);
  }
  const nothing = await reidb(['policy', 'set', '--db', dir]);
  t.is(nothing.code, 2);
  t.regex(nothing.json.error.message, /at least one of --keep-for/);
});

test('audit verify: exit 0 when intact, exit 1 naming an edited row or a removed row', async (t) => {
  const edited = tempDir(t, 'reidb-audit-');
  const removed = tempDir(t, 'reidb-audit-');
  for (const dir of [edited, removed]) {
    const deployment = openDeployment(dir);
    for (let i = 1; i <= 4; i++) {
      deployment.audit.append({ actor: 'cli:test', action: 'key_create', details: { n: i } });
    }
    deployment.close();
  }

  const intact = await reidb(['audit', 'verify', '--db', edited]);
  t.is(intact.code, 0, intact.stderr);
  t.is(intact.json.ok, true);
  t.is(intact.json.rows, 4);
  t.regex(intact.json.head, /^[0-9a-f]{64}$/);
  const intactText = await reidbText(['audit', 'verify', '--db', edited]);
  t.regex(intactText.stdout, /intact: 4 row/);
  t.true(intactText.stdout.includes(intact.json.head));

  let db = new Database(path.join(edited, 'deployment.sqlite'));
  db.exec('DROP TRIGGER audit_log_no_update');
  db.prepare('UPDATE audit_log SET details = ? WHERE seq = 2').run('{"n":20}');
  db.close();

  const tampered = await reidb(['audit', 'verify', '--db', edited]);
  t.is(tampered.code, 1);
  t.is(tampered.json.ok, false);
  t.is(tampered.json.rows, 4);
  t.is(tampered.json.firstBad.seq, 2);
  t.regex(tampered.json.firstBad.reason, /hash does not match/);
  const tamperedText = await reidbText(['audit', 'verify', '--db', edited]);
  t.is(tamperedText.code, 1);
  t.regex(tamperedText.stdout, /^audit trail tampered: row 2: /);

  db = new Database(path.join(removed, 'deployment.sqlite'));
  db.exec('DROP TRIGGER audit_log_no_delete');
  db.prepare('DELETE FROM audit_log WHERE seq = 3').run();
  db.close();

  const gap = await reidb(['audit', 'verify', '--db', removed]);
  t.is(gap.code, 1);
  t.like(gap.json, { ok: false, rows: 3, firstBad: { seq: 3 } });
  t.regex(gap.json.firstBad.reason, /row 3 is missing/);

  const nowhere = await reidb(['audit', 'verify', '--db', path.join(removed, 'nothing-here')]);
  t.is(nowhere.code, 1);
  t.is(nowhere.json.error.code, 'gallery_not_found');
});

test('audit export: csv and json, to stdout or a 0600 file, and one identity only', async (t) => {
  const dir = tempDir(t, 'reidb-audit-export-');
  const people = await buildGallery(dir, [
    { identity: 'A', faces: 2 },
    { identity: 'B', faces: 1 },
  ]);
  const deployment = openDeployment(dir, { mustExist: true });
  auditRead(deployment, 'cli:test', 'read', 'A');
  auditRead(deployment, 'cli:test', 'read', 'B');
  auditRead(deployment, 'cli:test', 'list');
  deployment.close();
  const erased = await reidb(['erase', '--db', dir, '--identity', 'A']);
  t.is(erased.code, 0, erased.stderr);

  const all = await reidb(['audit', 'export', '--db', dir, '--format', 'json']);
  t.is(all.code, 0, all.stderr);
  t.deepEqual(
    all.json.rows.map((row: AuditRow) => row.action),
    ['read', 'read', 'list', 'erase'],
  );
  const erase = all.json.rows[3] as AuditRow;
  t.like(erase, { actor: cliActor(), identityRef: people.A!.ref, details: { faces: 2 } });

  const one = await reidb(['audit', 'export', '--db', dir, '--format', 'json', '--identity', 'A']);
  t.deepEqual(
    one.json.rows.map((row: AuditRow) => [row.action, row.identityRef]),
    [
      ['read', people.A!.ref],
      ['erase', people.A!.ref],
    ],
  );

  const textJson = await reidbText(['audit', 'export', '--db', dir, '--format', 'json']);
  t.is(JSON.parse(textJson.stdout).rows.length, 6, 'the two exports before are audited too');

  const csv = await reidbText([
    'audit',
    'export',
    '--db',
    dir,
    '--format',
    'csv',
    '--identity',
    'B',
  ]);
  const lines = csv.stdout.split('\r\n');
  t.is(lines[0], 'seq,at,actor,action,identity_ref,details,prev_hash,hash');
  t.is(lines.length, 3, 'header, one row, and the final line end');
  t.true(lines[1]!.includes(people.B!.ref));

  // Outside the gallery directory: an --out inside it is refused (test/cli/export-hardening).
  const file = path.join(tempDir(t, 'reidb-audit-out-'), 'trail.csv');
  const toFile = await reidb(['audit', 'export', '--db', dir, '--format', 'csv', '--out', file]);
  t.is(toFile.code, 0, toFile.stderr);
  t.like(toFile.json, { file, format: 'csv', count: 8 });
  t.is(statSync(file).mode & 0o777, 0o600);
  t.is(readFileSync(file, 'utf8').split('\r\n').length, 10);

  const exports = auditRows(dir).filter((row) => row.action === 'audit_export');
  t.deepEqual(
    exports.map((row) => [row.identityRef, row.details]),
    [
      [null, { format: 'json', rows: 4 }],
      [people.A!.ref, { format: 'json', rows: 2 }],
      [null, { format: 'json', rows: 6 }],
      [people.B!.ref, { format: 'csv', rows: 1 }],
      [null, { format: 'csv', rows: 8 }],
    ],
  );

  const mixed = await reidb(['audit', 'export', '--db', dir, '--format', 'csv']);
  t.is(mixed.code, 2, 'csv on stdout is not one JSON document');
  const noFormat = await reidb(['audit', 'export', '--db', dir]);
  t.is(noFormat.code, 2);
  t.is(noFormat.json.error.input, '--format');
});

test('export, erase, import: the erased identity stays gone, the others come back', async (t) => {
  const dir = tempDir(t, 'reidb-export-');
  const people = await buildGallery(dir, [
    { identity: 'A', faces: 2 },
    { identity: 'B', faces: 3 },
  ]);
  const file = path.join(tempDir(t, 'reidb-export-file-'), 'gallery.reidb');

  const exported = await reidb(['export', '--db', dir, '--out', file]);
  t.is(exported.code, 0, exported.stderr);
  t.like(exported.json, { file, identities: 2, faces: 5, encrypted: true });
  t.is(statSync(file).mode & 0o777, 0o600);
  t.false(readFileSync(file, 'utf8').includes('"B"'), 'records are sealed');

  await reidb(['erase', '--db', dir, '--identity', 'A']);

  const same = await reidb(['import', '--db', dir, '--in', file]);
  t.is(same.code, 0, same.stderr);
  t.deepEqual(same.json, {
    identities: 0,
    faces: 0,
    skippedErased: 0,
    skippedDuplicate: 3,
    unreadable: 1,
  });

  // Disaster recovery: the gallery's files are lost, deployment.sqlite is kept.
  for (const name of readdirSync(dir)) {
    if (name.startsWith('gallery.sqlite') || name.startsWith('index.')) {
      rmSync(path.join(dir, name));
    }
  }
  const restored = await reidbText(['import', '--db', dir, '--in', file]);
  t.is(restored.code, 0, restored.stderr);
  t.regex(restored.stdout, /imported 1 identity\(ies\) with 3 face\(s\)/);
  t.regex(restored.stdout, /0 face\(s\) skipped as erased/);
  t.regex(restored.stdout, /1 identity record\(s\) unreadable/);

  const gallery = await open(dir);
  try {
    t.deepEqual(gallery.identityLabels(), ['B']);
    t.deepEqual(
      gallery.getIdentity('B').faces.map((face) => face.uid),
      people.B!.uids,
    );
    t.is(gallery.stats().faces, gallery.stats().indexCount);
    const rows = gallery.deployment.audit.rows();
    t.deepEqual(
      rows.filter((row) => row.action.startsWith('gallery_')).map((row) => row.details),
      [
        { identities: 2, faces: 5, encrypted: true },
        { identities: 0, faces: 0, skippedErased: 0, skippedDuplicate: 3, unreadable: 1 },
        { identities: 1, faces: 3, skippedErased: 0, skippedDuplicate: 0, unreadable: 1 },
      ],
    );
  } finally {
    gallery.close();
  }
});

test('a plaintext export imported after an erasure: the ledger skips the erased faces', async (t) => {
  const dir = tempDir(t, 'reidb-plain-');
  await buildGallery(dir, [
    { identity: 'A', faces: 2 },
    { identity: 'B', faces: 1 },
  ]);
  const file = path.join(tempDir(t, 'reidb-plain-file-'), 'gallery.jsonl');

  const exported = await reidb(['export', '--db', dir, '--out', file, '--plaintext']);
  t.is(exported.code, 0, exported.stderr);
  t.is(exported.json.encrypted, false);
  t.regex(exported.stderr, /warning: .*plain text/);
  t.true(readFileSync(file, 'utf8').includes('"record"'));
  t.is(statSync(file).mode & 0o777, 0o600);

  await reidb(['erase', '--db', dir, '--identity', 'A']);
  const imported = await reidb(['import', '--db', dir, '--in', file]);
  t.is(imported.code, 0, imported.stderr);
  t.deepEqual(imported.json, {
    identities: 0,
    faces: 0,
    skippedErased: 2,
    skippedDuplicate: 1,
    unreadable: 0,
  });

  const gallery = await open(dir);
  try {
    t.deepEqual(gallery.identityLabels(), ['B']);
  } finally {
    gallery.close();
  }
});

test('a truncated export is export_invalid and changes nothing', async (t) => {
  const dir = tempDir(t, 'reidb-cut-');
  await buildGallery(dir, [
    { identity: 'A', faces: 2 },
    { identity: 'B', faces: 1 },
  ]);
  const file = path.join(tempDir(t, 'reidb-cut-file-'), 'gallery.reidb');
  await reidb(['export', '--db', dir, '--out', file]);
  await reidb(['erase', '--db', dir, '--identity', 'B']);
  truncateSync(file, Math.floor(statSync(file).size / 2));

  const cut = await reidb(['import', '--db', dir, '--in', file]);
  t.is(cut.code, 1);
  t.is(cut.json.error.code, 'export_invalid');

  const gallery = await open(dir);
  try {
    t.deepEqual(gallery.identityLabels(), ['A']);
    t.is(gallery.stats().faces, 2);
    t.false(gallery.deployment.audit.rows().some((row) => row.action === 'gallery_import'));
  } finally {
    gallery.close();
  }

  const gone = await reidb(['import', '--db', dir, '--in', path.join(dir, 'no-such-file')]);
  t.is(gone.code, 1);
  t.is(gone.json.error.code, 'file_not_found');
});

test('a gallery.sqlite restored from before an erasure is cleaned at the next open', async (t) => {
  const dir = tempDir(t, 'reidb-restore-');
  const backup = tempDir(t, 'reidb-restore-backup-');
  const people = await buildGallery(dir, [
    { identity: 'A', faces: 2 },
    { identity: 'B', faces: 3 },
  ]);
  for (const name of ['gallery.sqlite', 'gallery.sqlite-wal']) {
    if (existsSync(path.join(dir, name)))
      copyFileSync(path.join(dir, name), path.join(backup, name));
  }

  const erased = await reidb(['erase', '--db', dir, '--identity', 'A']);
  t.is(erased.code, 0, erased.stderr);
  t.is(erased.json.facesRemoved, 2);

  for (const name of ['gallery.sqlite-wal', 'gallery.sqlite-shm']) {
    rmSync(path.join(dir, name), { force: true });
  }
  for (const name of readdirSync(backup))
    copyFileSync(path.join(backup, name), path.join(dir, name));

  const gallery = await open(dir);
  try {
    t.deepEqual(gallery.identityLabels(), ['B']);
    const error = t.throws(() => gallery.getIdentity('A'));
    t.is((error as ReidbError).code, 'identity_not_found');
    t.is(gallery.stats().faces, 3);
    t.is(gallery.stats().faces, gallery.stats().indexCount);
    const reapplied = gallery.deployment.audit
      .rows({ identityRef: people.A!.ref })
      .filter((row) => row.action === 'erasure_reapplied');
    t.is(reapplied.length, 1);
    t.like(reapplied[0], { actor: 'system:open', details: { faces: 2, identityRemoved: true } });
  } finally {
    gallery.close();
  }
});

test('serve refuses a non-loopback host without keys, before loading any model', async (t) => {
  const dir = tempDir(t, 'reidb-serve-');
  // A model file that does not exist: were models loaded first, this would be model_missing.
  const refused = await reidb([
    'serve',
    '--db',
    dir,
    '--host',
    '0.0.0.0',
    '--port',
    '0',
    '--embedder',
    'onnx-arcface',
    '--model',
    path.join(dir, 'no-such-model.onnx'),
  ]);
  t.is(refused.code, 1);
  t.is(refused.json.error.code, 'auth_required');
  t.is(refused.json.error.input, '0.0.0.0');
  t.regex(refused.json.error.message, /refusing to listen on 0\.0\.0\.0 without API keys/);
  t.regex(refused.json.error.message, /reidb keys create --db /);

  const interval = await reidb(['serve', '--db', dir, '--retention-interval', 'hourly']);
  t.is(interval.code, 2);
  t.is(interval.json.error.input, '--retention-interval');
});

test('which hosts count as loopback, and that a key lifts the refusal', (t) => {
  for (const host of [
    '127.0.0.1',
    '127.1.2.3',
    'localhost',
    'LOCALHOST',
    '::1',
    '[::1]',
    '0:0:0:0:0:0:0:1',
  ]) {
    t.true(isLoopbackHost(host), host);
    t.notThrows(() => checkServeAuth(host, false, 'g'));
  }
  for (const host of [
    '0.0.0.0',
    '::',
    '192.168.1.2',
    '10.0.0.1',
    '128.0.0.1',
    'example.org',
    '::ffff:7f00:1x',
  ]) {
    t.false(isLoopbackHost(host), host);
    const error = t.throws(() => checkServeAuth(host, false, 'g'));
    t.is((error as ReidbError).code, 'auth_required');
    t.notThrows(() => checkServeAuth(host, true, 'g'), 'with an active key');
  }
});

test('serve starts open on 127.0.0.1 without keys; keys create works while it runs', async (t) => {
  const dir = tempDir(t, 'reidb-serve-');
  const child = spawn(
    process.execPath,
    [BIN, 'serve', '--db', dir, '--host', '127.0.0.1', '--port', '0', '--json'],
    { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  t.teardown(() => {
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
  });

  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const listening = await new Promise<{ listening: string; auth: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${stderr}`)), 120_000);
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const line = stdout.split('\n')[0];
      if (stdout.includes('\n')) {
        clearTimeout(timer);
        resolve(JSON.parse(line!));
      }
    });
    void exited.then((code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
  });
  t.regex(listening.listening, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.is(listening.auth, 'open');

  const health = await fetch(`${listening.listening}/healthz`);
  t.is(health.status, 200);

  const created = await reidb(['keys', 'create', '--db', dir, '--role', 'search']);
  t.is(created.code, 0, created.stderr);
  const verified = await reidb(['audit', 'verify', '--db', dir]);
  t.is(verified.code, 0, verified.stderr);

  process.kill(child.pid!, 'SIGTERM');
  t.is(await exited, 0, stderr);
});

test('enroll: a bad --keep-for, --legal-basis or --purpose is exit 2 naming the flag', async (t) => {
  const dir = tempDir(t, 'reidb-enrol-');
  const cases: [string[], string][] = [
    [['--keep-for', '3x'], '--keep-for'],
    [['--keep-for', '-1d'], '--keep-for'],
    [['--legal-basis', 'a\u0007b'], '--legal-basis'],
    [['--purpose', ''], '--purpose'],
  ];
  for (const [flags, input] of cases) {
    const r = await reidb(['enroll', '--db', dir, '--identity', 'a', ...flags, 'a.jpg']);
    t.is(r.code, 2, flags.join(' '));
    t.is(r.json.error.code, 'invalid_argument');
    t.is(r.json.error.input, input);
  }
  t.false(existsSync(path.join(dir, 'gallery.sqlite')), 'nothing was opened');
});

test('audit events: enrolment rows per identity, search rows without labels or file names', async (t) => {
  const dir = tempDir(t, 'reidb-events-');
  const deployment = openDeployment(dir);
  t.teardown(() => deployment.close());
  const box = { x: 1, y: 2, width: 3, height: 4 };

  const report: EnrolReport = {
    enrolled: [
      { file: 'people/ann/1.jpg', identity: 'ann', faceId: 1, box, quality: 0.9 },
      { file: 'people/ann/2.jpg', identity: 'ann', faceId: 2, box, quality: 0.9 },
    ],
    identities: ['ann'],
    skipped: [
      { file: 'people/ann/3.jpg', code: 'no_face', message: 'no face' },
      { file: 'people/bob/1.jpg', code: 'corrupt_image', message: 'cut' },
    ],
  };
  const items = ['ann/1', 'ann/2', 'ann/3', 'bob/1'].map((name) => ({
    identity: name.split('/')[0]!,
    image: { file: `people/${name}.jpg` },
  }));
  const enrolRows = auditEnrolment(deployment, 'cli:test', report, items);
  t.deepEqual(
    enrolRows.map((row) => [row.action, row.identityRef, row.details]),
    [
      ['enrol', deployment.identityRef('ann'), { faces: 2, skipped: 1 }],
      ['enrol', deployment.identityRef('bob'), { faces: 0, skipped: 1 }],
    ],
  );

  const search: SearchReport = {
    file: 'probes/secret-name.jpg',
    faces: [
      {
        box,
        yaw: 0,
        pitch: 0,
        roll: 0,
        quality: 0.8,
        matches: [
          { identity: 'ann', faceId: 1, score: 0.9 },
          { identity: 'ann', faceId: 2, score: 0.8 },
          { identity: 'bob', faceId: 3, score: 0.1 },
        ],
      },
    ],
  };
  const row = auditSearch(deployment, 'cli:test', search, 3);
  t.is(row.identityRef, null);
  t.deepEqual(row.details, {
    faces: 1,
    k: 3,
    matches: 3,
    matchedRefs: [deployment.identityRef('ann'), deployment.identityRef('bob')],
    outcome: 'matched',
  });
  const failed = auditSearch(
    deployment,
    'cli:test',
    { file: 'probes/x.jpg', error: { code: 'not_an_image', message: 'probes/x.jpg: text' } },
    5,
  );
  t.like(failed.details, { faces: 0, matches: 0, outcome: 'error', error: 'not_an_image' });

  const stored =
    readFileSync(path.join(dir, 'deployment.sqlite')).toString('latin1') +
    (existsSync(path.join(dir, 'deployment.sqlite-wal'))
      ? readFileSync(path.join(dir, 'deployment.sqlite-wal')).toString('latin1')
      : '');
  for (const word of ['secret-name', 'probes', 'people/ann', 'ann"', 'bob"']) {
    t.false(stored.includes(word), word);
  }
  t.regex(cliActor(), /^cli:\S+/);
});

test('the retention schedule runs soon after start, repeats, and survives a failing run', async (t) => {
  const dir = tempDir(t, 'reidb-schedule-');
  const gallery = await open(dir);
  const random = rng(3);
  gallery.enrol('old', [randomFace(random, 'o.jpg')], undefined, { keepForSeconds: 1 });
  gallery.enrol('kept', [randomFace(random, 'k.jpg')]);
  await sleep(1100);

  const errors: string[] = [];
  const logger: Logger = { ...silentLogger, error: (message) => errors.push(message) };
  const runs: RetentionSummary[] = [];
  const schedule = startRetentionSchedule(gallery, {
    intervalMs: 40,
    firstDelayMs: 10,
    logger,
    onRun: (summary) => runs.push(summary),
  });
  t.true(await waitFor(() => runs.length >= 2), `${runs.length} runs`);
  t.is(runs[0]!.facesErased, 1);
  t.true(runs.slice(1).every((run) => run.facesErased === 0));
  t.deepEqual(gallery.identityLabels(), ['kept']);

  // A closed gallery makes every run fail: logged, never thrown, the schedule goes on.
  gallery.close();
  t.true(await waitFor(() => errors.length >= 2), `${errors.length} errors`);
  t.true(errors.every((message) => /retention run failed/.test(message)));
  schedule.stop();
  const after = errors.length;
  await sleep(150);
  t.is(errors.length, after, 'stop() ends the schedule');
});

test('enroll --keep-for, search and erase on real photos write their audit rows', async (t) => {
  if (!hasData(t)) return;
  const work = tempDir(t, 'reidb-audit-e2e-');
  const db = path.join(work, 'gallery');
  const people = path.join(work, 'people');
  const A = 'Abdullah_Gul';
  const B = 'Alejandro_Toledo';
  for (const person of [A, B]) {
    mkdirSync(path.join(people, person), { recursive: true });
    for (const n of [1, 2]) writeFileSync(path.join(people, person, `${n}.jpg`), lfw(person, n));
  }
  writeFileSync(path.join(people, B, 'notes.jpg'), 'not a photo\n');
  const probe = path.join(work, 'probe-of-someone.jpg');
  writeFileSync(probe, lfw(A, 3));

  const enrol = await reidb([
    'enroll',
    '--db',
    db,
    '--layout',
    'folder',
    people,
    '--keep-for',
    '30d',
    '--purpose',
    'audit test',
  ]);
  t.is(enrol.code, 0, enrol.stderr);
  t.is(enrol.json.enrolled, 4);

  const found = await reidb(['search', '--db', db, '--top-k', '3', probe]);
  t.is(found.code, 0, found.stderr);
  const erased = await reidb(['erase', '--db', db, '--identity', B]);
  t.is(erased.code, 0, erased.stderr);

  const gallery = await openGallery(db);
  try {
    t.deepEqual(gallery.getIdentity(A).policy, {
      keepForSeconds: 30 * 86400,
      legalBasis: null,
      purpose: 'audit test',
    });
    const refA = gallery.deployment.identityRef(A);
    const refB = gallery.deployment.identityRef(B);
    const rows = gallery.deployment.audit.rows();
    t.deepEqual(
      rows.map((row) => [row.action, row.identityRef]),
      [
        ['enrol', refA],
        ['enrol', refB],
        ['search', null],
        ['erase', refB],
      ],
    );
    const policy = { keepForSeconds: 30 * 86400, purpose: 'audit test' };
    t.deepEqual(rows[0]!.details, { faces: 2, skipped: 0, policy });
    t.deepEqual(rows[1]!.details, { faces: 2, skipped: 1, policy });
    const search = rows[2]!.details as { faces: number; k: number; matchedRefs: string[] };
    t.like(search, { faces: 1, k: 3, outcome: 'matched' });
    t.true(search.matchedRefs.includes(refA));
    t.deepEqual(rows[3]!.details, { faces: 2 });

    const trail = JSON.stringify(rows);
    for (const word of [A, B, 'probe-of-someone', '1.jpg']) t.false(trail.includes(word), word);
  } finally {
    gallery.close();
  }
});

test('erase of a label that is not enrolled is identity_not_found and leaves an audit row', async (t) => {
  const dir = tempDir(t, 'reidb-probe-');
  await buildGallery(dir, [{ identity: 'kept', faces: 1 }]);

  const probe = await reidb(['erase', '--db', dir, '--identity', 'never-enrolled']);
  t.is(probe.code, 1);
  t.is(probe.json.error.code, 'identity_not_found');

  const deployment = openDeployment(dir, { mustExist: true });
  const ref = deployment.identityRef('never-enrolled');
  deployment.close();
  const rows = auditRows(dir).filter((row) => row.identityRef === ref);
  t.deepEqual(
    rows.map((row) => [row.action, row.details]),
    [['erase', { found: false }]],
  );
});

test('keys create refuses to make a new deployment beside a gallery that lost its own', async (t) => {
  const dir = tempDir(t, 'reidb-lost-');
  await buildGallery(dir, [{ identity: 'kept', faces: 1 }]);
  for (const suffix of ['', '-wal', '-shm']) {
    rmSync(path.join(dir, 'deployment.sqlite' + suffix), { force: true });
  }

  const refused = await reidb(['keys', 'create', '--db', dir, '--role', 'read']);
  t.is(refused.code, 1);
  t.is(refused.json.error.code, 'gallery_corrupt');
  t.false(existsSync(path.join(dir, 'deployment.sqlite')));

  const accepted = await reidb([
    'keys',
    'create',
    '--db',
    dir,
    '--role',
    'read',
    '--new-deployment',
  ]);
  t.is(accepted.code, 0, accepted.stderr);
});

test('import into a new gallery restores its policy and audits the change', async (t) => {
  const dir = tempDir(t, 'reidb-restore-');
  await buildGallery(dir, [{ identity: 'ann', faces: 1 }]);
  t.is((await reidb(['policy', 'set', '--db', dir, '--keep-for', '30d'])).code, 0);
  const file = path.join(tempDir(t, 'reidb-restore-out-'), 'backup.reidbx');
  t.is((await reidb(['export', '--db', dir, '--out', file])).code, 0);

  // The gallery's data is lost; its deployment is kept.
  for (const name of readdirSync(dir)) {
    if (name.startsWith('gallery.sqlite') || name.startsWith('index.'))
      rmSync(path.join(dir, name));
  }
  const restored = await reidb(['import', '--db', dir, '--in', file]);
  t.is(restored.code, 0, restored.stderr);
  t.like(restored.json, { identities: 1, faces: 1 });
  t.like((await reidb(['policy', 'show', '--db', dir])).json, { keepFor: '30d' });
  const last = auditRows(dir).at(-1)!;
  t.like(last, { action: 'policy_change' });
  t.deepEqual((last.details as { changed: string[] }).changed, ['keepForSeconds']);
});

test('reidb access prints the subject access report and audits it; --vectors adds the vectors', async (t) => {
  const dir = tempDir(t, 'reidb-access-');
  await buildGallery(dir, [{ identity: 'Ana', faces: 2 }]);

  const plain = await reidb(['access', '--db', dir, '--identity', 'Ana']);
  t.is(plain.code, 0, plain.stderr);
  t.is(plain.json.identity, 'Ana');
  t.is(plain.json.faces.length, 2);
  t.is(plain.json.faces[0].vectors, undefined);
  const full = await reidb(['access', '--db', dir, '--identity', 'Ana', '--vectors']);
  t.is(full.json.faces[0].vectors.fused.length, 128);

  const missing = await reidb(['access', '--db', dir, '--identity', 'ana']);
  t.is(missing.code, 1);
  t.is(missing.json.error.code, 'identity_not_found');
  const rows = auditRows(dir).filter((row) => row.action === 'export_identity');
  t.deepEqual(
    rows.map((row) => row.details),
    [{ vectors: false }, { vectors: true }, { found: false }],
  );
});

test('keys create refuses a --db folder that does not exist', async (t) => {
  const missing = path.join(tempDir(t, 'reidb-typo-'), 'no-such-gallery');
  const result = await reidb(['keys', 'create', '--db', missing, '--role', 'admin']);
  t.is(result.code, 1);
  t.is(result.json.error.code, 'gallery_not_found');
  t.false(existsSync(missing));
});
