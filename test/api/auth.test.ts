/**
 * Authentication, roles and the compliance routes of the HTTP API (docs/COMPLIANCE.md). The
 * main server runs in keys mode: before it starts, the gallery's deployment gets one key per
 * role, one with every role and one revoked. A second gallery starts without keys to show
 * open mode turning into keys mode at the first key. Every server is a real engine, gallery
 * and express app on 127.0.0.1.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import http, { type IncomingHttpHeaders, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';

import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import type { Request, Response } from 'express';

import { requireRole } from '../../src/api/auth.ts';
import { createApp, listen } from '../../src/api/server.ts';
import { createEngine, type Engine } from '../../src/engine/pool.ts';
import type { ReidbError } from '../../src/errors.ts';
import { openGallery, type Gallery } from '../../src/gallery/gallery.ts';
import { DEPLOYMENT_FILE, openDeployment } from '../../src/policy/deployment.ts';
import { ROLES, type AuditRow, type Role } from '../../src/policy/types.ts';
import { hasData } from '../helpers/data.ts';
import { lfw, noFacePhoto } from '../helpers/images.ts';

let engine: Engine;
let gallery: Gallery;
let galleryDir: string;
let server: Server;
let port: number;
let dir: string;
/** A real JPEG without a face: the engine analyses it, no data needed. */
let plainJpeg: Buffer;

/** Bearer keys by role, each holding that role only. */
const keyOf = {} as Record<Role, { id: string; key: string }>;
let allKey: { id: string; key: string };
let revokedKey: string;

test.before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-auth-'));
  galleryDir = path.join(dir, 'main');
  gallery = await openGallery(galleryDir);
  for (const role of ROLES) {
    const created = gallery.deployment.keys.create({ roles: [role], label: `${role} only` });
    keyOf[role] = { id: created.id, key: created.key };
  }
  const all = gallery.deployment.keys.create({ roles: [...ROLES], label: 'everything' });
  allKey = { id: all.id, key: all.key };
  const revoked = gallery.deployment.keys.create({ roles: [...ROLES], label: 'revoked' });
  gallery.deployment.keys.revoke(revoked.id);
  revokedKey = revoked.key;

  engine = await createEngine({ workers: 1 });
  server = await listen(
    createApp({ engine, gallery, maxUploadBytes: 1024 * 1024 }),
    0,
    '127.0.0.1',
  );
  port = portOf(server);
  plainJpeg = await noFacePhoto(160, 120);
});

test.after.always(async () => {
  server?.close();
  await engine?.close();
  gallery?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Helpers

function portOf(s: Server): number {
  const address = s.address();
  return typeof address === 'object' && address ? address.port : 0;
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The parsed body when it is JSON, else undefined. */
  json: any;
}

interface Send {
  /** Sent as `Authorization: Bearer <key>`. */
  key?: string;
  /** Raw headers; an array value is sent as that many header lines. */
  headers?: Record<string, string | string[]>;
  body?: Buffer | string;
  /** Another server than the main one. */
  port?: number;
}

/** One request with node:http, headers exactly as given (fetch merges repeated ones). */
function send(method: string, urlPath: string, options: Send = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | string[]> = { ...options.headers };
    if (options.key !== undefined) headers.authorization = `Bearer ${options.key}`;
    if (options.body !== undefined)
      headers['content-length'] = String(Buffer.byteLength(options.body));
    const req = http.request(
      {
        host: '127.0.0.1',
        port: options.port ?? port,
        path: urlPath,
        method,
        headers,
        agent: false,
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(parts).toString('utf8');
          const json =
            text !== '' && String(res.headers['content-type']).startsWith('application/json')
              ? JSON.parse(text)
              : undefined;
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

const JPEG = { 'content-type': 'image/jpeg' };
const JSON_TYPE = { 'content-type': 'application/json' };

/** A multipart/form-data body with one `image` file part named `filename`. */
function multipart(filename: string, content: Buffer): { body: Buffer; headers: Send['headers'] } {
  const head =
    `--XB\r\nContent-Disposition: form-data; name="image"; filename="${filename}"\r\n` +
    'Content-Type: image/jpeg\r\n\r\n';
  return {
    body: Buffer.concat([Buffer.from(head), content, Buffer.from('\r\n--XB--\r\n')]),
    headers: { 'content-type': 'multipart/form-data; boundary=XB' },
  };
}

/** Asserts status and error code, then that the server still answers /healthz. */
async function refused(t: ExecutionContext, answer: Answer, status: number, code: string) {
  t.is(answer.status, status, answer.text.slice(0, 300));
  t.is(answer.json?.error?.code, code, answer.text.slice(0, 300));
  const health = await send('GET', '/healthz');
  t.is(health.status, 200);
}

function auditRows(): AuditRow[] {
  return gallery.deployment.audit.rows();
}

/** Every array of numbers longer than 3 inside `value`: what a vector would look like. */
function numberArrays(value: unknown, found: unknown[][] = []): unknown[][] {
  if (Array.isArray(value)) {
    if (value.length > 3 && value.every((v) => typeof v === 'number')) found.push(value);
    for (const v of value) numberArrays(v, found);
  } else if (value !== null && typeof value === 'object') {
    for (const v of Object.values(value)) numberArrays(v, found);
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Every route against every kind of credential

interface RouteCase {
  method: string;
  path: string;
  role: Role;
  /** Body and headers of a valid request (sent with refused credentials too). */
  request?: () => Pick<Send, 'body' | 'headers'>;
  /** The status a key with the right role gets. */
  ok: (data: boolean) => number;
}

const TABLE_PERSON = 'Table_Person';

const ROUTES: RouteCase[] = [
  { method: 'GET', path: '/v1/status', role: 'read', ok: () => 200 },
  {
    method: 'POST',
    path: `/v1/identities/${TABLE_PERSON}/faces`,
    role: 'enrol',
    request: () => ({ headers: JPEG, body: DATA ? lfw('Abdullah_Gul', 1) : plainJpeg }),
    ok: (data) => (data ? 201 : 422),
  },
  {
    method: 'POST',
    path: '/v1/search?k=2',
    role: 'search',
    request: () => ({ headers: JPEG, body: DATA ? lfw('Abdullah_Gul', 2) : plainJpeg }),
    ok: () => 200,
  },
  { method: 'GET', path: '/v1/identities?limit=10', role: 'read', ok: () => 200 },
  {
    method: 'GET',
    path: `/v1/identities/${TABLE_PERSON}`,
    role: 'read',
    ok: (data) => (data ? 200 : 404),
  },
  {
    method: 'GET',
    path: `/v1/identities/${TABLE_PERSON}/export`,
    role: 'compliance',
    ok: (data) => (data ? 200 : 404),
  },
  {
    method: 'DELETE',
    path: `/v1/identities/${TABLE_PERSON}`,
    role: 'compliance',
    ok: (data) => (data ? 200 : 404),
  },
  { method: 'POST', path: '/v1/retention/run?dryRun=true', role: 'compliance', ok: () => 200 },
  { method: 'GET', path: '/v1/audit', role: 'compliance', ok: () => 200 },
  { method: 'GET', path: '/v1/audit?format=csv', role: 'compliance', ok: () => 200 },
  { method: 'GET', path: '/v1/audit/verify', role: 'compliance', ok: () => 200 },
  { method: 'GET', path: '/v1/policy', role: 'read', ok: () => 200 },
  {
    method: 'PUT',
    path: '/v1/policy',
    role: 'admin',
    request: () => ({ headers: JSON_TYPE, body: JSON.stringify({ purpose: 'auth tests' }) }),
    ok: () => 200,
  },
  { method: 'GET', path: '/v1/keys', role: 'admin', ok: () => 200 },
  {
    method: 'POST',
    path: '/v1/keys',
    role: 'admin',
    request: () => ({ headers: JSON_TYPE, body: JSON.stringify({ roles: ['search'] }) }),
    ok: () => 201,
  },
  { method: 'DELETE', path: '/v1/keys/k_000000000000', role: 'admin', ok: () => 404 },
];

/** Whether ../shared/data is there; set by the first test. */
let DATA = false;

test.serial(
  'every route: 401 without a valid key, 403 without its role, else served',
  async (t) => {
    DATA = hasData(t);
    const unknownKey = `reidb_k_0123456789ab_${'A'.repeat(43)}`;
    const invalid: [string, Record<string, string | string[]>][] = [
      ['no header', {}],
      ['garbage key', { authorization: 'Bearer garbage' }],
      ['unknown key', { authorization: `Bearer ${unknownKey}` }],
      ['revoked key', { authorization: `Bearer ${revokedKey}` }],
      ['other scheme', { authorization: `Basic ${allKey.key}` }],
      ['scheme only', { authorization: 'Bearer' }],
      ['extra words', { authorization: `Bearer ${allKey.key} ${allKey.key}` }],
      ['two headers', { authorization: [`Bearer ${allKey.key}`, `Bearer ${allKey.key}`] }],
      ['key with a suffix', { authorization: `Bearer ${allKey.key}x` }],
    ];
    const facesBefore = gallery.stats().faces;
    const messages = new Set<string>();

    for (const route of ROUTES) {
      const what = `${route.method} ${route.path}`;
      const request = route.request?.() ?? {};
      const rowsBefore = auditRows().length;
      const facesBefore = gallery.stats().faces;

      for (const [name, headers] of invalid) {
        const answer = await send(route.method, route.path, {
          body: request.body,
          headers: { ...request.headers, ...headers },
        });
        t.is(answer.status, 401, `${what}, ${name}: ${answer.text}`);
        t.is(answer.json?.error?.code, 'unauthorized', `${what}, ${name}`);
        t.is(answer.headers['www-authenticate'], 'Bearer realm="reidb"', `${what}, ${name}`);
        messages.add(answer.json?.error?.message);
      }

      for (const held of ROLES.filter((r) => r !== route.role)) {
        const answer = await send(route.method, route.path, { ...request, key: keyOf[held].key });
        t.is(answer.status, 403, `${what} with a ${held} key: ${answer.text}`);
        t.is(answer.json?.error?.code, 'forbidden');
        t.true(answer.json.error.message.includes(`'${route.role}'`), answer.json.error.message);
        t.false(answer.json.error.message.includes(held), `${what}: names the role held`);
        t.is(answer.headers['www-authenticate'], undefined);
      }

      // Refused requests change nothing and leave no audit row.
      t.is(auditRows().length, rowsBefore, `${what}: refused requests were audited`);
      t.is(gallery.stats().faces, facesBefore, `${what}: a refused request enrolled`);

      const served = await send(route.method, route.path, {
        ...request,
        key: keyOf[route.role].key,
      });
      t.is(served.status, route.ok(DATA), `${what} with its role: ${served.text.slice(0, 300)}`);
      const health = await send('GET', '/healthz');
      t.is(health.status, 200);
    }

    // The 401 never says which of its reasons it was.
    t.is(messages.size, 1, [...messages].join(' | '));

    // HEAD runs the GET route's checks; /healthz alone is open and says nothing more.
    t.is((await send('HEAD', '/v1/identities')).status, 401);
    const health = await send('GET', '/healthz');
    t.deepEqual(health.json, { status: 'ok' });
    const status = await send('GET', '/v1/status', { key: keyOf.read.key });
    t.is(status.json.auth, 'keys');
    t.is(typeof status.json.gallery.faces, 'number');
    t.is((await send('GET', '/v1/nothing')).status, 404);
    t.is((await send('GET', '/v1/status', { key: allKey.key.toLowerCase() })).status, 401);
    t.is(
      (
        await send('GET', '/v1/status', {
          headers: { authorization: `bearer ${keyOf.read.key}` },
        })
      ).status,
      200,
      'the scheme is case-insensitive (RFC 7235)',
    );
  },
);

test.serial(
  'authentication runs before admission control and before the body is read',
  async (t) => {
    const tight = await listen(
      createApp({ engine, gallery, maxInFlight: 1, maxQueued: 0 }),
      0,
      '127.0.0.1',
    );
    t.teardown(() => tight.close());
    const tightPort = portOf(tight);

    // An admitted search that holds the only slot: half its body sent, the rest later.
    let finish!: () => void;
    const holding = new Promise<Answer>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: tightPort,
          path: '/v1/search',
          method: 'POST',
          agent: false,
          headers: {
            ...JPEG,
            authorization: `Bearer ${keyOf.search.key}`,
            'content-length': String(plainJpeg.length),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (s: string) => (text += s));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: undefined }),
          );
        },
      );
      req.on('error', reject);
      req.write(plainJpeg.subarray(0, 100));
      finish = () => req.end(plainJpeg.subarray(100));
    });
    await new Promise((resolve) => setTimeout(resolve, 300));

    const busy = await send('POST', '/v1/search', {
      port: tightPort,
      key: keyOf.search.key,
      headers: JPEG,
      body: plainJpeg,
    });
    t.is(busy.status, 503, busy.text);
    t.is(busy.json.error.code, 'overloaded');

    // Without a key: 401 at once, not 503, though no slot is free.
    const noKey = await send('POST', '/v1/search', {
      port: tightPort,
      headers: JPEG,
      body: plainJpeg,
    });
    t.is(noKey.status, 401, noKey.text);
    const wrongRole = await send('POST', '/v1/search', {
      port: tightPort,
      key: keyOf.read.key,
      headers: JPEG,
      body: plainJpeg,
    });
    t.is(wrongRole.status, 403, wrongRole.text);

    // A 50 MB body announced and never sent is answered without waiting for it.
    const unread = await new Promise<number>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1',
        port: tightPort,
        path: '/v1/identities/flood/faces',
        method: 'POST',
        agent: false,
        headers: { ...JPEG, 'content-length': String(50 * 1024 * 1024) },
      });
      req.on('response', (res) => {
        resolve(res.statusCode ?? 0);
        res.resume();
        req.destroy();
      });
      req.on('error', (e) => (e.message.includes('socket hang up') ? undefined : reject(e)));
      req.flushHeaders();
    });
    t.is(unread, 401);

    finish();
    const held = await holding;
    t.is(held.status, 200, held.text);
  },
);

// ---------------------------------------------------------------------------------------------
// Keys through the API

test.serial(
  'a key created through POST /v1/keys works at once and stops at its DELETE',
  async (t) => {
    const admin = keyOf.admin.key;

    const bad: [unknown, string][] = [
      [{ roles: ['root'] }, 'root'],
      [{ roles: [] }, 'roles'],
      [{ roles: ['read'], colour: 'red' }, 'colour'],
      [{ roles: ['read'], label: 'a\nb' }, 'label'],
      [['read'], 'body'],
    ];
    for (const [body, input] of bad) {
      const answer = await send('POST', '/v1/keys', {
        key: admin,
        headers: JSON_TYPE,
        body: JSON.stringify(body),
      });
      await refused(t, answer, 400, 'invalid_argument');
      t.is(answer.json.error.input, input, JSON.stringify(body));
    }
    await refused(
      t,
      await send('POST', '/v1/keys', {
        key: admin,
        headers: { 'content-type': 'text/plain' },
        body: 'x',
      }),
      415,
      'unsupported_media_type',
    );
    await refused(
      t,
      await send('POST', '/v1/keys', { key: admin, headers: JSON_TYPE, body: '{"roles": [' }),
      400,
      'invalid_argument',
    );
    await refused(
      t,
      await send('POST', '/v1/keys', {
        key: admin,
        headers: JSON_TYPE,
        body: JSON.stringify({ roles: ['read'], label: 'x'.repeat(20_000) }),
      }),
      413,
      'payload_too_large',
    );

    const created = await send('POST', '/v1/keys', {
      key: admin,
      headers: JSON_TYPE,
      body: JSON.stringify({ roles: ['read', 'search'], label: 'made over HTTP' }),
    });
    t.is(created.status, 201, created.text);
    t.is(created.headers['cache-control'], 'no-store');
    t.regex(created.json.key, /^reidb_k_[0-9a-f]{12}_/);
    t.deepEqual(created.json.roles, ['read', 'search']);
    const fresh = created.json as { id: string; key: string };

    t.is((await send('GET', '/v1/identities', { key: fresh.key })).status, 200);
    t.is((await send('GET', '/v1/keys', { key: fresh.key })).status, 403);
    const listed = await send('GET', '/v1/keys', { key: admin });
    const record = listed.json.keys.find((k: { id: string }) => k.id === fresh.id);
    t.like(record, { id: fresh.id, label: 'made over HTTP', revokedAt: null });
    t.false(listed.text.includes(fresh.key.slice(-43)), 'a listing shows no secret');

    const revoked = await send('DELETE', `/v1/keys/${fresh.id}`, { key: admin });
    t.is(revoked.status, 200, revoked.text);
    t.is(revoked.json.id, fresh.id);
    t.is(typeof revoked.json.revokedAt, 'string');
    await refused(t, await send('GET', '/v1/identities', { key: fresh.key }), 401, 'unauthorized');

    const again = await send('DELETE', `/v1/keys/${fresh.id}`, { key: admin });
    t.is(again.json.revokedAt, revoked.json.revokedAt, 'revoking twice keeps the first time');
    const missing = await send('DELETE', '/v1/keys/k_ffffffffffff', { key: admin });
    await refused(t, missing, 404, 'key_not_found');

    // A key may revoke itself; it is refused from its next request on.
    const self = gallery.deployment.keys.create({ roles: ['admin'] });
    t.is((await send('DELETE', `/v1/keys/${self.id}`, { key: self.key })).status, 200);
    await refused(t, await send('GET', '/v1/keys', { key: self.key }), 401, 'unauthorized');

    const rows = auditRows();
    t.true(rows.some((r) => r.action === 'key_create' && r.actor === `key:${keyOf.admin.id}`));
    t.true(rows.some((r) => r.action === 'key_revoke' && r.actor === `key:${keyOf.admin.id}`));
    t.is(rows.filter((r) => r.action === 'key_revoke' && r.details.keyId === fresh.id).length, 1);
    t.true(rows.some((r) => r.action === 'key_revoke' && r.actor === `key:${self.id}`));
  },
);

test.serial('open mode before the first key, keys mode from the next request on', async (t) => {
  const open = await openGallery(path.join(dir, 'open'));
  const app = await listen(createApp({ engine, gallery: open }), 0, '127.0.0.1');
  t.teardown(() => {
    app.close();
    open.close();
  });
  const openPort = portOf(app);

  const status = await send('GET', '/v1/status', { port: openPort });
  t.is(status.status, 200, status.text);
  t.is(status.json.auth, 'open');
  // In open mode a header is not looked at: every request is anonymous.
  t.is((await send('GET', '/v1/identities', { port: openPort, key: 'garbage' })).status, 200);

  const created = await send('POST', '/v1/keys', {
    port: openPort,
    headers: JSON_TYPE,
    body: JSON.stringify({ roles: ['admin'] }),
  });
  t.is(created.status, 201, created.text);
  const admin = created.json as { id: string; key: string };

  const closed = await send('GET', '/v1/status', { port: openPort });
  t.is(closed.status, 401);
  t.is(closed.headers['www-authenticate'], 'Bearer realm="reidb"');
  t.is((await send('GET', '/v1/status', { port: openPort, key: admin.key })).status, 403);
  t.is((await send('GET', '/healthz', { port: openPort })).status, 200);

  // A key made elsewhere (the CLI) counts at the next request too.
  const reader = open.deployment.keys.create({ roles: ['read'] });
  const keyed = await send('GET', '/v1/status', { port: openPort, key: reader.key });
  t.is(keyed.json.auth, 'keys');

  // Revoking the last admin key is allowed; revoking every key opens the server again.
  t.is(
    (await send('DELETE', `/v1/keys/${admin.id}`, { port: openPort, key: admin.key })).status,
    200,
  );
  t.is((await send('GET', '/v1/status', { port: openPort, key: reader.key })).status, 200);
  open.deployment.keys.revoke(reader.id);
  const reopened = await send('GET', '/v1/status', { port: openPort });
  t.is(reopened.status, 200);
  t.is(reopened.json.auth, 'open');

  const rows = open.deployment.audit.rows();
  t.like(
    rows.find((r) => r.action === 'key_create'),
    { actor: 'anonymous' },
  );
  t.like(
    rows.find((r) => r.action === 'key_revoke'),
    { actor: `key:${admin.id}` },
  );
});

// ---------------------------------------------------------------------------------------------
// The compliance routes, on real faces

const HIDDEN = 'Hidden_Label_Q7';
const UPLOAD_NAME = 'upload-name-secret-Z9.jpg';
const PROBE_NAME = 'probe-name-secret-P3.jpg';

test.serial('audit rows name the key and hold no label, file name or vector', async (t) => {
  if (!DATA) return t.pass();

  const enrol = multipart(UPLOAD_NAME, lfw('Alvaro_Uribe', 1));
  const enrolled = await send('POST', `/v1/identities/${HIDDEN}/faces?camera=door`, {
    key: keyOf.enrol.key,
    ...enrol,
  });
  t.is(enrolled.status, 201, enrolled.text);

  const probe = multipart(PROBE_NAME, lfw('Alvaro_Uribe', 2));
  const found = await send('POST', '/v1/search?k=3', { key: keyOf.search.key, ...probe });
  t.is(found.status, 200, found.text);
  t.is(found.json.faces[0].matches[0].identity, HIDDEN);

  t.is((await send('GET', `/v1/identities/${HIDDEN}`, { key: keyOf.read.key })).status, 200);
  const listing = await send('GET', '/v1/identities?limit=5&offset=0', { key: keyOf.read.key });
  t.true(listing.json.identities.some((i: { identity: string }) => i.identity === HIDDEN));
  const exported = await send('GET', `/v1/identities/${HIDDEN}/export?vectors=true`, {
    key: keyOf.compliance.key,
  });
  t.is(exported.status, 200, exported.text);
  const fused: number[] = exported.json.faces[0].vectors.fused;

  const policy = await send('PUT', '/v1/policy', {
    key: keyOf.admin.key,
    headers: JSON_TYPE,
    body: JSON.stringify({ legalBasis: 'consent (Art. 9(2)(a))' }),
  });
  t.is(policy.status, 200, policy.text);
  t.deepEqual(policy.json.changed, ['legalBasis']);

  const made = await send('POST', '/v1/keys', {
    key: keyOf.admin.key,
    headers: JSON_TYPE,
    body: JSON.stringify({ roles: ['search'] }),
  });
  t.is((await send('DELETE', `/v1/keys/${made.json.id}`, { key: keyOf.admin.key })).status, 200);

  const erased = await send('DELETE', `/v1/identities/${HIDDEN}`, { key: keyOf.compliance.key });
  t.is(erased.status, 200, erased.text);
  t.deepEqual(erased.json, {
    identity: HIDDEN,
    facesRemoved: 1,
    identityRef: gallery.deployment.identityRef(HIDDEN),
  });

  const csv = await send('GET', '/v1/audit?format=csv', { key: keyOf.compliance.key });
  t.regex(String(csv.headers['content-type']), /^text\/csv/);
  t.true(csv.text.startsWith('seq,at,actor,action,identity_ref,details,prev_hash,hash'));
  const mine = await send('GET', `/v1/audit?identity=${HIDDEN}`, { key: keyOf.compliance.key });
  t.deepEqual(
    mine.json.rows.map((r: AuditRow) => r.action),
    // The search found the identity, so it is one of its rows too (Art. 15).
    ['enrol', 'search', 'read', 'export_identity', 'erase'],
  );
  const page = await send('GET', '/v1/audit?fromSeq=2&limit=3', { key: keyOf.compliance.key });
  t.deepEqual(
    page.json.rows.map((r: AuditRow) => r.seq),
    [2, 3, 4],
  );
  await refused(
    t,
    await send('GET', '/v1/audit?format=xml', { key: keyOf.compliance.key }),
    400,
    'invalid_argument',
  );

  const ref = gallery.deployment.identityRef(HIDDEN);
  const rows = auditRows();
  const expected: [string, Role, string | null][] = [
    ['enrol', 'enrol', ref],
    ['search', 'search', null],
    ['read', 'read', ref],
    ['list', 'read', null],
    ['export_identity', 'compliance', ref],
    ['policy_change', 'admin', null],
    ['key_create', 'admin', null],
    ['key_revoke', 'admin', null],
    ['erase', 'compliance', ref],
    ['audit_export', 'compliance', ref],
  ];
  for (const [action, role, identityRef] of expected) {
    const row = rows.find(
      (r) =>
        r.action === action &&
        r.actor === `key:${keyOf[role].id}` &&
        (identityRef === null || r.identityRef === identityRef),
    );
    t.truthy(row, `no ${action} row by the ${role} key`);
  }
  const search = [...rows].reverse().find((r) => r.action === 'search')!;
  t.like(search.details, { faces: 1, k: 3, outcome: 'matched' });
  t.true((search.details.matchedRefs as string[]).includes(ref));

  // No row holds a label, an upload's name or anything like a vector.
  const secrets = [HIDDEN, TABLE_PERSON, UPLOAD_NAME, PROBE_NAME, 'Alvaro_Uribe', 'door'];
  const fusedText = fused
    .map(String)
    .filter((v) => v.length > 8)
    .slice(0, 8);
  for (const row of rows) {
    const text = JSON.stringify(row);
    for (const secret of [...secrets, ...fusedText]) {
      t.false(text.includes(secret), `row ${row.seq} holds '${secret}'`);
    }
    t.deepEqual(numberArrays(row), [], `row ${row.seq} holds a vector`);
  }
});

test.serial('a subject access export leaves vectors out unless asked for', async (t) => {
  if (!DATA) return t.pass();
  const person = 'Export_Person';
  const key = keyOf.compliance.key;
  // A purpose (like a keep-for) is a compliance decision: an enrol-only key may not set it.
  const operator = await send('POST', `/v1/identities/${person}/faces?purpose=testing`, {
    key: keyOf.enrol.key,
    headers: JPEG,
    body: lfw('Abdullah_Gul', 3),
  });
  await refused(t, operator, 403, 'forbidden');
  t.regex(operator.json.error.message, /'compliance' role/);
  const enrolled = await send('POST', `/v1/identities/${person}/faces?purpose=testing`, {
    key: allKey.key,
    headers: JPEG,
    body: lfw('Abdullah_Gul', 3),
  });
  t.is(enrolled.status, 201, enrolled.text);

  const plain = await send('GET', `/v1/identities/${person}/export`, { key });
  t.is(plain.status, 200, plain.text);
  t.is(plain.json.identity, person);
  t.is(plain.json.identityRef, gallery.deployment.identityRef(person));
  t.is(plain.json.faces.length, 1);
  t.like(plain.json.processing, { purpose: 'testing', setBy: { purpose: 'identity' } });
  t.is(plain.json.faces[0].vectors, undefined);
  for (const word of ['vectors', 'appearance', 'geometry', 'fused'])
    t.false(plain.text.includes(`"${word}"`), word);
  t.deepEqual(
    (await send('GET', `/v1/identities/${person}/export?vectors=false`, { key })).json.faces,
    plain.json.faces,
  );

  const full = await send('GET', `/v1/identities/${person}/export?vectors=true`, { key });
  const vectors = full.json.faces[0].vectors;
  t.true(vectors.appearance.length > 0);
  t.true(vectors.fused.length > 0);
  t.true(vectors.fused.every((v: unknown) => typeof v === 'number'));

  const bad = await send('GET', `/v1/identities/${person}/export?vectors=yes`, { key });
  await refused(t, bad, 400, 'invalid_argument');
  t.is(bad.json.error.input, 'vectors');
  await refused(
    t,
    await send('GET', '/v1/identities/Nobody_Here/export', { key }),
    404,
    'identity_not_found',
  );

  // Whether vectors went out is recorded; so is a look-up of a label that is not enrolled.
  const rows = gallery.deployment.audit.rows().filter((r) => r.action === 'export_identity');
  const ref = (label: string) => gallery.deployment.identityRef(label);
  t.deepEqual(
    rows.slice(-3).map((r) => [r.identityRef, r.details]),
    [
      [ref(person), { vectors: false }],
      [ref(person), { vectors: true }],
      [ref('Nobody_Here'), { found: false }],
    ],
  );
});

test.serial('POST /v1/retention/run erases exactly what is due', async (t) => {
  if (!DATA) return t.pass();
  const key = keyOf.compliance.key;

  const badKeep = await send('POST', '/v1/identities/Expiring_Person/faces?keepFor=3x', {
    key: keyOf.enrol.key,
    headers: JPEG,
    body: lfw('Alejandro_Toledo', 1),
  });
  await refused(t, badKeep, 400, 'invalid_argument');
  t.is(badKeep.json.error.input, 'keepFor');

  const refusedKeep = await send('POST', '/v1/identities/Expiring_Person/faces?keepFor=1s', {
    key: keyOf.enrol.key,
    headers: JPEG,
    body: lfw('Alejandro_Toledo', 1),
  });
  await refused(t, refusedKeep, 403, 'forbidden');

  const expiring = await send('POST', '/v1/identities/Expiring_Person/faces?keepFor=1s', {
    key: allKey.key,
    headers: JPEG,
    body: lfw('Alejandro_Toledo', 1),
  });
  t.is(expiring.status, 201, expiring.text);
  const kept = await send('POST', '/v1/identities/Kept_Person/faces?keepFor=30d', {
    key: allKey.key,
    headers: JPEG,
    body: lfw('Alejandro_Toledo', 2),
  });
  t.is(kept.status, 201, kept.text);
  await new Promise((resolve) => setTimeout(resolve, 1500));

  const facesBefore = gallery.stats().faces;
  const dry = await send('POST', '/v1/retention/run?dryRun=true', { key });
  t.is(dry.status, 200, dry.text);
  t.like(dry.json, { dryRun: true, facesDue: 1, identitiesDue: 1, facesErased: 0 });
  t.is(gallery.stats().faces, facesBefore);

  const run = await send('POST', '/v1/retention/run', { key });
  t.like(run.json, { dryRun: false, facesDue: 1, facesErased: 1, identitiesErased: 1 });
  t.deepEqual(run.json.erased, [
    { identityRef: gallery.deployment.identityRef('Expiring_Person'), faces: 1, whole: true },
  ]);
  t.is(gallery.stats().faces, facesBefore - 1);
  const gone = await send('GET', '/v1/identities/Expiring_Person', { key: keyOf.read.key });
  await refused(t, gone, 404, 'identity_not_found');
  t.is((await send('GET', '/v1/identities/Kept_Person', { key: keyOf.read.key })).status, 200);

  const second = await send('POST', '/v1/retention/run', { key });
  t.like(second.json, { facesDue: 0, facesErased: 0 });
  t.truthy(
    auditRows().find(
      (r) => r.action === 'retention_erase' && r.actor === `key:${keyOf.compliance.id}`,
    ),
  );

  const badDry = await send('POST', '/v1/retention/run?dryRun=1', { key });
  await refused(t, badDry, 400, 'invalid_argument');
});

test.serial('PUT /v1/policy checks its body and records what changed', async (t) => {
  const key = keyOf.admin.key;
  const put = (body: string, headers: Record<string, string> = JSON_TYPE) =>
    send('PUT', '/v1/policy', { key, headers, body });

  const cases: [string, string][] = [
    [JSON.stringify({ keepFor: '30 days' }), 'keepFor'],
    [JSON.stringify({ keepFor: 30 }), 'keepFor'],
    [JSON.stringify({ thumbnails: 'sometimes' }), 'thumbnails'],
    [JSON.stringify({ purpose: '' }), 'purpose'],
    [JSON.stringify({ legalBasis: 'a\u0007b' }), 'legalBasis'],
    [JSON.stringify({ keepForSeconds: 5 }), 'keepForSeconds'],
    [JSON.stringify({}), 'body'],
    ['[]', 'body'],
  ];
  for (const [body, input] of cases) {
    const answer = await put(body);
    await refused(t, answer, 400, 'invalid_argument');
    t.is(answer.json.error.input, input, body);
  }
  await refused(
    t,
    await put('keepFor=30d', { 'content-type': 'text/plain' }),
    415,
    'unsupported_media_type',
  );
  await refused(t, await put('{"keepFor":', JSON_TYPE), 400, 'invalid_argument');
  await refused(
    t,
    await put('{}', { ...JSON_TYPE, 'content-encoding': 'gzip' }),
    415,
    'unsupported_media_type',
  );

  const set = await put(JSON.stringify({ keepFor: '52w', thumbnails: 'off' }));
  t.is(set.status, 200, set.text);
  t.like(set.json, { keepFor: '52w', keepForSeconds: 52 * 7 * 86400, changed: ['keepForSeconds'] });
  const read = await send('GET', '/v1/policy', { key: keyOf.read.key });
  t.like(read.json, { keepFor: '52w', thumbnails: 'off' });
  const cleared = await put(JSON.stringify({ keepFor: null }));
  t.like(cleared.json, { keepFor: null, keepForSeconds: null, changed: ['keepForSeconds'] });

  const row = auditRows()
    .reverse()
    .find((r) => r.action === 'policy_change')!;
  t.deepEqual(row.details, { changed: ['keepForSeconds'], keepForSeconds: null });
  t.is(row.actor, `key:${keyOf.admin.id}`);
});

// Last: the trail is broken on purpose.
test.serial('GET /v1/audit/verify finds a row edited in deployment.sqlite', async (t) => {
  const key = keyOf.compliance.key;
  const before = await send('GET', '/v1/audit/verify', { key });
  t.is(before.status, 200);
  t.true(before.json.ok, before.text);
  t.true(before.json.rows >= 2);

  const db = new Database(path.join(galleryDir, DEPLOYMENT_FILE));
  try {
    db.exec('DROP TRIGGER audit_log_no_update');
    db.prepare("UPDATE audit_log SET actor = 'key:k_000000000000' WHERE seq = 2").run();
  } finally {
    db.close();
  }

  const after = await send('GET', '/v1/audit/verify', { key });
  t.is(after.status, 200, after.text);
  t.false(after.json.ok);
  t.is(after.json.firstBad.seq, 2);
  t.is(typeof after.json.firstBad.reason, 'string');

  // The server keeps serving, and still answers the trail to whoever must look into it.
  t.is((await send('GET', '/v1/audit', { key })).status, 200);
  t.is((await send('GET', '/healthz')).status, 200);
});

test('open mode answers only requests that arrived on a loopback address', (t) => {
  const deployment = openDeployment(path.join(dir, 'loopback-only'));
  t.teardown(() => deployment.close());
  const middleware = requireRole(deployment, 'read');

  /** Runs the middleware on a request reaching the server at `localAddress`. */
  const run = (localAddress: string, headers: Record<string, string> = {}) => {
    const req = { socket: { localAddress }, rawHeaders: [], headers } as unknown as Request;
    const res = { locals: {} } as unknown as Response;
    let passed: unknown = 'not called';
    middleware(req, res, (error?: unknown) => (passed = error));
    return { error: passed as ReidbError | undefined, actor: res.locals.actor };
  };

  for (const address of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) {
    t.deepEqual(run(address), { error: undefined, actor: 'anonymous' }, address);
  }
  for (const address of ['10.0.0.5', '192.168.1.20', '::ffff:10.0.0.5', 'fe80::1', '::']) {
    const { error, actor } = run(address);
    t.is(error?.code, 'auth_required', address);
    t.is(actor, undefined);
  }

  // A proxy on the same host reaches loopback too; what it forwards is not local.
  for (const header of ['forwarded', 'x-forwarded-for', 'x-real-ip']) {
    t.is(run('127.0.0.1', { [header]: '203.0.113.9' }).error?.code, 'auth_required', header);
  }

  // A page of another site: DNS rebinding sends its own host name, a form post its origin.
  const local = { host: '127.0.0.1:8080' };
  t.deepEqual(run('127.0.0.1', local), { error: undefined, actor: 'anonymous' });
  t.deepEqual(run('127.0.0.1', { host: 'localhost:8080', origin: 'http://localhost:3000' }), {
    error: undefined,
    actor: 'anonymous',
  });
  for (const headers of [
    { host: 'rebind.evil.example:8080' },
    { ...local, origin: 'http://evil.example' },
    { ...local, origin: 'null' },
    { ...local, 'sec-fetch-site': 'cross-site' },
  ]) {
    t.is(run('127.0.0.1', headers).error?.code, 'auth_required', JSON.stringify(headers));
  }

  // With a key the address does not matter: the key does.
  const key = deployment.keys.create({ roles: ['read'] });
  const req = {
    socket: { localAddress: '10.0.0.5' },
    rawHeaders: ['Authorization', `Bearer ${key.key}`],
  } as unknown as Request;
  const res = { locals: {} } as unknown as Response;
  let error: unknown = 'not called';
  middleware(req, res, (e?: unknown) => (error = e));
  t.is(error, undefined);
  t.is(res.locals.actor, `key:${key.id}`);
});
