import { createHash } from 'node:crypto';

import test from 'ava';

import { ReidbError } from '../../src/errors.ts';
import { openDeployment } from '../../src/policy/deployment.ts';
import { parseRoles } from '../../src/policy/keys.ts';
import {
  deploymentBytes,
  manualClock,
  rawConnection,
  tempDeployment,
  thrownMessage,
} from './fixtures.ts';

const KEY_SHAPE = /^reidb_(k_[0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

function invalidArgument(t: import('ava').ExecutionContext, run: () => unknown, input: string) {
  const error = t.throws(run, { instanceOf: ReidbError });
  t.is(error?.code, 'invalid_argument');
  t.is(error?.input, input);
  return error;
}

test('a created key authenticates with its roles and label, and lists without its secret', (t) => {
  const { deployment } = tempDeployment(t);

  const created = deployment.keys.create({ roles: ['search', 'read'], label: 'front desk' });
  const match = KEY_SHAPE.exec(created.key);
  t.truthy(match, created.key);
  t.is(match![1], created.id);
  t.deepEqual(created.roles, ['search', 'read']);
  t.is(created.label, 'front desk');
  t.is(created.revokedAt, null);

  const record = deployment.keys.authenticate(created.key);
  t.is(record?.id, created.id);
  t.deepEqual(record?.roles, ['search', 'read']);
  t.is(record?.label, 'front desk');
  t.truthy(record?.lastUsedAt);

  const listed = deployment.keys.list();
  t.is(listed.length, 1);
  t.is(listed[0]!.id, created.id);
  t.false('key' in listed[0]!);
  t.false(JSON.stringify(listed).includes(match![2]!));
  t.true(deployment.keys.hasActive());
});

test('list keeps creation order and an empty label is stored as none', (t) => {
  const { deployment } = tempDeployment(t);

  const ids = ['a', 'b', 'c', 'd'].map(
    (label) => deployment.keys.create({ roles: ['read'], label }).id,
  );
  const none = deployment.keys.create({ roles: ['admin'], label: '' });

  t.deepEqual(
    deployment.keys.list().map((key) => key.id),
    [...ids, none.id],
  );
  t.is(deployment.keys.list()[4]!.label, null);
});

test('a wrong secret, an unknown id and malformed tokens authenticate nothing', (t) => {
  const { deployment } = tempDeployment(t);
  const created = deployment.keys.create({ roles: ['enrol'] });
  const [, id, secret] = KEY_SHAPE.exec(created.key)!;

  const flipped = (secret![0] === 'A' ? 'B' : 'A') + secret!.slice(1);
  t.is(deployment.keys.authenticate(`reidb_${id}_${flipped}`), null, 'wrong secret');
  t.is(deployment.keys.authenticate(`reidb_k_000000000000_${secret}`), null, 'unknown id');

  // The last of 43 base64url characters carries 4 bits and 2 zero bits: setting the lowest
  // gives another spelling of the same 32 bytes, which must not be accepted.
  const otherSpelling = secret!.slice(0, 42) + String.fromCharCode(secret!.charCodeAt(42) + 1);
  t.true(Buffer.from(otherSpelling, 'base64url').equals(Buffer.from(secret!, 'base64url')));
  t.is(deployment.keys.authenticate(`reidb_${id}_${otherSpelling}`), null, 'non-canonical');

  const malformed = [
    '',
    'reidb_',
    created.key + 'x',
    created.key.slice(0, -1),
    ' ' + created.key,
    created.key + '\n',
    'Bearer ' + created.key,
    created.key.replace('reidb_', 'REIDB_'),
    created.key.replace(id!, id!.toUpperCase()),
    `reidb_${id}_${secret!.slice(0, 42)}=`,
    `reidb_${id}${secret}`,
  ];
  for (const token of malformed) {
    t.is(deployment.keys.authenticate(token), null, JSON.stringify(token));
  }
  t.is(deployment.keys.authenticate(undefined as unknown as string), null);

  t.is(deployment.keys.authenticate(created.key)?.id, created.id, 'the right key still works');
});

test('a revoked key authenticates nothing, and revoking twice keeps the first time', (t) => {
  const clock = manualClock();
  const { deployment } = tempDeployment(t, { now: clock.now });
  const created = deployment.keys.create({ roles: ['compliance'] });
  const other = deployment.keys.create({ roles: ['read'] });

  clock.advance(1000);
  const revoked = deployment.keys.revoke(created.id);
  t.is(revoked.revokedAt, '2025-01-01T00:00:01.000Z');
  t.is(deployment.keys.authenticate(created.key), null);
  t.true(deployment.keys.hasActive(), 'the other key is still active');

  clock.advance(5000);
  t.is(deployment.keys.revoke(created.id).revokedAt, '2025-01-01T00:00:01.000Z');

  deployment.keys.revoke(other.id);
  t.false(deployment.keys.hasActive());
  t.is(deployment.keys.list().filter((key) => key.revokedAt !== null).length, 2);
});

test('a revoked key cannot be reinstated even by a raw connection', (t) => {
  const { dir, deployment } = tempDeployment(t);
  const created = deployment.keys.create({ roles: ['admin'] });
  deployment.keys.revoke(created.id);

  const raw = rawConnection(t, dir);
  const message = thrownMessage(t, () =>
    raw.prepare('UPDATE api_keys SET revoked_at = NULL WHERE id = ?').run(created.id),
  );
  t.regex(message, /cannot be reinstated/);
  t.is(deployment.keys.authenticate(created.key), null);
});

test('revoking an unknown key is key_not_found naming it', (t) => {
  const { deployment } = tempDeployment(t);

  const error = t.throws(() => deployment.keys.revoke('k_0123456789ab'), {
    instanceOf: ReidbError,
  });
  t.is(error?.code, 'key_not_found');
  t.is(error?.input, 'k_0123456789ab');
  t.regex(error!.message, /k_0123456789ab/);
});

test('create refuses no role, an unknown role, a duplicate role and a bad label', (t) => {
  const { deployment } = tempDeployment(t);

  invalidArgument(t, () => deployment.keys.create({ roles: [] }), 'roles');
  const unknown = invalidArgument(
    t,
    () => deployment.keys.create({ roles: ['read', 'superuser' as 'read'] }),
    'superuser',
  );
  t.regex(unknown!.message, /superuser.*enrol, search, read, compliance, admin/);
  invalidArgument(t, () => deployment.keys.create({ roles: ['read', 'search', 'read'] }), 'read');
  invalidArgument(
    t,
    () => deployment.keys.create({ roles: ['read'], label: 'x'.repeat(201) }),
    'label',
  );
  invalidArgument(t, () => deployment.keys.create({ roles: ['read'], label: 'a\nb' }), 'label');
  invalidArgument(t, () => deployment.keys.create({ roles: ['read'], label: 'a\u0000' }), 'label');
  invalidArgument(
    t,
    () => deployment.keys.create({ roles: ['read'], label: 'bad \ud800' }),
    'label',
  );

  t.is(deployment.keys.list().length, 0, 'nothing was stored');
  const longest = 'é'.repeat(200);
  t.is(deployment.keys.create({ roles: ['read'], label: longest }).label, longest);
});

test('parseRoles reads a comma list and names a bad word', (t) => {
  t.deepEqual(parseRoles('enrol,search'), ['enrol', 'search']);
  t.deepEqual(parseRoles(' read , compliance,admin '), ['read', 'compliance', 'admin']);

  const bad = invalidArgument(t, () => parseRoles('enrol,serch'), 'serch');
  t.regex(bad!.message, /'serch'.*valid roles: enrol, search, read, compliance, admin/);
  invalidArgument(t, () => parseRoles('enrol,,search'), '');
  invalidArgument(t, () => parseRoles('search,search'), 'search');
  invalidArgument(t, () => parseRoles(''), 'roles');
  invalidArgument(t, () => parseRoles('Enrol'), 'Enrol');
});

test('the key is shown once: its secret is nowhere in the database files', (t) => {
  const { dir, deployment } = tempDeployment(t);

  const created = deployment.keys.create({ roles: ['admin'] });
  const secretText = KEY_SHAPE.exec(created.key)![2]!;
  const secret = Buffer.from(secretText, 'base64url');
  deployment.close();

  const bytes = deploymentBytes(dir);
  // The scan can find what is there: the id and the secret's hash are stored.
  t.true(bytes.includes(Buffer.from(created.id)));
  t.true(bytes.includes(createHash('sha256').update(secret).digest()));
  t.false(bytes.includes(Buffer.from(secretText)));
  t.false(bytes.includes(secret));
  t.false(bytes.includes(Buffer.from(created.key)));

  const reopened = openDeployment(dir);
  t.teardown(() => reopened.close());
  t.is(reopened.keys.authenticate(created.key)?.id, created.id, 'it still works after reopening');
});

test('last use is written at most once a minute per key', (t) => {
  const clock = manualClock();
  const { deployment } = tempDeployment(t, { now: clock.now });
  const created = deployment.keys.create({ roles: ['search'] });
  const lastUsed = () => deployment.keys.list()[0]!.lastUsedAt;

  t.is(lastUsed(), null);
  deployment.keys.authenticate(created.key);
  t.is(lastUsed(), '2025-01-01T00:00:00.000Z');

  clock.advance(59_000);
  deployment.keys.authenticate(created.key);
  t.is(lastUsed(), '2025-01-01T00:00:00.000Z');

  clock.advance(1_000);
  deployment.keys.authenticate(created.key);
  t.is(lastUsed(), '2025-01-01T00:01:00.000Z');
});

test('a key created or revoked by another process takes effect at the next request', (t) => {
  const { dir, deployment: server } = tempDeployment(t);
  const cli = openDeployment(dir);
  t.teardown(() => cli.close());

  t.false(server.keys.hasActive());
  const created = cli.keys.create({ roles: ['read'] });
  t.true(server.keys.hasActive());
  t.is(server.keys.authenticate(created.key)?.id, created.id);

  cli.keys.revoke(created.id);
  t.is(server.keys.authenticate(created.key), null);
});
