import { readFileSync } from 'node:fs';

import sharp from 'sharp';
import test from 'ava';

import { createEngine, type Engine } from '../../src/engine/pool.ts';
import { noFaceReason, pickEnrolmentFace } from '../../src/engine/pipeline.ts';
import { ReidbError, type ErrorCode } from '../../src/errors.ts';
import { dataPath, hasData } from '../helpers/data.ts';
import { lfw, noFacePhoto, sideBySide } from '../helpers/images.ts';

let engine: Engine;

test.before(async () => {
  engine = await createEngine({ workers: 2 });
});

test.after.always(async () => {
  await engine?.close();
});

test('a face about 40 px wide is found and scores lower quality than the full photo', async (t) => {
  if (!hasData(t)) return;
  const photo = lfw('Abdullah_Gul', 1);
  const full = await engine.analyseBuffer(photo, 'full.jpg');
  const small = await engine.analyseBuffer(
    await sharp(photo).resize(110).jpeg().toBuffer(),
    'small',
  );

  t.is(small.analysis.faces.length, 1);
  const width = small.analysis.faces[0].detection.box.width;
  t.true(width > 30 && width < 50, `face width ${width}`);
  t.true(small.analysis.faces[0].quality < full.analysis.faces[0].quality);
});

test('a 128x64 pedestrian crop has no usable face and says why', async (t) => {
  if (!hasData(t)) return;
  const crop = await sharp(dataPath('cuhk01_reid', 'campus', '0001001.png'))
    .resize(64, 128, { fit: 'fill' })
    .png()
    .toBuffer();
  const { analysis } = await engine.analyseBuffer(crop, 'pedestrian.png');

  t.is(analysis.faces.length, 0);
  t.regex(
    noFaceReason(analysis),
    /^(no face detected in the 64x128 image|no usable face: \d candidate\(s\) rejected)/,
  );
  const e = t.throws(() => pickEnrolmentFace(analysis, 'pedestrian.png'), {
    instanceOf: ReidbError,
  });
  t.is(e?.code, 'no_face');
  t.regex(e!.message, /^pedestrian\.png: /);
});

test('a photo without a face gives no face, never a whole-frame embedding', async (t) => {
  const { analysis } = await engine.analyseBuffer(await noFacePhoto(), 'gradient.jpg');
  t.deepEqual(analysis.faces, []);
  t.is(noFaceReason(analysis), 'no face detected in the 320x240 image');
});

test('two faces in one photo are both analysed', async (t) => {
  if (!hasData(t)) return;
  const two = await sideBySide(lfw('Alvaro_Uribe', 1), lfw('Alejandro_Toledo', 1));
  const { analysis } = await engine.analyseBuffer(two, 'two.jpg');

  t.is(analysis.faces.length, 2);
  const xs = analysis.faces.map((f) => f.detection.box.x).sort((a, b) => a - b);
  t.true(xs[0] < 150 && xs[1] >= 150, `boxes at x=${xs}`);
  t.throws(() => pickEnrolmentFace(analysis, 'two.jpg'), {
    message: /2 faces of similar size and quality/,
  });
});

test('true profiles are either analysed with a large yaw or rejected with a reason', async (t) => {
  if (!hasData(t)) return;
  const rows = readFileSync(dataPath('pointing04_headpose', 'labels.csv'), 'utf8')
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => l.split(','))
    .filter((r) => (r[4] === '90' || r[4] === '-90') && r[3] === '0');
  t.true(rows.length >= 10);

  let rejected = 0;
  for (const r of rows.slice(0, 12)) {
    const { analysis } = await engine.analyseFile(dataPath('pointing04_headpose', r[0]));
    for (const face of analysis.faces) {
      t.true(Math.abs(face.pose.yaw) >= 40, `${r[0]} pan ${r[4]}: yaw ${face.pose.yaw}`);
      t.is(Math.sign(face.pose.yaw), Math.sign(Number(r[4])));
    }
    if (analysis.faces.length === 0) {
      rejected++;
      t.regex(noFaceReason(analysis), /no face detected|mesh score/);
    }
  }
  t.log(`${rejected} of 12 profile photos had no usable face`);
});

test('most masked faces (mfr2) are found, and every unmasked one', async (t) => {
  if (!hasData(t)) return;
  const rows = readFileSync(dataPath('mfr2_masked', 'labels.csv'), 'utf8')
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => l.split(','))
    .slice(0, 60);
  const found = { masked: [0, 0], unmasked: [0, 0] };
  await Promise.all(
    rows.map(async ([file, , mask]) => {
      const { analysis } = await engine.analyseFile(dataPath('mfr2_masked', file));
      const bucket = mask === 'no-mask' ? found.unmasked : found.masked;
      bucket[1]++;
      if (analysis.faces.length > 0) bucket[0]++;
    }),
  );
  t.log(
    `masked ${found.masked[0]}/${found.masked[1]}, unmasked ${found.unmasked[0]}/${found.unmasked[1]}`,
  );
  t.is(found.unmasked[0], found.unmasked[1]);
  t.true(found.masked[0] / found.masked[1] >= 0.7);
});

test('the same image gives the same answer alone and inside a mixed batch', async (t) => {
  if (!hasData(t)) return;
  const photo = lfw('Alvaro_Uribe', 2);
  const alone = await engine.analyseBuffer(photo, 'alone.jpg');
  const batch = await Promise.all([
    engine.analyseBuffer(await noFacePhoto(), 'noface.jpg'),
    engine.analyseBuffer(await sideBySide(lfw('Alvaro_Uribe', 3), lfw('Abdullah_Gul', 3)), 'two'),
    engine.analyseBuffer(photo, 'again.jpg'),
    engine.analyseBuffer(lfw('Abdullah_Gul', 2), 'other.jpg'),
  ]);

  t.is(batch[0].analysis.faces.length, 0);
  t.is(batch[1].analysis.faces.length, 2);
  t.deepEqual(batch[2].analysis.faces[0].fused, alone.analysis.faces[0].fused);
  t.deepEqual(batch[2].analysis.faces[0].detection, alone.analysis.faces[0].detection);
});

test('bad files are refused with their code and the engine keeps working', async (t) => {
  const cases: [Buffer, ErrorCode][] = [
    [Buffer.alloc(0), 'empty_file'],
    [Buffer.from('just some text, named like a photo'), 'not_an_image'],
  ];
  for (const [bytes, code] of cases) {
    const e = await t.throwsAsync(engine.analyseBuffer(bytes, 'bad.jpg'), {
      instanceOf: ReidbError,
    });
    t.is(e?.code, code);
    t.regex(e!.message, /bad\.jpg/);
  }
  const { analysis } = await engine.analyseBuffer(await noFacePhoto(), 'still-alive.jpg');
  t.is(analysis.width, 320);
});
