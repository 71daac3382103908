import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { createApp, listen } from '../../src/api/server.ts';
import { createEngine, type Engine } from '../../src/engine/pool.ts';
import { openGallery, type Gallery } from '../../src/gallery/gallery.ts';
import { hasData } from '../helpers/data.ts';
import { lfw, noFacePhoto, sideBySide } from '../helpers/images.ts';

let engine: Engine;
let gallery: Gallery;
let server: Server;
let base: string;
let dir: string;

test.before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-api-'));
  gallery = await openGallery(path.join(dir, 'gallery'));
  engine = await createEngine({ workers: 2 });
  const app = createApp({ engine, gallery, maxUploadBytes: 1024 * 1024 });
  server = await listen(app, 0, '127.0.0.1');
  const address = server.address();
  base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});

test.after.always(async () => {
  server?.close();
  await engine?.close();
  gallery?.close();
  rmSync(dir, { recursive: true, force: true });
});

function post(url: string, body: Buffer | string, type = 'image/jpeg'): Promise<Response> {
  const payload = typeof body === 'string' ? body : new Uint8Array(body);
  return fetch(base + url, { method: 'POST', body: payload, headers: { 'content-type': type } });
}

function blob(buffer: Buffer): Blob {
  return new Blob([new Uint8Array(buffer)]);
}

const PEOPLE = ['Abdullah_Gul', 'Alejandro_Toledo', 'Alvaro_Uribe'];

test.serial('enrol, search, read and erase through HTTP', async (t) => {
  if (!hasData(t)) return;

  for (const person of PEOPLE) {
    for (const n of [1, 2, 3]) {
      const res = await post(`/v1/identities/${person}/faces?camera=cam1`, lfw(person, n));
      t.is(res.status, 201, `${person} ${n}: ${await res.clone().text()}`);
      const body = await res.json();
      t.is(body.enrolled.length, 1);
    }
  }

  for (const person of PEOPLE) {
    const res = await post('/v1/search?k=3', lfw(person, 4));
    t.is(res.status, 200);
    const body = await res.json();
    t.is(body.faces.length, 1);
    t.is(body.faces[0].matches[0].identity, person);
    t.true(body.faces[0].matches[0].score > body.faces[0].matches[1].score);
  }

  const info = await (await fetch(`${base}/v1/identities/${PEOPLE[0]}`)).json();
  t.is(info.identity, PEOPLE[0]);
  t.is(info.faces.length, 3);
  t.is(info.faces[0].camera, 'cam1');
  const text = JSON.stringify(info);
  for (const key of ['appearance', 'geometry', 'fused', 'vector'])
    t.false(text.includes(`"${key}"`));

  const erased = await (
    await fetch(`${base}/v1/identities/${PEOPLE[0]}`, { method: 'DELETE' })
  ).json();
  t.deepEqual(erased, {
    identity: PEOPLE[0],
    facesRemoved: 3,
    identityRef: gallery.deployment.identityRef(PEOPLE[0]),
  });
  const gone = await fetch(`${base}/v1/identities/${PEOPLE[0]}`);
  t.is(gone.status, 404);
  t.is((await gone.json()).error.code, 'identity_not_found');

  const after = await (await post('/v1/search?k=3', lfw(PEOPLE[0], 4))).json();
  t.false(after.faces[0].matches.some((m: { identity: string }) => m.identity === PEOPLE[0]));
});

test.serial('multipart batch of face, no-face and two-face images answers each', async (t) => {
  if (!hasData(t)) return;

  const form = new FormData();
  const two = await sideBySide(lfw(PEOPLE[1], 5), lfw(PEOPLE[2], 5));
  form.append('image', blob(lfw(PEOPLE[1], 4)), 'face.jpg');
  form.append('image', blob(await noFacePhoto()), 'noface.jpg');
  form.append('image', blob(two), 'two.jpg');
  const res = await fetch(`${base}/v1/search?k=2`, { method: 'POST', body: form });
  t.is(res.status, 200);
  const { results } = await res.json();
  t.is(results.length, 3);
  t.is(results[0].faces[0].matches[0].identity, PEOPLE[1]);
  t.is(results[1].faces.length, 0);
  t.regex(results[1].reason, /no face/);
  t.is(results[2].faces.length, 2);
  const top = results[2].faces.map((f: any) => f.matches[0].identity).sort();
  t.deepEqual(top, [PEOPLE[1], PEOPLE[2]].sort());

  const single = await (await post('/v1/search?k=2', lfw(PEOPLE[1], 4))).json();
  t.deepEqual(single.faces, results[0].faces);
});

test.serial('bad uploads get 4xx JSON errors and the server keeps serving', async (t) => {
  // A file part cut off before its closing boundary, and a 2 MiB text field beside an image.
  const truncatedPart =
    '--XB\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n' +
    'Content-Type: image/jpeg\r\n\r\nabc';
  const bigTextField =
    '--XB\r\nContent-Disposition: form-data; name="note"\r\n\r\n' +
    'x'.repeat(2 * 1024 * 1024) +
    '\r\n--XB\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n' +
    'Content-Type: image/jpeg\r\n\r\nabc\r\n--XB--\r\n';
  const cases: [Promise<Response>, number, string][] = [
    [post('/v1/search', Buffer.from('this is not a picture')), 400, 'not_an_image'],
    [post('/v1/search', Buffer.alloc(0)), 400, 'empty_file'],
    [post('/v1/search', Buffer.alloc(2 * 1024 * 1024, 1)), 413, 'payload_too_large'],
    [post('/v1/search', 'hello', 'text/plain'), 415, 'unsupported_media_type'],
    [
      post('/v1/search', '--xx\r\nbroken', 'multipart/form-data; boundary=xx'),
      400,
      'invalid_argument',
    ],
    [post('/v1/search?k=0', Buffer.from('x')), 400, 'invalid_argument'],
    [post('/v1/search?k=abc', Buffer.from('x')), 400, 'invalid_argument'],
    [post(`/v1/identities/${'x'.repeat(200)}/faces`, Buffer.from('x')), 400, 'invalid_identity'],
    [fetch(`${base}/v1/nothing`), 404, 'not_found'],
    [post('/v1/search', 'x', 'application/octet-streamfoo'), 415, 'unsupported_media_type'],
    [
      post('/v1/search', truncatedPart, 'multipart/form-data; boundary=XB'),
      400,
      'invalid_argument',
    ],
    [
      post('/v1/identities/a/faces', truncatedPart, 'multipart/form-data; boundary=XB'),
      400,
      'invalid_argument',
    ],
    [
      post('/v1/search', bigTextField, 'multipart/form-data; boundary=XB'),
      413,
      'payload_too_large',
    ],
    [fetch(`${base}/v1/identities/nobody`, { method: 'DELETE' }), 404, 'identity_not_found'],
  ];
  for (const [pending, status, code] of cases) {
    const res = await pending;
    const body = await res.json();
    t.is(res.status, status, `${code}: ${JSON.stringify(body)}`);
    t.is(body.error.code, code);
    t.is(typeof body.error.message, 'string');
  }

  const health = await fetch(`${base}/healthz`);
  t.is(health.status, 200);
  t.is((await health.json()).status, 'ok');
});

test.serial('enrolling a photo without a face is 422 no_face and stores nothing', async (t) => {
  const before = gallery.stats().faces;
  const res = await post('/v1/identities/someone/faces', await noFacePhoto());
  t.is(res.status, 422);
  const body = await res.json();
  t.is(body.error.code, 'no_face');
  t.regex(body.error.message, /no face/);
  t.is(gallery.stats().faces, before);
});

test.serial('two faces of similar size are refused for enrolment as ambiguous', async (t) => {
  if (!hasData(t)) return;
  const two = await sideBySide(lfw(PEOPLE[1], 6), lfw(PEOPLE[2], 6));
  const res = await post('/v1/identities/pair/faces', two);
  t.is(res.status, 422);
  t.is((await res.json()).error.code, 'ambiguous_face');

  const dominant = await sideBySide(lfw(PEOPLE[1], 6), lfw(PEOPLE[2], 6), 0.5);
  const ok = await post('/v1/identities/dominant/faces', dominant);
  const body = await ok.json();
  t.is(ok.status, 201, JSON.stringify(body));
  t.regex(body.enrolled[0].note, /enrolled the most prominent/);
  t.true(body.enrolled[0].box.x < 250);
});
