import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { crc32, deflateSync } from 'node:zlib';

import test from 'ava';
import type { ExecutionContext } from 'ava';
import sharp from 'sharp';

import { ReidbError, type ErrorCode } from '../../src/errors.ts';
import { decodeImage, type DecodedImage } from '../../src/image/decode.ts';
import { dataPath, hasData } from '../helpers/data.ts';

let dir = '';

test.before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'reidb-decode-'));
});

test.after.always(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** Writes bytes to the temp dir under `name` and returns the path. */
async function fixture(name: string, bytes: Uint8Array | string): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, bytes);
  return file;
}

/** The RGB triple at (x, y). */
function pixel(image: DecodedImage, x: number, y: number): number[] {
  const at = (y * image.width + x) * 3;
  return Array.from(image.data.subarray(at, at + 3));
}

/** Asserts every channel of `actual` is within `tolerance` of `expected`. */
function near(t: ExecutionContext, actual: number[], expected: number[], tolerance: number) {
  const ok = actual.every((value, i) => Math.abs(value - expected[i]) <= tolerance);
  t.true(ok, `expected ${JSON.stringify(expected)} +-${tolerance}, got ${JSON.stringify(actual)}`);
}

/** Asserts that decoding rejects with a ReidbError of `code` whose message names the input. */
async function rejects(
  t: ExecutionContext,
  input: string | Buffer,
  code: ErrorCode,
  options: Parameters<typeof decodeImage>[1] = {},
): Promise<ReidbError> {
  const error = await t.throwsAsync(decodeImage(input, options), { instanceOf: ReidbError });
  t.is(error?.code, code, error?.message);
  const name = options.name ?? (typeof input === 'string' ? input : '<buffer>');
  t.true(error?.message.includes(name), `message names the input: ${error?.message}`);
  return error as ReidbError;
}

/** Asserts the basic shape of a decoded image. */
function assertRgb(t: ExecutionContext, image: DecodedImage, width: number, height: number) {
  t.is(image.channels, 3);
  t.is(image.width, width);
  t.is(image.height, height);
  t.is(image.data.length, width * height * 3);
}

/** Asserts R = G = B at every pixel. */
function assertGrey(t: ExecutionContext, image: DecodedImage) {
  for (let i = 0; i < image.data.length; i += 3) {
    if (image.data[i] !== image.data[i + 1] || image.data[i] !== image.data[i + 2]) {
      t.fail(`pixel ${i / 3} is not grey: ${Array.from(image.data.subarray(i, i + 3))}`);
      return;
    }
  }
  t.pass();
}

/** A PNG chunk: length, type, data, CRC. */
function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** A valid, all-black, 1-bit grey PNG of any size; zero rows compress to almost nothing. */
function blackBitmapPng(width: number, height: number): Buffer {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 1; // bit depth
  header[9] = 0; // grey
  const rows = Buffer.alloc((1 + Math.ceil(width / 8)) * height);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', header),
    pngChunk('IDAT', deflateSync(rows, { level: 9 })),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** The first LFW photo, or undefined without ../shared/data. */
async function lfwPhoto(t: ExecutionContext): Promise<string | undefined> {
  if (!hasData(t)) return undefined;
  const folder = dataPath('lfw_multi', 'Aaron_Peirsol');
  const files = (await readdir(folder)).filter((file) => file.endsWith('.jpg')).sort();
  return path.join(folder, files[0]);
}

// The huge image goes first and alone, so the peak RSS it reads is its own.
test.serial('a 20000 x 20000 PNG is image_too_large, fast, without decoding pixels', async (t) => {
  const rssBefore = process.memoryUsage().rss;
  const file = await fixture('huge.png', blackBitmapPng(20000, 20000));
  const started = performance.now();

  const error = await rejects(t, file, 'image_too_large');

  const seconds = (performance.now() - started) / 1000;
  const peakGrowth = process.resourceUsage().maxRSS * 1024 - rssBefore;
  t.deepEqual(error.details, { width: 20000, height: 20000, pixels: 4e8, maxPixels: 40e6 });
  t.true(seconds < 2, `refused in ${seconds.toFixed(2)} s`);
  t.true(peakGrowth < 300e6, `peak RSS grew by ${(peakGrowth / 1e6).toFixed(0)} MB`);
  t.log(`refused in ${seconds.toFixed(2)} s; peak RSS +${(peakGrowth / 1e6).toFixed(0)} MB`);
});

test('an RGBA PNG becomes RGB with alpha flattened onto white', async (t) => {
  const rgba = Buffer.from([255, 0, 0, 255, 0, 0, 255, 0, 0, 0, 0, 128]);
  const png = await sharp(rgba, { raw: { width: 3, height: 1, channels: 4 } })
    .png()
    .toBuffer();
  t.is((await sharp(png).metadata()).channels, 4);

  const image = await decodeImage(await fixture('rgba.png', png));

  assertRgb(t, image, 3, 1);
  t.is(image.format, 'png');
  t.deepEqual(pixel(image, 0, 0), [255, 0, 0]);
  t.deepEqual(pixel(image, 1, 0), [255, 255, 255]);
  near(t, pixel(image, 2, 0), [127, 127, 127], 1);
});

test('a grey + alpha PNG becomes RGB with alpha flattened onto white', async (t) => {
  const greyAlpha = Buffer.from([50, 255, 50, 0]);
  const png = await sharp(greyAlpha, { raw: { width: 2, height: 1, channels: 2 } })
    .toColourspace('b-w')
    .png()
    .toBuffer();
  t.is((await sharp(png).metadata()).channels, 2);

  const image = await decodeImage(png);

  assertRgb(t, image, 2, 1);
  t.deepEqual(pixel(image, 0, 0), [50, 50, 50]);
  t.deepEqual(pixel(image, 1, 0), [255, 255, 255]);
});

test('a grey PNG becomes RGB with R = G = B and the same values', async (t) => {
  const grey = Buffer.from([0, 64, 128, 255]);
  const png = await sharp(grey, { raw: { width: 4, height: 1, channels: 1 } })
    .png()
    .toBuffer();

  const image = await decodeImage(png);

  assertRgb(t, image, 4, 1);
  t.deepEqual(Array.from(image.data), [0, 0, 0, 64, 64, 64, 128, 128, 128, 255, 255, 255]);
});

test('a grey JPEG becomes RGB with R = G = B', async (t) => {
  const file = await lfwPhoto(t);
  if (file === undefined) return;
  const jpeg = await sharp(file).toColourspace('b-w').jpeg().toBuffer();
  t.is((await sharp(jpeg).metadata()).channels, 1);

  const image = await decodeImage(await fixture('grey.jpg', jpeg));

  assertRgb(t, image, 150, 150);
  assertGrey(t, image);
});

test('a 16-bit grey PNG becomes 8-bit with the right values', async (t) => {
  const samples = new Uint16Array([0, 0x4040, 0x8080, 0xffff]);
  const png = await sharp(samples, { raw: { width: 4, height: 1, channels: 1 } })
    .toColourspace('grey16')
    .png()
    .toBuffer();
  t.is((await sharp(png).metadata()).depth, 'ushort');

  const image = await decodeImage(png);

  assertRgb(t, image, 4, 1);
  t.deepEqual(Array.from(image.data), [0, 0, 0, 64, 64, 64, 128, 128, 128, 255, 255, 255]);
});

test('a 16-bit RGB PNG becomes 8-bit with the right values', async (t) => {
  const samples = new Uint16Array([0xffff, 0x4040, 0, 0x8080, 0x8080, 0x8080]);
  const png = await sharp(samples, { raw: { width: 2, height: 1, channels: 3 } })
    .toColourspace('rgb16')
    .png()
    .toBuffer();
  t.is((await sharp(png).metadata()).depth, 'ushort');

  const image = await decodeImage(png);

  assertRgb(t, image, 2, 1);
  t.deepEqual(Array.from(image.data), [255, 64, 0, 128, 128, 128]);
});

test('a palette PNG becomes RGB', async (t) => {
  const rgb = Buffer.from([10, 200, 90, 250, 20, 20, 10, 200, 90, 0, 0, 0]);
  const png = await sharp(rgb, { raw: { width: 2, height: 2, channels: 3 } })
    .png({ palette: true, colours: 4, dither: 0 })
    .toBuffer();
  t.true((await sharp(png).metadata()).isPalette);

  const image = await decodeImage(png);

  assertRgb(t, image, 2, 2);
  near(t, pixel(image, 0, 0), [10, 200, 90], 2);
  near(t, pixel(image, 1, 0), [250, 20, 20], 2);
  near(t, pixel(image, 1, 1), [0, 0, 0], 2);
});

test('a CMYK JPEG becomes sRGB', async (t) => {
  const jpeg = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#c81e28' } })
    .toColourspace('cmyk')
    .jpeg({ quality: 100 })
    .toBuffer();
  t.is((await sharp(jpeg).metadata()).space, 'cmyk');

  const image = await decodeImage(jpeg);

  assertRgb(t, image, 8, 8);
  near(t, pixel(image, 4, 4), [200, 30, 40], 30);
});

test('an embedded ICC profile (Display P3) is converted to sRGB', async (t) => {
  const jpeg = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#c81e28' } })
    .withIccProfile('p3')
    .jpeg({ quality: 100 })
    .toBuffer();
  const stored = await sharp(jpeg, { ignoreIcc: true }).raw().toBuffer();
  t.true(Math.abs(stored[1] - 30) > 10, 'the stored values are P3, not sRGB');

  const image = await decodeImage(jpeg);

  near(t, pixel(image, 4, 4), [200, 30, 40], 4);
});

test('a WebP decodes, also when its name says .jpg', async (t) => {
  const webp = await sharp({ create: { width: 6, height: 4, channels: 3, background: '#204080' } })
    .webp({ lossless: true })
    .toBuffer();

  for (const name of ['face.webp', 'face.jpg']) {
    const image = await decodeImage(await fixture(name, webp));
    assertRgb(t, image, 6, 4);
    t.is(image.format, 'webp');
    t.deepEqual(pixel(image, 3, 2), [0x20, 0x40, 0x80]);
  }
});

test('a GIF decodes', async (t) => {
  const gif = await sharp({ create: { width: 5, height: 3, channels: 3, background: '#ff0000' } })
    .gif()
    .toBuffer();

  const image = await decodeImage(gif);

  assertRgb(t, image, 5, 3);
  t.is(image.format, 'gif');
  near(t, pixel(image, 2, 1), [255, 0, 0], 2);
});

test('EXIF orientation 6 is applied: width and height swap and the content turns', async (t) => {
  // Stored 40 x 20, blue with a red 10 x 10 block at the top-left corner. Orientation 6 means
  // "turn 90 degrees clockwise to view", so the block must end at the top-right corner.
  const red = { create: { width: 10, height: 10, channels: 3 as const, background: '#ff0000' } };
  const blue = { width: 40, height: 20, channels: 3 as const, background: '#0000ff' };
  const jpeg = await sharp({ create: blue })
    .composite([{ input: red, left: 0, top: 0 }])
    .jpeg({ quality: 100 })
    .withMetadata({ orientation: 6 })
    .toBuffer();

  const image = await decodeImage(jpeg);

  assertRgb(t, image, 20, 40);
  t.is(image.orientation, 6);
  near(t, pixel(image, 15, 5), [255, 0, 0], 40);
  near(t, pixel(image, 5, 5), [0, 0, 255], 40);
  near(t, pixel(image, 5, 35), [0, 0, 255], 40);
});

test('a real LFW JPEG decodes to 150 x 150 RGB', async (t) => {
  const file = await lfwPhoto(t);
  if (file === undefined) return;

  const image = await decodeImage(file);

  assertRgb(t, image, 150, 150);
  t.is(image.format, 'jpeg');
  t.is(image.source, file);
});

test('an ORL .pgm grey face decodes', async (t) => {
  if (!hasData(t)) return;
  const file = dataPath('orl_att_faces', 's1', '1.pgm');

  const image = await decodeImage(file);

  assertRgb(t, image, 92, 112);
  t.is(image.format, 'pgm');
  assertGrey(t, image);
  const bytes = await readFile(file);
  t.is(image.data[0], bytes[bytes.length - 92 * 112], 'first sample kept as it is');
});

test('ASCII and 16-bit Netpbm images decode', async (t) => {
  const p3 = await decodeImage(Buffer.from('P3\n# a comment\n2 1\n255\n255 0 0  0 0 255\n'));
  t.deepEqual(Array.from(p3.data), [255, 0, 0, 0, 0, 255]);

  const p2 = await decodeImage(Buffer.from('P2 2 1 15 0 15'));
  t.deepEqual(Array.from(p2.data), [0, 0, 0, 255, 255, 255]);

  const p1 = await decodeImage(Buffer.from('P1\n3 1\n010'));
  t.deepEqual(Array.from(p1.data), [255, 255, 255, 0, 0, 0, 255, 255, 255]);

  const p5Bytes = [Buffer.from('P5 2 1 65535\n'), Buffer.from([0x80, 0x80, 0xff, 0xff])];
  const p5 = await decodeImage(Buffer.concat(p5Bytes));
  t.deepEqual(Array.from(p5.data), [128, 128, 128, 255, 255, 255]);

  await rejects(t, Buffer.from('P5 4 4 255\n\x01\x02'), 'corrupt_image');
  await rejects(t, Buffer.from('P5 10000 10000 255\n'), 'image_too_large');
});

test('a JPEG cut in half is corrupt_image', async (t) => {
  const file = await lfwPhoto(t);
  if (file === undefined) return;
  const bytes = await readFile(file);

  const half = await fixture('half.jpg', bytes.subarray(0, bytes.length >> 1));

  await rejects(t, half, 'corrupt_image');
});

test('a truncated PNG is corrupt_image', async (t) => {
  const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#808080' } })
    .png({ compressionLevel: 0 })
    .toBuffer();

  await rejects(t, png.subarray(0, png.length >> 1), 'corrupt_image', { name: 'upload.png' });
});

test('a text file named .jpg is not_an_image', async (t) => {
  const file = await fixture('notes.jpg', 'These are my notes, not a photo.\n');

  const error = await rejects(t, file, 'not_an_image');

  t.regex(error.message, /text/);
});

test('.DS_Store-like binary junk is not_an_image', async (t) => {
  const junk = Buffer.alloc(6148);
  junk.set([0, 0, 0, 1, 0x42, 0x75, 0x64, 0x31, 0, 0, 0x10, 0]);
  for (let i = 12; i < junk.length; i += 7) junk[i] = (i * 31) & 0xff;

  await rejects(t, await fixture('.DS_Store', junk), 'not_an_image');
  await rejects(t, Buffer.from([0x13, 0x37, 0, 0, 0xde, 0xad, 0xbe, 0xef]), 'not_an_image');
});

test('a zero-byte file is empty_file', async (t) => {
  await rejects(t, await fixture('empty.jpg', ''), 'empty_file');
  await rejects(t, Buffer.alloc(0), 'empty_file', { name: 'upload.jpg' });
});

test('a missing file is file_not_found', async (t) => {
  await rejects(t, path.join(dir, 'no-such-photo.jpg'), 'file_not_found');
});

test('an SVG is unsupported_image', async (t) => {
  const svg =
    '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" ' +
    'height="10"><rect width="10" height="10" fill="red"/></svg>\n';

  await rejects(t, await fixture('drawing.svg', svg), 'unsupported_image');
  await rejects(t, await fixture('drawing.png', svg), 'unsupported_image');
});

test('a PDF and a HEIC are unsupported_image', async (t) => {
  await rejects(t, Buffer.from('%PDF-1.7\n1 0 obj\n<<>>\nendobj\n'), 'unsupported_image');

  // An ftyp box with the 'heic' brand and no decodable content.
  const heic = Buffer.concat([
    Buffer.from([0, 0, 0, 24]),
    Buffer.from('ftypheic\0\0\0\0mif1heic', 'latin1'),
    Buffer.alloc(64),
  ]);
  await rejects(t, heic, 'unsupported_image', { name: 'IMG_0001.HEIC' });
});

test('inputs over maxBytes or maxPixels are image_too_large', async (t) => {
  const png = await sharp({ create: { width: 100, height: 100, channels: 3, background: '#000' } })
    .png()
    .toBuffer();
  const file = await fixture('small.png', png);

  const bytes = await rejects(t, file, 'image_too_large', { maxBytes: 10 });
  t.is(bytes.details?.maxBytes, 10);
  await rejects(t, png, 'image_too_large', { maxPixels: 9999 });
  t.is((await decodeImage(png, { maxPixels: 10000 })).width, 100);
});

test('bad options and inputs are invalid_argument', async (t) => {
  await rejects(t, Buffer.from('x'), 'invalid_argument', { maxPixels: -1 });
  await rejects(t, dir, 'invalid_argument');
});
