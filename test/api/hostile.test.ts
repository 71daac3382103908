/**
 * Hostile input on the HTTP API: oversized and malformed bodies, wrong content types, path
 * traversal, very long and unicode identities, decompression bombs and a flood of requests.
 * Each must get a clear 4xx JSON error (503 overloaded with Retry-After for the flood), the
 * server must keep answering /healthz, and memory must stay bounded. The server runs in this
 * process (engine workers are threads of it), so process.memoryUsage().rss covers it.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import http, { type IncomingHttpHeaders, type Server } from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';

import test, { type ExecutionContext } from 'ava';
import sharp from 'sharp';

import { createApp, listen } from '../../src/api/server.ts';
import { createEngine, type Engine } from '../../src/engine/pool.ts';
import { openGallery, type Gallery } from '../../src/gallery/gallery.ts';
import { DATA_DIR, hasData } from '../helpers/data.ts';
import { lfw, noFacePhoto } from '../helpers/images.ts';

/** Upload limit of the server under test, in bytes. */
const MAX_UPLOAD = 1024 * 1024;
const MAX_IN_FLIGHT = 2;
const MAX_QUEUED = 8;

/** Most RSS growth, in bytes, that one hostile image may cause while it is refused. */
const BOMB_RSS_BOUND = 300 * 1024 * 1024;

let engine: Engine;
let gallery: Gallery;
let server: Server;
let port: number;
let base: string;
/** The test's own temp folder; the gallery sits two levels down so `../..` stays inside. */
let dir: string;
let galleryDir: string;
/** A real JPEG without a face (no data needed): the engine decodes and searches it. */
let plainJpeg: Buffer;

test.before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-hostile-'));
  galleryDir = path.join(dir, 'deep', 'er', 'gallery');
  mkdirSync(path.dirname(galleryDir), { recursive: true });
  gallery = await openGallery(galleryDir);
  engine = await createEngine({ workers: 2 });
  const app = createApp({
    engine,
    gallery,
    maxUploadBytes: MAX_UPLOAD,
    maxImagesPerRequest: 16,
    maxInFlight: MAX_IN_FLIGHT,
    maxQueued: MAX_QUEUED,
    // One client sends everything here; the per-client limit has its own test
    // (test/api/rate-limit.test.ts), this file tests what the server does past it.
    rateLimit: false,
  });
  server = await listen(app, 0, '127.0.0.1');
  const address = server.address();
  port = typeof address === 'object' && address ? address.port : 0;
  base = `http://127.0.0.1:${port}`;
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

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The parsed body when it is JSON, else undefined. */
  json: any;
}

interface SendOptions {
  method?: string;
  headers?: Record<string, string>;
  /** The body in one piece (with a content-length) ... */
  body?: Buffer | string;
  /** ... or in pieces, sent chunked with no content-length. */
  chunks?: Buffer[];
}

/**
 * One request with node:http, the path sent exactly as given (fetch would resolve `%2e%2e`
 * as `..` before sending). Resolves with the answer; an error after the answer is ignored
 * (the server may close while the client is still sending an oversized body).
 */
function send(urlPath: string, options: SendOptions = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...options.headers };
    if (options.body !== undefined)
      headers['content-length'] = String(Buffer.byteLength(options.body));
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: urlPath,
        method: options.method ?? 'POST',
        headers,
        agent: false,
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(parts).toString('utf8');
          let json: any;
          if (String(res.headers['content-type']).startsWith('application/json')) {
            json = JSON.parse(text);
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', reject);
    if (options.chunks) {
      for (const chunk of options.chunks) req.write(chunk);
      req.end();
    } else {
      req.end(options.body);
    }
  });
}

/** Asserts the exact status and error code of a JSON error answer, then that /healthz is 200. */
async function refused(t: ExecutionContext, answer: Answer, status: number, code: string) {
  t.is(answer.status, status, answer.text.slice(0, 300));
  t.is(answer.json?.error?.code, code, answer.text.slice(0, 300));
  t.is(typeof answer.json?.error?.message, 'string');
  await healthy(t);
}

async function healthy(t: ExecutionContext): Promise<void> {
  const res = await fetch(`${base}/healthz`);
  t.is(res.status, 200);
  t.is((await res.json()).status, 'ok');
}

/** A multipart/form-data body with boundary XB from raw parts (headers + content each). */
function multipart(parts: { headers: string[]; content: string | Buffer }[], close = true) {
  const pieces: Buffer[] = [];
  for (const part of parts) {
    pieces.push(Buffer.from(`--XB\r\n${part.headers.join('\r\n')}\r\n\r\n`));
    pieces.push(Buffer.from(part.content));
    pieces.push(Buffer.from('\r\n'));
  }
  if (close) pieces.push(Buffer.from('--XB--\r\n'));
  return Buffer.concat(pieces);
}

const MULTIPART = { 'content-type': 'multipart/form-data; boundary=XB' };

function imagePart(content: string | Buffer, name = 'image', filename = 'a.jpg') {
  return {
    headers: [
      `Content-Disposition: form-data; name="${name}"; filename="${filename}"`,
      'Content-Type: image/jpeg',
    ],
    content,
  };
}

/** Runs `action` sampling the RSS every 5 ms; resolves with its result and the peak growth. */
async function rssGrowth<T>(action: () => Promise<T>): Promise<{ result: T; growth: number }> {
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 5);
  try {
    const result = await action();
    peak = Math.max(peak, process.memoryUsage().rss);
    return { result, growth: peak - before };
  } finally {
    clearInterval(timer);
  }
}

/** Every file and folder under `root`, as paths relative to it. */
function listTree(root: string): string[] {
  const out: string[] = [];
  const walk = (folder: string) => {
    for (const name of readdirSync(folder)) {
      const full = path.join(folder, name);
      out.push(path.relative(root, full));
      if (statSync(full).isDirectory()) walk(full);
    }
  };
  walk(root);
  return out.sort();
}

// ---------------------------------------------------------------------------------------------
// Oversized bodies

test.serial('a body larger than maxUploadBytes is 413 payload_too_large', async (t) => {
  const big = Buffer.alloc(MAX_UPLOAD + 1, 0xff);
  await refused(
    t,
    await send('/v1/search', { headers: { 'content-type': 'image/jpeg' }, body: big }),
    413,
    'payload_too_large',
  );
  const enrol = await send('/v1/identities/ana/faces', {
    headers: { 'content-type': 'image/jpeg' },
    body: big,
  });
  await refused(t, enrol, 413, 'payload_too_large');
  t.deepEqual(enrol.json.error.details, { maxBytes: MAX_UPLOAD });

  const form = multipart([imagePart(big)]);
  await refused(
    t,
    await send('/v1/search', { headers: MULTIPART, body: form }),
    413,
    'payload_too_large',
  );
});

test.serial('a chunked body with no content-length is cut off at the limit', async (t) => {
  // 24 x 64 KiB = 1.5 MiB, sent with Transfer-Encoding: chunked so no size is declared.
  const chunks = Array.from({ length: 24 }, () => Buffer.alloc(64 * 1024, 0xff));
  const raw = await send('/v1/search', { headers: { 'content-type': 'image/jpeg' }, chunks });
  await refused(t, raw, 413, 'payload_too_large');

  const form = multipart([imagePart(Buffer.concat(chunks))]);
  const parts = Array.from({ length: Math.ceil(form.length / 65536) }, (_, i) =>
    form.subarray(i * 65536, (i + 1) * 65536),
  );
  await refused(
    t,
    await send('/v1/search', { headers: MULTIPART, chunks: parts }),
    413,
    'payload_too_large',
  );
});

// ---------------------------------------------------------------------------------------------
// Malformed multipart

test.serial('multipart without a boundary is 400 invalid_argument', async (t) => {
  const body = multipart([imagePart(plainJpeg)]);
  const answer = await send('/v1/search', {
    headers: { 'content-type': 'multipart/form-data' },
    body,
  });
  await refused(t, answer, 400, 'invalid_argument');
  t.regex(answer.json.error.message, /malformed multipart request: .*boundary/i);
});

test.serial('multipart with the wrong boundary is 400 invalid_argument', async (t) => {
  const body = multipart([imagePart(plainJpeg)]);
  const answer = await send('/v1/search', {
    headers: { 'content-type': 'multipart/form-data; boundary=NOTTHIS' },
    body,
  });
  await refused(t, answer, 400, 'invalid_argument');
  t.regex(answer.json.error.message, /multipart/);
});

test.serial('multipart truncated mid-part is 400 invalid_argument', async (t) => {
  const whole = multipart([imagePart(plainJpeg)]);
  const body = whole.subarray(0, Math.floor(whole.length / 2));
  for (const route of ['/v1/search', '/v1/identities/ana/faces']) {
    const answer = await send(route, { headers: MULTIPART, body });
    await refused(t, answer, 400, 'invalid_argument');
    t.regex(answer.json.error.message, /malformed multipart request: Unexpected end/);
  }
});

test.serial('a part named image without a filename is 400 invalid_argument', async (t) => {
  const body = multipart([
    {
      headers: ['Content-Disposition: form-data; name="image"', 'Content-Type: image/jpeg'],
      content: 'abc',
    },
  ]);
  const answer = await send('/v1/search', { headers: MULTIPART, body });
  await refused(t, answer, 400, 'invalid_argument');
  t.regex(answer.json.error.message, /"image" has no filename/);
});

test.serial('1000 tiny file parts, more than maxImagesPerRequest, are 400', async (t) => {
  const body = multipart(
    Array.from({ length: 1000 }, (_, i) => imagePart('x', 'image', `${i}.jpg`)),
  );
  const answer = await send('/v1/search', { headers: MULTIPART, body });
  await refused(t, answer, 400, 'invalid_argument');
  t.regex(answer.json.error.message, /more than 16 file parts/);

  const fields = multipart(
    Array.from({ length: 1000 }, (_, i) => ({
      headers: [`Content-Disposition: form-data; name="f${i}"`],
      content: 'x',
    })),
  );
  const many = await send('/v1/search', { headers: MULTIPART, body: fields });
  await refused(t, many, 400, 'invalid_argument');
  t.regex(many.json.error.message, /more than 64 form fields/);

  // Parts without a Content-Disposition are skipped by the parser but still counted.
  const anonymous = multipart(
    Array.from({ length: 1000 }, () => ({ headers: ['X-A: b'], content: 'x' })),
  );
  const skipped = await send('/v1/search', { headers: MULTIPART, body: anonymous });
  await refused(t, skipped, 400, 'invalid_argument');
  t.regex(skipped.json.error.message, /more than 80 parts/);
});

test.serial('a part with too many headers is 400 invalid_argument', async (t) => {
  // 5000 header lines, about 60 KB: more than the parser's 16 KiB for one part's headers.
  const headers = [
    'Content-Disposition: form-data; name="image"; filename="a.jpg"',
    ...Array.from({ length: 5000 }, (_, i) => `X-Filler-${i}: y`),
  ];
  const answer = await send('/v1/search', {
    headers: MULTIPART,
    body: multipart([{ headers, content: plainJpeg }]),
  });
  await refused(t, answer, 400, 'invalid_argument');
  t.regex(answer.json.error.message, /Malformed part header/);
});

test.serial('a huge text field is 413 payload_too_large naming the field', async (t) => {
  // 512 KiB: under the upload limit, over the 64 KiB a text field may hold.
  const body = multipart([
    { headers: ['Content-Disposition: form-data; name="note"'], content: 'x'.repeat(512 * 1024) },
    imagePart(plainJpeg),
  ]);
  const answer = await send('/v1/search', { headers: MULTIPART, body });
  await refused(t, answer, 413, 'payload_too_large');
  t.is(answer.json.error.input, 'note');
});

test.serial('clients that hang up mid-upload do not keep their admission slots', async (t) => {
  // More aborted uploads than maxInFlight + maxQueued: if any kept its slot the server would
  // answer the request after them with 503 overloaded, or never.
  for (const type of ['image/jpeg', MULTIPART['content-type']]) {
    const sockets = await Promise.all(
      Array.from(
        { length: MAX_IN_FLIGHT + MAX_QUEUED + 2 },
        () =>
          new Promise<net.Socket>((resolve) => {
            const socket = net.connect(port, '127.0.0.1', () => {
              socket.write(
                `POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: ${type}\r\n` +
                  'Content-Length: 500000\r\n\r\n--XB\r\n' +
                  'Content-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nabc',
              );
              resolve(socket);
            });
            socket.on('error', () => {});
          }),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 200));

    const answer = await send('/v1/search', {
      headers: { 'content-type': 'image/jpeg' },
      body: plainJpeg,
    });
    t.is(answer.status, 200, `${type}: ${answer.text.slice(0, 300)}`);
  }
  await healthy(t);
});

// ---------------------------------------------------------------------------------------------
// Wrong content types

test.serial(
  'bodies that are not an image or multipart are 415 naming the content type',
  async (t) => {
    const cases: [Record<string, string>, string][] = [
      [{ 'content-type': 'text/plain' }, 'text/plain'],
      [{ 'content-type': 'application/json' }, 'application/json'],
      [
        { 'content-type': 'application/x-www-form-urlencoded' },
        'application/x-www-form-urlencoded',
      ],
      [{ 'content-type': 'multipart/mixed; boundary=XB' }, 'multipart/mixed; boundary=XB'],
      [{}, '(none)'],
    ];
    for (const [headers, input] of cases) {
      for (const route of ['/v1/search', '/v1/identities/ana/faces']) {
        const answer = await send(route, { headers, body: plainJpeg });
        await refused(t, answer, 415, 'unsupported_media_type');
        t.is(answer.json.error.input, input);
        t.true(answer.json.error.message.includes(`'${input}'`));
      }
    }

    // A compressed body is refused rather than inflated (it could be a gzip bomb).
    const gzip = zlib.gzipSync(Buffer.alloc(MAX_UPLOAD * 4));
    const answer = await send('/v1/search', {
      headers: { 'content-type': 'image/jpeg', 'content-encoding': 'gzip' },
      body: gzip,
    });
    await refused(t, answer, 415, 'unsupported_media_type');
    t.is(answer.json.error.input, 'gzip');
  },
);

// ---------------------------------------------------------------------------------------------
// Identities: traversal, length, unicode

test.serial(
  'path traversal in ids stays a label: no file is created outside the gallery',
  async (t) => {
    const before = listTree(dir);
    const passwd = statSync('/etc/passwd').mtimeMs;

    // Labels that reach the engine: the no-face photo is refused, nothing is stored.
    const labels: [string, string][] = [
      ['..%2F..%2Fetc%2Fpasswd', '../../etc/passwd'],
      ['%2e%2e', '..'],
      ['%2E%2E%2F%2E%2E%2F', '../../'],
      ['a%2Fb', 'a/b'],
      ['..%5C..%5Cwindows', '..\\..\\windows'],
      ['%2Fetc%2Fpasswd', '/etc/passwd'],
    ];
    for (const [encoded, label] of labels) {
      const answer = await send(`/v1/identities/${encoded}/faces`, {
        headers: { 'content-type': 'image/jpeg' },
        body: plainJpeg,
      });
      await refused(t, answer, 422, 'no_face');
      const read = await send(`/v1/identities/${encoded}`, { method: 'GET' });
      await refused(t, read, 404, 'identity_not_found');
      t.is(read.json.error.input, label);
    }

    // A NUL byte is a control character; unencoded `..` segments match no route at all.
    for (const encoded of ['%00', 'x%00y', '..%00%2F']) {
      const answer = await send(`/v1/identities/${encoded}/faces`, {
        headers: { 'content-type': 'image/jpeg' },
        body: plainJpeg,
      });
      await refused(t, answer, 400, 'invalid_identity');
      t.regex(answer.json.error.message, /control character U\+0000/);
    }
    const raw = await send('/v1/identities/../../etc/passwd/faces', {
      headers: { 'content-type': 'image/jpeg' },
      body: plainJpeg,
    });
    await refused(t, raw, 404, 'not_found');

    if (hasData(t)) {
      // With a real face the label is enrolled, read back exactly and erased: a label only.
      const enrol = await send('/v1/identities/..%2F..%2Fetc%2Fpasswd/faces', {
        headers: { 'content-type': 'image/jpeg' },
        body: lfw('Abdullah_Gul', 1),
      });
      t.is(enrol.status, 201, enrol.text);
      t.is(enrol.json.identity, '../../etc/passwd');
      const read = await send('/v1/identities/..%2F..%2Fetc%2Fpasswd', { method: 'GET' });
      t.is(read.status, 200);
      t.is(read.json.identity, '../../etc/passwd');
      const erase = await send('/v1/identities/..%2F..%2Fetc%2Fpasswd', { method: 'DELETE' });
      t.is(erase.status, 200);
    }

    // Only the gallery's own files may have appeared or gone.
    const after = listTree(dir);
    const inGallery = (p: string) =>
      p === path.relative(dir, galleryDir) ||
      p.startsWith(path.relative(dir, galleryDir) + path.sep);
    t.deepEqual(
      after.filter((p) => !inGallery(p)),
      before.filter((p) => !inGallery(p)),
    );
    t.is(statSync('/etc/passwd').mtimeMs, passwd);
    t.false(existsSync(path.join(dir, 'deep', 'etc')));
  },
);

test.serial('very long ids are refused with a 4xx and the server stays up', async (t) => {
  const photo = { headers: { 'content-type': 'image/jpeg' }, body: plainJpeg };

  const id129 = await send(`/v1/identities/${'a'.repeat(129)}/faces`, photo);
  await refused(t, id129, 400, 'invalid_identity');
  t.regex(id129.json.error.message, /129 characters long; at most 128/);
  t.is(id129.json.error.input, 'a'.repeat(128) + '...');

  // 10,000 characters still fit in Node's 16 KiB of request headers: reidb answers.
  const id10k = await send(`/v1/identities/${'b'.repeat(10_000)}/faces`, photo);
  await refused(t, id10k, 400, 'invalid_identity');

  // 100,000 characters do not: Node refuses the request line itself (431, no body) and
  // drops the connection, which the client may see as a reset before the answer.
  const outcome = await send(`/v1/identities/${'c'.repeat(100_000)}/faces`, photo).then(
    (answer) => answer,
    (error: NodeJS.ErrnoException) => error,
  );
  if (outcome instanceof Error) {
    t.true(['ECONNRESET', 'EPIPE'].includes(outcome.code ?? ''), String(outcome));
  } else {
    t.true(outcome.status >= 400 && outcome.status < 500, `status ${outcome.status}`);
    if (outcome.text.length > 0) t.is(typeof outcome.json?.error?.code, 'string');
  }
  t.log('100,000-character id:', outcome instanceof Error ? outcome.code : outcome.status);
  await healthy(t);

  const long = await send(`/v1/identities/${'d'.repeat(129)}`, { method: 'GET' });
  await refused(t, long, 400, 'invalid_identity');
});

test.serial('bidi overrides and ill-formed UTF-8 in ids are refused', async (t) => {
  const photo = { headers: { 'content-type': 'image/jpeg' }, body: plainJpeg };
  const bidi = await send(`/v1/identities/${encodeURIComponent('abc\u202edef')}/faces`, photo);
  await refused(t, bidi, 400, 'invalid_identity');
  t.regex(bidi.json.error.message, /bidirectional control U\+202e/);

  // A lone surrogate (CESU-style ED A0 80) and a cut-off sequence cannot be decoded.
  for (const encoded of ['%ED%A0%80', '%E0%A4%A', '%FF']) {
    const answer = await send(`/v1/identities/${encoded}/faces`, photo);
    await refused(t, answer, 400, 'invalid_argument');
  }
});

test.serial('an emoji id is an ordinary label', async (t) => {
  const label = '\u{1F9D1}\u200D\u{1F4BB} Ana \u{1F1F5}\u{1F1F9}';
  const encoded = encodeURIComponent(label);
  const noFace = await send(`/v1/identities/${encoded}/faces`, {
    headers: { 'content-type': 'image/jpeg' },
    body: plainJpeg,
  });
  await refused(t, noFace, 422, 'no_face');

  if (!hasData(t)) return;
  const enrol = await send(`/v1/identities/${encoded}/faces`, {
    headers: { 'content-type': 'image/jpeg' },
    body: lfw('Alvaro_Uribe', 1),
  });
  t.is(enrol.status, 201, enrol.text);
  t.is(enrol.json.identity, label);
  const read = await send(`/v1/identities/${encoded}`, { method: 'GET' });
  t.is(read.status, 200);
  t.is(read.json.identity, label);
});

test.serial('NFC and NFD spellings of José are two identities, each exact', async (t) => {
  if (!hasData(t)) return;
  const nfc = 'Jos\u00e9';
  const nfd = 'Jose\u0301';
  t.is(nfc.normalize('NFD'), nfd);

  for (const [label, photo] of [
    [nfc, lfw('Alejandro_Toledo', 1)],
    [nfd, lfw('Alejandro_Toledo', 2)],
  ] as const) {
    const res = await send(`/v1/identities/${encodeURIComponent(label)}/faces`, {
      headers: { 'content-type': 'image/jpeg' },
      body: photo,
    });
    t.is(res.status, 201, res.text);
    t.is(res.json.identity, label);
  }
  for (const label of [nfc, nfd]) {
    const read = await send(`/v1/identities/${encodeURIComponent(label)}`, { method: 'GET' });
    t.is(read.status, 200);
    t.is(read.json.identity, label);
    t.is(read.json.faces.length, 1);
  }
  await healthy(t);
});

// ---------------------------------------------------------------------------------------------
// Decompression bombs

function crc32(bytes: Buffer): number {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([head, body, crc]);
}

/** An 8-bit grey PNG of width x height pixels whose IDAT holds `idat` (zlib data). */
function png(width: number, height: number, idat: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth; colour type 0 (grey), no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', idat),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A complete, valid grey PNG of one constant colour, deflated row by row (never whole). */
async function greyBomb(width: number, height: number): Promise<Buffer> {
  const deflate = zlib.createDeflate({ level: 9 });
  const out: Buffer[] = [];
  deflate.on('data', (c: Buffer) => out.push(c));
  const ended = new Promise((resolve) => deflate.on('end', resolve));
  const row = Buffer.alloc(width + 1); // filter byte 0, then grey 0
  for (let y = 0; y < height; y++) {
    if (!deflate.write(row)) await new Promise((resolve) => deflate.once('drain', resolve));
  }
  deflate.end();
  await ended;
  return png(width, height, Buffer.concat(out));
}

/** A real 16 x 16 JPEG whose SOF header is rewritten to claim 65000 x 65000 pixels. */
async function hugeJpeg(): Promise<Buffer> {
  const jpeg = await sharp({
    create: { width: 16, height: 16, channels: 3, background: { r: 128, g: 128, b: 128 } },
  })
    .jpeg()
    .toBuffer();
  for (let at = 2; at + 9 < jpeg.length; at += 2 + jpeg.readUInt16BE(at + 2)) {
    const marker = jpeg[at + 1];
    if (marker >= 0xc0 && marker <= 0xc2) {
      jpeg.writeUInt16BE(65000, at + 5);
      jpeg.writeUInt16BE(65000, at + 7);
      return jpeg;
    }
  }
  throw new Error('no SOF marker in the generated JPEG');
}

/** A GIF with a logical screen of screen x screen and one frame of frame x frame pixels. */
function gif(screen: number, frame: number): Buffer {
  const u16 = (n: number) => [n & 0xff, n >> 8];
  return Buffer.from([
    ...Buffer.from('GIF89a'),
    ...u16(screen),
    ...u16(screen),
    0x80,
    0,
    0, // global colour table of 2 entries
    0,
    0,
    0,
    255,
    255,
    255,
    0x2c,
    0,
    0,
    0,
    0,
    ...u16(frame),
    ...u16(frame),
    0, // image descriptor
    2,
    2,
    0x44,
    0x01,
    0, // LZW data: a couple of pixels
    0x3b,
  ]);
}

test.serial('decompression bombs are refused as image_too_large with bounded memory', async (t) => {
  const bombs: [string, Buffer][] = [
    [
      'PNG whose IHDR claims 100000 x 100000',
      png(100_000, 100_000, zlib.deflateSync(Buffer.alloc(1024))),
    ],
    ['valid 20000 x 20000 grey PNG', await greyBomb(20_000, 20_000)],
    ['JPEG whose SOF claims 65000 x 65000', await hugeJpeg()],
    ['GIF with a 65535 x 65535 screen and frame', gif(65_535, 65_535)],
  ];
  for (const [what, bytes] of bombs) {
    t.true(bytes.length < MAX_UPLOAD, `${what}: ${bytes.length} bytes`);
    for (const route of ['/v1/search', '/v1/identities/bomb/faces']) {
      const { result, growth } = await rssGrowth(() =>
        send(route, { headers: { 'content-type': 'application/octet-stream' }, body: bytes }),
      );
      await refused(t, result, 413, 'image_too_large');
      t.regex(result.json.error.message, /pixels, more than the limit of 40000000/);
      t.true(growth < BOMB_RSS_BOUND, `${what} on ${route}: RSS grew ${growth >> 20} MiB`);
      t.log(`${what} (${bytes.length} bytes) on ${route}: 413, RSS +${growth >> 20} MiB`);
    }
  }

  // libvips sizes a GIF by its frames, not by its logical screen: a 65535 x 65535 screen
  // around a 1 x 1 frame decodes as 1 x 1, allocates nothing large and holds no face.
  const { result, growth } = await rssGrowth(() =>
    send('/v1/identities/bomb/faces', {
      headers: { 'content-type': 'image/gif' },
      body: gif(65_535, 1),
    }),
  );
  await refused(t, result, 422, 'no_face');
  t.true(growth < BOMB_RSS_BOUND, `GIF screen: RSS grew ${growth >> 20} MiB`);
});

// ---------------------------------------------------------------------------------------------
// A flood

/** The p-th percentile (0..100) of `values`, nearest rank. */
function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

interface FloodReport {
  statuses: Map<number, number>;
  /** Milliseconds from sending to the whole answer, for the admitted requests. */
  admittedMs: number[];
  refusedCount: number;
}

/** Sends `count` requests at once; checks every answer is `okStatus` or 503 overloaded. */
async function flood(
  t: ExecutionContext,
  count: number,
  route: string,
  photo: Buffer,
  okStatus: number,
): Promise<FloodReport> {
  const report: FloodReport = { statuses: new Map(), admittedMs: [], refusedCount: 0 };
  let answered = 0;
  const requests = Array.from({ length: count }, async () => {
    const started = performance.now();
    const res = await fetch(base + route, {
      method: 'POST',
      body: new Uint8Array(photo),
      headers: { 'content-type': 'image/jpeg' },
    });
    const body = await res.json();
    const ms = performance.now() - started;
    answered++;
    report.statuses.set(res.status, (report.statuses.get(res.status) ?? 0) + 1);
    if (res.status === okStatus) {
      report.admittedMs.push(ms);
    } else if (res.status === 503) {
      report.refusedCount++;
      t.is(body.error.code, 'overloaded');
      t.is(res.headers.get('retry-after'), '1');
    } else {
      t.fail(`unexpected ${res.status}: ${JSON.stringify(body).slice(0, 300)}`);
    }
  });

  // /healthz is not admission-controlled: it answers while the flood is being served.
  await new Promise((resolve) => setTimeout(resolve, 50));
  const during = await fetch(`${base}/healthz`);
  t.is(during.status, 200);
  t.true(answered < count, 'some flood requests were still being served');

  await Promise.all(requests);
  t.true(report.refusedCount >= 1, 'at least one request refused');
  t.true(report.admittedMs.length >= 1, 'at least one request admitted');
  await healthy(t);
  return report;
}

/**
 * RSS bound for a flood, in bytes. Admitted work is at most maxInFlight + maxQueued = 10
 * requests of at most 1 MiB each, and decoding a photo of at most 40 MP costs 120 MB per
 * engine worker (2) at worst; the photos here are 250 x 250. The other cost is the 300
 * connections themselves, client and server side in this process (socket buffers, parsers,
 * fetch's Response objects): a few hundred KiB each. Measured on the 2-core machine: +40 to
 * +70 MiB (+140 MiB when the flood was the workers' first work). 300 MiB covers that with
 * room for GC timing; without admission control every request's body would be buffered and
 * its analysis queued.
 */
const FLOOD_RSS_BOUND = 300 * 1024 * 1024;

test.serial('a flood of 300 searches gets 200 or 503 overloaded with Retry-After', async (t) => {
  const photo = existsSync(DATA_DIR) ? lfw('Abdullah_Gul', 2) : plainJpeg;

  // Searches before the flood: two at once warm both workers (their first images grow the
  // wasm heaps, which is not the flood's cost), then one alone gives the unloaded latency.
  const search = () =>
    send('/v1/search?k=3', { headers: { 'content-type': 'image/jpeg' }, body: photo });
  for (const warm of await Promise.all([search(), search()])) t.is(warm.status, 200, warm.text);
  const started = performance.now();
  t.is((await search()).status, 200);
  const aloneMs = performance.now() - started;

  const { result: report, growth } = await rssGrowth(() =>
    flood(t, 300, '/v1/search?k=3', photo, 200),
  );

  const p50 = percentile(report.admittedMs, 50);
  t.log(
    `300 concurrent searches: ${report.admittedMs.length} admitted (200), ` +
      `${report.refusedCount} refused (503); admitted p50 ${p50.toFixed(0)} ms, ` +
      `p95 ${percentile(report.admittedMs, 95).toFixed(0)} ms (one search alone ` +
      `${aloneMs.toFixed(0)} ms); RSS +${growth >> 20} MiB`,
  );
  t.is(report.admittedMs.length + report.refusedCount, 300);
  t.true(growth < FLOOD_RSS_BOUND, `RSS grew ${growth >> 20} MiB`);
});

test.serial('a flood of 100 enrolments gets 201 or 503 overloaded', async (t) => {
  if (!hasData(t)) return;
  const before = gallery.stats().faces;
  const { result: report, growth } = await rssGrowth(() =>
    flood(t, 100, '/v1/identities/flood/faces', lfw('Alvaro_Uribe', 2), 201),
  );
  t.log(
    `100 concurrent enrolments: ${report.admittedMs.length} admitted (201), ` +
      `${report.refusedCount} refused (503); RSS +${growth >> 20} MiB`,
  );
  t.is(gallery.stats().faces, before + report.admittedMs.length);
  t.true(growth < FLOOD_RSS_BOUND, `RSS grew ${growth >> 20} MiB`);
});
