import test from 'ava';

import { cmcAndMap } from '../../src/bench/metrics.ts';
import { buildFusionInput, forwardGatedFusion } from '../../src/features/gated-fusion.ts';
import { tf } from '../../src/tf/runtime.ts';
import { trainGatedFusion, type TrainOptions } from '../../src/train/train.ts';
import { syntheticCache, TINY_SIZES } from './_synthetic.ts';

// 20 identities x 6 faces; appearance noise high enough that appearance alone is imperfect.
const cache = syntheticCache({ identities: 20, facesPerIdentity: 6, appearanceNoise: 1.2 });
const small: TrainOptions = { sizes: TINY_SIZES, p: 4, k: 4, lr: 3e-3, valShare: 0.3 };

test.serial('the loss falls, val mAP beats the untrained network, no tensor leaks', async (t) => {
  const counts: number[] = [];
  await trainGatedFusion(cache, { ...small, epochs: 1 }); // backend initialised before counting
  const before = tf.memory().numTensors;
  const result = await trainGatedFusion(cache, {
    ...small,
    epochs: 25,
    patience: 25,
    onProgress: () => counts.push(tf.memory().numTensors),
  });

  const first = result.history[0].total;
  const last = result.history.slice(-5).reduce((s, r) => s + r.total, 0) / 5;
  t.true(last < first, `loss ${first} -> ${last}`);
  t.true(result.best.epoch > 0, 'an epoch beat the untrained network');
  const { initial, best } = result;
  t.true(best.valMAP > initial.valMAP, `${initial.valMAP} -> ${best.valMAP}`);
  t.true(
    counts.every((n) => n === counts[0]),
    `tensors per epoch: ${counts.join(' ')}`,
  );
  t.is(tf.memory().numTensors, before);
  t.true(result.secondsPerEpoch > 0);
});

test.serial('same data and seed give identical parameters; another seed other ones', async (t) => {
  const run = (seed: number) => trainGatedFusion(cache, { ...small, epochs: 3, seed, patience: 3 });
  const [a, b, c] = [await run(4), await run(4), await run(5)];
  t.deepEqual(a.params, b.params);
  t.deepEqual(
    a.history.map((h) => h.total),
    b.history.map((h) => h.total),
  );
  t.notDeepEqual(a.params.fc1.weight, c.params.fc1.weight);
});

test.serial('the returned parameters score as validated with the JS forward pass', async (t) => {
  const result = await trainGatedFusion(cache, { ...small, epochs: 4, patience: 4 });
  const { params, split } = result;
  const embeddings = split.val.map((i) =>
    forwardGatedFusion(
      params,
      buildFusionInput(params, cache.faces[i].appearance, cache.faces[i].geometry),
    ),
  );
  const similarity = embeddings.map((a) =>
    embeddings.map((b) => a.reduce((s, v, j) => s + v * b[j], 0)),
  );
  const items = split.val.map((i) => ({ pid: cache.faces[i].identity }));
  const { mAP } = cmcAndMap(items, items, similarity, {
    excludeSameCamera: false,
    ranks: [1],
    excludeSelf: items.map((_, i) => i),
  });
  t.true(Math.abs(mAP - result.best.valMAP) < 1e-4, `${mAP} vs ${result.best.valMAP}`);
});

test.serial('header and split describe the run', async (t) => {
  const result = await trainGatedFusion(cache, { ...small, epochs: 2, data: ['synthetic'] });
  const { header, split } = result;
  t.is(header.format, 'reidb-gated-fusion');
  t.is(header.embedderId, 'synthetic');
  t.is(header.inputDim, 22);
  t.is(header.outputDim, TINY_SIZES.output);
  t.deepEqual(header.training.data, ['synthetic']);
  t.is(header.training.trainIdentities + header.training.valIdentities, 20);
  t.is(header.training.valFaces, split.val.length);
  t.is(header.training.epochs, 2);
  t.deepEqual(header.training.loss, { triplet: 0.7, ce: 0.3 });
  t.is(header.metrics.valMAP, result.best.valMAP);
  t.is(header.metrics.appearanceValMAP, result.appearanceOnly.valMAP);
});

test.serial('early stopping keeps the best epoch', async (t) => {
  const result = await trainGatedFusion(cache, { ...small, epochs: 40, patience: 2, lr: 0.05 });
  const last = result.history.at(-1)!.epoch;
  t.true(last - result.best.epoch === 2 || last === 40);
  const bestMAP = Math.max(result.initial.valMAP, ...result.history.map((h) => h.valMAP));
  t.is(result.best.valMAP, bestMAP);
});

test.serial('SGD with step decay runs and divides the lr by 10 at 40 % and 80 %', async (t) => {
  const result = await trainGatedFusion(cache, {
    ...small,
    optimiser: 'sgd',
    lr: 0.01,
    epochs: 5,
    patience: 5,
  });
  t.deepEqual(
    result.history.map((h) => Number(h.lr.toPrecision(6))),
    [0.01, 0.01, 0.001, 0.001, 0.0001],
  );
  t.true(result.history.every((h) => Number.isFinite(h.total)));
  t.is(result.header.training.optimiser, 'sgd');
});

test.serial('bad options and untrainable caches are invalid_argument', async (t) => {
  await t.throwsAsync(trainGatedFusion(cache, { ...small, optimiser: 'adam' as 'sgd' }), {
    message: /optimiser/,
  });
  await t.throwsAsync(trainGatedFusion(cache, { ...small, valShare: 0 }), { message: /valShare/ });
  await t.throwsAsync(trainGatedFusion(cache, { ...small, epochs: 0 }), { message: /epochs/ });
  const tiny = syntheticCache({ identities: 2, facesPerIdentity: 3 });
  await t.throwsAsync(trainGatedFusion(tiny, small), { message: />= 2 identities/ });
});
