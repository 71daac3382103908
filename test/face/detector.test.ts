import test from 'ava';

import { ReidbError } from '../../src/errors.ts';
import { createFaceDetector } from '../../src/face/detector.ts';
import { tf } from '../../src/tf/runtime.ts';
import { dataPath, hasData } from '../helpers/data.ts';
import { loadImage, nonFaceImages, sideBySide } from './_images.ts';

/** LFW images (different people) that hold one clear face and no second one. */
const LFW_SINGLE = [
  'David_Wells/David_Wells_0001.jpg',
  'Kalpana_Chawla/Kalpana_Chawla_0001.jpg',
  'Ernie_Els/Ernie_Els_0001.jpg',
  'Mike_Myers/Mike_Myers_0001.jpg',
  'Rob_Lowe/Rob_Lowe_0001.jpg',
  'Ashanti/Ashanti_0002.jpg',
];

test.serial('finds exactly one face covering the centre of LFW photos', async (t) => {
  if (!hasData(t)) return;
  const detector = await createFaceDetector({ backend: 'wasm' });
  try {
    for (const file of LFW_SINGLE) {
      const image = await loadImage(dataPath('lfw_multi', file));
      const faces = await detector.detect(image);
      t.is(faces.length, 1, file);
      const { box, keypoints, score } = faces[0];
      t.true(score > 0.7, `${file}: score ${score}`);
      t.true(box.x < image.width / 2 && box.x + box.width > image.width / 2, file);
      t.true(box.y < image.height / 2 && box.y + box.height > image.height / 2, file);
      t.true(box.width > image.width * 0.25 && box.width < image.width * 0.8, file);
      t.is(keypoints.length, 6);
      // Keypoint 0 is the subject's right eye, on the image's left.
      t.true(keypoints[0][0] < keypoints[1][0], file);
    }
  } finally {
    detector.close();
  }
});

test.serial('finds faces in small pointing04 photos at moderate pan', async (t) => {
  if (!hasData(t)) return;
  const detector = await createFaceDetector({ backend: 'wasm' });
  try {
    // person_04, tilt 0, pan -45 / 0 / +45 (labels.csv).
    for (const file of ['face_2231.jpg', 'face_1331.jpg', 'face_1861.jpg']) {
      const image = await loadImage(dataPath('pointing04_headpose', 'person_04', file));
      t.is(image.width, 192);
      const faces = await detector.detect(image);
      t.is(faces.length, 1, file);
      t.true(faces[0].box.width > 30, file);
    }
  } finally {
    detector.close();
  }
});

test.serial('finds two faces in two LFW photos side by side, one in each half', async (t) => {
  if (!hasData(t)) return;
  const detector = await createFaceDetector({ backend: 'wasm' });
  try {
    const image = await sideBySide(
      dataPath('lfw_multi', LFW_SINGLE[0]),
      dataPath('lfw_multi', LFW_SINGLE[1]),
    );
    const faces = await detector.detect(image);
    t.is(faces.length, 2);
    t.true(faces[0].score >= faces[1].score);
    const centres = faces.map((f) => f.box.x + f.box.width / 2).sort((a, b) => a - b);
    t.true(centres[0] < image.width / 2 && centres[1] > image.width / 2);
    for (const f of faces) t.true(f.box.x >= 0 && f.box.x + f.box.width <= image.width);
  } finally {
    detector.close();
  }
});

test.serial(
  'finds no face in flat, noise and gradient images, and does not leak tensors',
  async (t) => {
    const detector = await createFaceDetector({ backend: 'wasm' });
    try {
      const images = [...nonFaceImages(200, 150), ...nonFaceImages(640, 480)];
      await detector.detect(images[0]);
      const before = tf.memory().numTensors;
      for (const image of images) t.is((await detector.detect(image)).length, 0);
      t.is(tf.memory().numTensors, before);
    } finally {
      detector.close();
    }
  },
);

test.serial(
  'a large image is reduced before detection and boxes come back in its pixels',
  async (t) => {
    if (!hasData(t)) return;
    const detector = await createFaceDetector({ backend: 'wasm' });
    try {
      const { default: sharp } = await import('sharp');
      const { fromSharp } = await import('./_images.ts');
      const file = dataPath('lfw_multi', LFW_SINGLE[2]);
      const small = (await detector.detect(await loadImage(file)))[0];
      const big = (await detector.detect(await fromSharp(sharp(file).resize(900, 900))))[0];
      t.truthy(big);
      t.true(Math.abs(big.box.x / 6 - small.box.x) < 4, `${big.box.x / 6} vs ${small.box.x}`);
      t.true(Math.abs(big.box.width / 6 - small.box.width) < 4);
    } finally {
      detector.close();
    }
  },
);

test.serial('rejects bad options and a missing model folder, naming the file', async (t) => {
  await t.throwsAsync(createFaceDetector({ backend: 'wasm', minScore: 2 }), {
    instanceOf: ReidbError,
  });
  const error = await t.throwsAsync(
    createFaceDetector({ backend: 'wasm', modelDir: '/nonexistent' }),
    {
      instanceOf: ReidbError,
    },
  );
  t.is(error?.code, 'model_missing');
  t.regex(error?.message ?? '', /blazeface\.(json|bin)/);
});
