import test from 'ava';

import { alignmentTransform, applyAffine } from '../../src/face/align.ts';
import { createFaceDetector } from '../../src/face/detector.ts';
import { createFaceMesher, DEFAULT_MIN_MESH_SCORE } from '../../src/face/mesh.ts';
import { estimateHeadPose } from '../../src/face/pose.ts';
import { templatePoints, ALIGN_LANDMARKS } from '../../src/face/template.ts';
import { tf } from '../../src/tf/runtime.ts';
import type { FaceMesh, Point2 } from '../../src/types.ts';
import { dataPath, hasData } from '../helpers/data.ts';
import { fromSharp, loadImage, nonFaceImages } from './_images.ts';

const LFW = ['Ernie_Els/Ernie_Els_0001.jpg', 'Rob_Lowe/Rob_Lowe_0001.jpg'];
/** Outer eye corners: subject's right (image left) and left. */
const RIGHT_EYE = 33;
const LEFT_EYE = 263;

function point(mesh: FaceMesh, k: number): Point2 {
  return [mesh.landmarks[k * 3], mesh.landmarks[k * 3 + 1]];
}

test.serial(
  'mesh landmarks lie in the (enlarged) detection box, eyes left/right consistent',
  async (t) => {
    if (!hasData(t)) return;
    const detector = await createFaceDetector({ backend: 'wasm' });
    const mesher = await createFaceMesher({ backend: 'wasm' });
    try {
      for (const file of LFW) {
        const image = await loadImage(dataPath('lfw_multi', file));
        const [face] = await detector.detect(image);
        const mesh = await mesher.estimate(image, face);
        t.is(mesh.landmarks.length, 468 * 3);
        t.true(mesh.score > 0.9, `${file}: mesh score ${mesh.score}`);

        // Box enlarged by 20 % each side: the mesh includes forehead and jaw outside BlazeFace's box.
        const { x, y, width, height } = face.box;
        let inside = 0;
        for (let k = 0; k < 468; k++) {
          const [px, py] = point(mesh, k);
          const ok =
            px >= x - 0.2 * width &&
            px <= x + 1.2 * width &&
            py >= y - 0.2 * height &&
            py <= y + 1.2 * height;
          if (ok) inside++;
        }
        t.true(inside / 468 > 0.95, `${file}: ${inside} of 468 inside`);

        // Mesh eyes agree with the detector's eye keypoints (0 = right eye, 1 = left eye).
        const right = point(mesh, RIGHT_EYE);
        const left = point(mesh, LEFT_EYE);
        t.true(right[0] < left[0], file);
        const dist = (a: Point2, b: Point2): number => Math.hypot(a[0] - b[0], a[1] - b[1]);
        t.true(dist(right, face.keypoints[0]) < dist(right, face.keypoints[1]), file);
        t.true(dist(left, face.keypoints[1]) < dist(left, face.keypoints[0]), file);
      }
    } finally {
      detector.close();
      mesher.close();
    }
  },
);

test.serial(
  'mesh score of non-face crops is below DEFAULT_MIN_MESH_SCORE; no tensor leak',
  async (t) => {
    const mesher = await createFaceMesher({ backend: 'wasm' });
    try {
      const detection = {
        box: { x: 50, y: 40, width: 100, height: 100 },
        keypoints: [
          [80, 80],
          [120, 80],
        ] as Point2[],
        score: 0.9,
      };
      const images = nonFaceImages(200, 200);
      await mesher.estimate(images[0], detection);
      const before = tf.memory().numTensors;
      for (const image of images) {
        const mesh = await mesher.estimate(image, detection);
        t.true(mesh.score < DEFAULT_MIN_MESH_SCORE, `score ${mesh.score}`);
      }
      t.is(tf.memory().numTensors, before);
    } finally {
      mesher.close();
    }
  },
);

test.serial(
  'a face rolled by 25 degrees aligns with its eyes at the template positions',
  async (t) => {
    if (!hasData(t)) return;
    const { default: sharp } = await import('sharp');
    const detector = await createFaceDetector({ backend: 'wasm' });
    const mesher = await createFaceMesher({ backend: 'wasm' });
    try {
      const file = dataPath('lfw_multi', LFW[0]);
      const size = 150;
      const target = templatePoints(size);
      const slot = (k: number): number => ALIGN_LANDMARKS.indexOf(k);

      const eyesAfterAlign = async (image: Awaited<ReturnType<typeof loadImage>>) => {
        const [face] = await detector.detect(image);
        const mesh = await mesher.estimate(image, face);
        const toCrop = alignmentTransform(face, mesh, 'mesh', size);
        return {
          pose: estimateHeadPose(mesh),
          right: applyAffine(toCrop, point(mesh, RIGHT_EYE)),
          left: applyAffine(toCrop, point(mesh, LEFT_EYE)),
        };
      };

      const upright = await eyesAfterAlign(await loadImage(file));
      const rolled = await eyesAfterAlign(
        await fromSharp(sharp(file).rotate(25, { background: '#000000' })),
      );

      // sharp rotates clockwise, so the eye line turns clockwise by 25 degrees.
      t.true(Math.abs(rolled.pose.roll - upright.pose.roll - 25) < 5, `roll ${rolled.pose.roll}`);
      for (const [name, k] of [
        ['right', RIGHT_EYE],
        ['left', LEFT_EYE],
      ] as const) {
        const got = rolled[name];
        const want = target[slot(k)];
        const err = Math.hypot(got[0] - want[0], got[1] - want[1]);
        t.true(err < 6, `${name} eye ${got} vs template ${want}: ${err.toFixed(1)} px`);
        const drift = Math.hypot(got[0] - upright[name][0], got[1] - upright[name][1]);
        t.true(drift < 3, `${name} eye moves ${drift.toFixed(1)} px between upright and rolled`);
      }
    } finally {
      detector.close();
      mesher.close();
    }
  },
);
