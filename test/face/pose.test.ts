import test from 'ava';

import { createFaceDetector } from '../../src/face/detector.ts';
import { createFaceMesher } from '../../src/face/mesh.ts';
import { estimateHeadPose } from '../../src/face/pose.ts';
import { dataPath, hasData } from '../helpers/data.ts';
import { loadImage } from './_images.ts';

/** person_04 and person_07 at tilt 0 (labels.csv): pan -45, 0 and +45 degrees. */
const CASES: { file: string; pan: number }[] = [
  { file: 'person_04/face_2231.jpg', pan: -45 },
  { file: 'person_04/face_1331.jpg', pan: 0 },
  { file: 'person_04/face_1861.jpg', pan: 45 },
  { file: 'person_04/face_2743.jpg', pan: -45 },
  { file: 'person_04/face_2502.jpg', pan: 0 },
  { file: 'person_04/face_802.jpg', pan: 45 },
];

test.serial('yaw follows pointing04 pan: sign right, magnitude within 15 degrees', async (t) => {
  if (!hasData(t)) return;
  const detector = await createFaceDetector({ backend: 'wasm' });
  const mesher = await createFaceMesher({ backend: 'wasm' });
  try {
    for (const { file, pan } of CASES) {
      const image = await loadImage(dataPath('pointing04_headpose', file));
      const [face] = await detector.detect(image);
      t.truthy(face, file);
      const pose = estimateHeadPose(await mesher.estimate(image, face));
      t.log(`${file}: pan ${pan}, yaw ${pose.yaw.toFixed(1)}, pitch ${pose.pitch.toFixed(1)}`);
      if (pan !== 0) t.is(Math.sign(pose.yaw), Math.sign(pan), file);
      t.true(Math.abs(pose.yaw - pan) < 15, `${file}: yaw ${pose.yaw} for pan ${pan}`);
      t.true(Math.abs(pose.pitch) < 15, `${file}: pitch ${pose.pitch} at tilt 0`);
      t.true(Math.abs(pose.roll) < 15, `${file}: roll ${pose.roll}`);
    }
  } finally {
    detector.close();
    mesher.close();
  }
});

test.serial('estimateHeadPose reads a synthetic turned mesh exactly', (t) => {
  // Points of a flat-ish face model turned by 30 degrees yaw towards the image's left edge.
  const model: Record<number, [number, number, number]> = {
    33: [-30, -10, 5],
    263: [30, -10, 5],
    133: [-12, -10, 3],
    362: [12, -10, 3],
    61: [-18, 25, 4],
    291: [18, 25, 4],
    234: [-45, 0, 25],
    454: [45, 0, 25],
    10: [0, -50, 8],
    152: [0, 55, 8],
  };
  const yaw = (30 * Math.PI) / 180;
  const landmarks = new Float32Array(468 * 3);
  for (const [k, [x, y, z]] of Object.entries(model)) {
    // Turning towards the image's left: the nose (z < 0, towards the camera) moves to -x.
    const i = Number(k);
    landmarks[i * 3] = 100 + x * Math.cos(yaw) + z * Math.sin(yaw);
    landmarks[i * 3 + 1] = 100 + y;
    landmarks[i * 3 + 2] = -x * Math.sin(yaw) + z * Math.cos(yaw);
  }
  const pose = estimateHeadPose({ landmarks, score: 1 });
  t.true(Math.abs(pose.yaw - 30) < 0.5, `yaw ${pose.yaw}`);
  t.true(Math.abs(pose.roll) < 0.5, `roll ${pose.roll}`);
});
