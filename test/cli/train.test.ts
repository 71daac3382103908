import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { readFusionModel } from '../../src/features/fusion-model-file.ts';
import { reidb } from '../helpers/cli.ts';
import { dataPath, hasData } from '../helpers/data.ts';
import { lfw } from '../helpers/images.ts';

test('train writes a model that enrol, search and refuse then use', async (t) => {
  if (!hasData(t)) return;
  const work = mkdtempSync(path.join(os.tmpdir(), 'reidb-train-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));

  const people = readdirSync(dataPath('lfw_multi'))
    .filter((p) => !p.includes('.'))
    .slice(20, 28);
  for (const person of people) {
    mkdirSync(path.join(work, 'people', person), { recursive: true });
    for (const n of [1, 2, 3, 4])
      writeFileSync(path.join(work, 'people', person, `${n}.jpg`), lfw(person, n));
  }
  const model = path.join(work, 'fusion.reidbfus');

  const trained = await reidb([
    'train',
    '--layout',
    'folder',
    path.join(work, 'people'),
    '--out',
    model,
    '--val-share',
    '0.25',
    '--epochs',
    '2',
    '--cache',
    path.join(work, 'features.json'),
  ]);
  t.is(trained.code, 0, trained.stderr);
  t.is(trained.json.model, model);
  t.is(trained.json.trainIdentities + trained.json.valIdentities, 8);
  t.true(trained.json.valMAP > 0 && trained.json.valMAP <= 1);
  t.regex(trained.stderr, /epoch 1\/2: triplet [0-9.]+ ce [0-9.]+ val mAP/);
  t.true(existsSync(`${model}.onnx`));
  t.true(existsSync(path.join(work, 'features.json')));

  const loaded = readFusionModel(model, { embedderId: 'dlib-resnet-v1', appearanceDim: 128 });
  t.is(loaded.header.id, trained.json.id);
  t.is(loaded.header.inputDim, 254);

  const db = path.join(work, 'gallery');
  const enrol = await reidb([
    'enroll',
    '--db',
    db,
    '--layout',
    'folder',
    path.join(work, 'people'),
    '--fusion',
    model,
  ]);
  t.is(enrol.code, 0, enrol.stderr);
  t.is(enrol.json.enrolled, 32);

  // Later commands find the gallery's own copy of the model without --fusion.
  const probe = path.join(work, 'people', people[0], '1.jpg');
  const found = await reidb(['search', '--db', db, probe]);
  t.is(found.code, 0, found.stderr);
  t.is(found.json.faces[0].matches[0].identity, people[0]);

  const refused = await reidb(['refuse', '--db', db, '--fusion', 'concat']);
  t.is(refused.code, 0, refused.stderr);
  t.deepEqual(refused.json, {
    faces: 32,
    fusionId: 'concat-v1:w=0.01',
    previousFusionId: trained.json.id,
  });
  const after = await reidb(['search', '--db', db, probe]);
  t.is(after.json.faces[0].matches[0].identity, people[0]);

  const wrong = await reidb(['search', '--db', db, '--fusion', model, probe]);
  t.is(wrong.code, 1);
  t.is(wrong.json.error.code, 'gallery_mismatch');
});
