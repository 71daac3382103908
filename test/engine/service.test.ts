import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';
import sharp from 'sharp';

import type { Engine } from '../../src/engine/pool.ts';
import { enrolImages, searchImage } from '../../src/engine/service.ts';
import { openGallery } from '../../src/gallery/gallery.ts';
import { fakeEngine as makeFakeEngine } from '../helpers/fake-engine.ts';

const DIM = 16;
const IDENTITY = {
  embedderId: 'fake',
  appearanceDim: DIM,
  fusionId: 'appearance-v1',
  fusedDim: DIM,
  alignMode: 'mesh' as const,
};

function unit(values: number[]): Float32Array {
  const v = Float32Array.from(values);
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

/** A vector near the probe direction e0, further away as `spread` grows. */
function near(spread: number, salt: number): Float32Array {
  return unit(
    Array.from({ length: DIM }, (_, i) => (i === 0 ? 1 : spread * Math.sin(salt * 7 + i))),
  );
}

/** An engine whose every image holds one face with the vector named by the image. */
function fakeEngine(vectors: Map<string, Float32Array>): Engine {
  return makeFakeEngine({ identity: IDENTITY, vectorFor: (name) => vectors.get(name)! });
}

test('top-k names k identities even when one identity holds every nearby face', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-service-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const gallery = await openGallery(dir);
  t.teardown(() => gallery.close());

  // 60 faces of "frames" very close to the probe, then five other people further away.
  const vectors = new Map<string, Float32Array>([['probe', near(0, 0)]]);
  const items = [];
  for (let i = 0; i < 60; i++) {
    vectors.set(`frame-${i}`, near(0.01, i));
    items.push({ identity: 'frames', image: { file: `frame-${i}` } });
  }
  for (let i = 0; i < 5; i++) {
    vectors.set(`other-${i}`, near(0.5 + i * 0.1, 100 + i));
    items.push({ identity: `person-${i}`, image: { file: `other-${i}` } });
  }
  const engine = fakeEngine(vectors);
  const report = await enrolImages(engine, gallery, items);
  t.is(report.enrolled.length, 65);

  const result = await searchImage(engine, gallery, { file: 'probe' }, { k: 4 });
  const names = result.faces[0].matches.map((m) => m.identity);
  t.deepEqual(names, ['frames', 'person-0', 'person-1', 'person-2']);

  const filtered = await searchImage(engine, gallery, { file: 'probe' }, { k: 4, minScore: 0.95 });
  t.deepEqual(
    filtered.faces[0].matches.map((m) => m.identity),
    ['frames'],
  );
});

test('an identity with more faces than one transaction takes is enrolled in chunks', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-service-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const gallery = await openGallery(dir);
  t.teardown(() => gallery.close());

  const vectors = new Map<string, Float32Array>();
  const items = [];
  for (let i = 0; i < 1005; i++) {
    vectors.set(`f${i}`, near(0.3, i));
    items.push({ identity: i < 1003 ? 'many' : 'last', image: { file: `f${i}` } });
  }
  const report = await enrolImages(fakeEngine(vectors), gallery, items);
  t.is(report.enrolled.length, 1005);
  t.deepEqual(report.skipped, []);
  t.deepEqual(report.identities.sort(), ['last', 'many']);
  t.is(gallery.getIdentity('many').faces.length, 1003);
});

test('thumbnails are stored only when the policy asks, blurred when it says so', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-service-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const gallery = await openGallery(dir);
  t.teardown(() => gallery.close());

  // A sharp-edged picture, so that blurring measurably removes detail.
  const size = 200;
  const pixels = Buffer.alloc(size * size * 3);
  for (let i = 0; i < size * size; i++)
    pixels.fill(((i % size) >> 3) % 2 ? 255 : 0, i * 3, i * 3 + 3);
  const photo = await sharp(pixels, { raw: { width: size, height: size, channels: 3 } })
    .png()
    .toBuffer();
  const vectors = new Map([
    ['off.png', near(0.2, 1)],
    ['on.png', near(0.2, 2)],
    ['blurred.png', near(0.2, 3)],
  ]);
  const engine = fakeEngine(vectors);
  const enrol = (name: string) =>
    enrolImages(engine, gallery, [
      { identity: name, image: { buffer: photo, name: `${name}.png` } },
    ]);

  await enrol('off');
  gallery.setPolicy({ thumbnails: 'on' });
  await enrol('on');
  gallery.setPolicy({ thumbnails: 'blurred' });
  await enrol('blurred');

  t.false(gallery.getIdentity('off').faces[0]!.thumbnail);
  const stored = (name: string) => gallery.identityData(name).faces[0]!.thumbnail!;
  t.is(gallery.identityData('off').faces[0]!.thumbnail, undefined);

  const sharpness = async (jpeg: Buffer) => {
    const { data, info } = await sharp(jpeg)
      .greyscale()
      .raw()
      .toBuffer({ resolveWithObject: true });
    t.deepEqual([info.width, info.height], [96, 96]);
    let sum = 0;
    for (let i = 1; i < data.length; i++) sum += Math.abs(data[i]! - data[i - 1]!);
    return sum / data.length;
  };
  const plain = await sharpness(stored('on'));
  const blurred = await sharpness(stored('blurred'));
  t.log(`mean neighbour difference: plain ${plain.toFixed(1)}, blurred ${blurred.toFixed(1)}`);
  t.true(blurred < plain / 4);
});
