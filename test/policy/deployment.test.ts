import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { ReidbError } from '../../src/errors.ts';
import type { Logger } from '../../src/log.ts';
import {
  DEPLOYMENT_FILE,
  DEPLOYMENT_MIGRATIONS_DIR,
  openDeployment,
} from '../../src/policy/deployment.ts';
import { rawConnection, tempDir } from './fixtures.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function recordingLogger(): { logger: Logger; messages: string[] } {
  const messages: string[] = [];
  const log = (message: string) => void messages.push(message);
  return { logger: { debug: log, info: log, warn: log, error: log }, messages };
}

test('the first open creates the directory and a private file; later opens keep the id', (t) => {
  const dir = path.join(tempDir(t), 'a', 'gallery');
  const { logger, messages } = recordingLogger();

  const first = openDeployment(dir, { logger });
  t.is(first.file, path.join(dir, DEPLOYMENT_FILE));
  t.regex(first.id, UUID);
  t.true(messages.includes('deployment created'));
  t.is(statSync(first.file).mode & 0o777, 0o600);
  const ref = first.identityRef('alice');
  first.close();
  first.close();

  const { logger: quiet, messages: none } = recordingLogger();
  const again = openDeployment(dir, { logger: quiet, mustExist: true });
  t.teardown(() => again.close());
  t.is(again.id, first.id);
  t.is(again.identityRef('alice'), ref, 'references survive reopening');
  t.false(none.includes('deployment created'));
});

test('identity references are keyed by the deployment secret', (t) => {
  const one = openDeployment(tempDir(t));
  const two = openDeployment(tempDir(t));
  t.teardown(() => {
    one.close();
    two.close();
  });

  const ref = one.identityRef('alice');
  t.regex(ref, /^ref_[0-9a-f]{24}$/);
  t.not(one.identityRef('alice '), ref);
  t.not(one.identityRef('bob'), ref);
  t.not(two.identityRef('alice'), ref, 'another deployment gives another reference');
  t.is(one.identityRef('Zoë'), one.identityRef('Zoë'));
  t.is(t.throws(() => one.identityRef(''), { instanceOf: ReidbError })?.code, 'invalid_argument');
});

test('the pragmas are set and the schema is STRICT with the documented tables', (t) => {
  const dir = tempDir(t);
  openDeployment(dir).close();

  const raw = rawConnection(t, dir);
  t.is(raw.pragma('journal_mode', { simple: true }), 'wal');
  const tables = raw
    .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'table' ORDER BY name")
    .all() as { name: string; sql: string }[];
  t.deepEqual(
    tables.map((table) => table.name),
    [
      'api_keys',
      'audit_log',
      'deployment_info',
      'erasure_ledger',
      'export_keys',
      'schema_migrations',
    ],
  );
  for (const table of tables) t.regex(table.sql, /\)\s*STRICT$/, table.name);
  const info = raw.prepare('SELECT deployment_id, pseudonym_secret FROM deployment_info').all() as {
    pseudonym_secret: Buffer;
  }[];
  t.is(info.length, 1);
  t.is(info[0]!.pseudonym_secret.length, 32);
  t.true(readdirSync(DEPLOYMENT_MIGRATIONS_DIR).includes('001_deployment.sql'));
});

test('mustExist refuses a directory without a deployment, creating nothing', (t) => {
  const root = tempDir(t);
  const missing = path.join(root, 'nowhere');

  for (const dir of [missing, root]) {
    const error = t.throws(() => openDeployment(dir, { mustExist: true }), {
      instanceOf: ReidbError,
    });
    t.is(error?.code, 'gallery_not_found');
    t.is(error?.input, dir);
    t.regex(error!.message, new RegExp(dir.replaceAll('/', '\\/')));
  }
  t.false(existsSync(missing));
  t.false(existsSync(path.join(root, DEPLOYMENT_FILE)));
});

test('a damaged file is gallery_corrupt naming it', (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, DEPLOYMENT_FILE);
  writeFileSync(file, Buffer.alloc(4096, 0x41));

  const error = t.throws(() => openDeployment(dir), { instanceOf: ReidbError });
  t.is(error?.code, 'gallery_corrupt');
  t.is(error?.input, file);
});

test('checkpointTruncate empties the WAL, and fails while another connection reads', (t) => {
  const dir = tempDir(t);
  const deployment = openDeployment(dir);
  t.teardown(() => deployment.close());
  deployment.audit.append({ actor: 'cli:root', action: 'read' });
  const wal = path.join(dir, DEPLOYMENT_FILE + '-wal');
  t.true(statSync(wal).size > 0);

  deployment.checkpointTruncate();
  t.is(statSync(wal).size, 0);

  deployment.audit.append({ actor: 'cli:root', action: 'read' });
  const reader = rawConnection(t, dir);
  reader.pragma('busy_timeout = 0');
  const read = reader.prepare('SELECT seq FROM audit_log').iterate();
  read.next();
  const busy = openDeployment(dir, { busyTimeoutMs: 0 });
  t.teardown(() => busy.close());
  busy.audit.append({ actor: 'cli:root', action: 'read' });
  const error = t.throws(() => busy.checkpointTruncate(), { instanceOf: ReidbError });
  t.is(error?.code, 'gallery_corrupt');
  t.is(error?.input, busy.file);
  read.return!();
});
