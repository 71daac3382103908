import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import test from 'ava';
import sharp from 'sharp';

import { createFaceDetector } from '../../src/face/detector.ts';
import { createFaceMesher } from '../../src/face/mesh.ts';
import { decodeImage } from '../../src/image/decode.ts';
import {
  composeAffine,
  flipHorizontal,
  flipTransform,
  randomAugmentation,
  rotate,
  rotationTransform,
  seededRandom,
  syntheticOcclusionLevels,
  transformLandmarks,
} from '../../src/train/augment.ts';
import { writeContactSheet } from '../../src/train/contact-sheet.ts';
import { boxCoverage, drawMask, drawSunglasses, occludePatch } from '../../src/train/occlusion.ts';
import type { Box, Detection, FaceMesh, RgbImage } from '../../src/types.ts';
import { dataPath, hasData } from '../helpers/data.ts';

const FACES = [
  'Ernie_Els/Ernie_Els_0001.jpg',
  'Al_Gore/Al_Gore_0001.jpg',
  'Rob_Lowe/Rob_Lowe_0001.jpg',
  'Abdullah_Gul/Abdullah_Gul_0001.jpg',
];
/** Mouth corners, lip centres (13, 14, 0, 17) and nose tip (1, 4), MediaPipe indices. */
const MOUTH_AND_NOSE = [61, 291, 13, 14, 0, 17, 1, 4];
/** Eye corners and lid centres of both eyes. */
const EYES = [33, 133, 159, 145, 263, 362, 386, 374];
const MOUTH = [61, 291, 13, 14, 0, 17];

interface Face {
  file: string;
  image: RgbImage;
  detection: Detection;
  mesh: FaceMesh;
}

/** Detector and mesher run once for all tests here (they are the slow part). */
let faces: Promise<Face[]> | null = null;
function loadFaces(): Promise<Face[]> {
  faces ??= (async () => {
    const detector = await createFaceDetector({ backend: 'wasm' });
    const mesher = await createFaceMesher({ backend: 'wasm' });
    try {
      const out: Face[] = [];
      for (const file of FACES) {
        const image = await decodeImage(dataPath('lfw_multi', file));
        const [detection] = await detector.detect(image);
        out.push({ file, image, detection, mesh: await mesher.estimate(image, detection) });
      }
      return out;
    } finally {
      detector.close();
      mesher.close();
    }
  })();
  return faces;
}

/** Whether the mask marks the pixel under landmark k. */
function covers(mask: Uint8Array, width: number, mesh: FaceMesh, k: number): boolean {
  const x = Math.floor(mesh.landmarks[k * 3]);
  const y = Math.floor(mesh.landmarks[k * 3 + 1]);
  return mask[y * width + x] === 1;
}

test.serial('drawMask covers the mouth and nose tip but not the eyes', async (t) => {
  if (!hasData(t)) return;
  for (const { file, image, detection, mesh } of await loadFaces()) {
    for (const style of ['surgical', 'cloth'] as const) {
      const { mask } = drawMask(image, mesh, { style });
      for (const k of MOUTH_AND_NOSE)
        t.true(covers(mask, image.width, mesh, k), `${file} ${style}: ${k}`);
      for (const k of EYES)
        t.false(covers(mask, image.width, mesh, k), `${file} ${style}: eye ${k}`);
    }
    const share = boxCoverage(drawMask(image, mesh).mask, image.width, detection.box);
    t.log(`${file}: mask covers ${(share * 100).toFixed(1)} % of the detection box`);
    t.true(share > 0.3 && share < 0.7, `${file}: ${share}`);
  }
});

test.serial('drawSunglasses covers the eyes but not the mouth', async (t) => {
  if (!hasData(t)) return;
  for (const { file, image, detection, mesh } of await loadFaces()) {
    const { mask } = drawSunglasses(image, mesh);
    for (const k of EYES) t.true(covers(mask, image.width, mesh, k), `${file}: eye ${k}`);
    for (const k of [...MOUTH, 1]) t.false(covers(mask, image.width, mesh, k), `${file}: ${k}`);
    const share = boxCoverage(mask, image.width, detection.box);
    t.log(`${file}: sunglasses cover ${(share * 100).toFixed(1)} % of the detection box`);
    t.true(share > 0.05 && share < 0.25, `${file}: ${share}`);
  }
});

test.serial('mesh-guided occluders still land on the face after rotation and flip', async (t) => {
  if (!hasData(t)) return;
  for (const { file, image, mesh } of await loadFaces()) {
    const { width, height } = image;
    const turned = flipHorizontal(rotate(image, 15));
    const affine = composeAffine(flipTransform(width), rotationTransform(width, height, 15));
    const moved = transformLandmarks(mesh, affine);
    const masked = drawMask(turned, moved).mask;
    const glasses = drawSunglasses(turned, moved).mask;
    for (const k of MOUTH_AND_NOSE) t.true(covers(masked, width, moved, k), `${file}: mask ${k}`);
    for (const k of EYES) t.false(covers(masked, width, moved, k), `${file}: mask on eye ${k}`);
    for (const k of EYES) t.true(covers(glasses, width, moved, k), `${file}: glasses ${k}`);
  }
});

test.serial(
  'Poisson-blended patches on real faces meet their border better than alpha ones',
  async (t) => {
    if (!hasData(t)) return;
    let alphaJump = 0;
    let poissonJump = 0;
    for (const { image, detection } of await loadFaces()) {
      for (let seed = 1; seed <= 3; seed++) {
        const paste = occludePatch(image, detection.box, 0.3, seededRandom(seed), { feather: 0 });
        const clone = occludePatch(image, detection.box, 0.3, seededRandom(seed), {
          blend: 'poisson',
        });
        alphaJump += borderJump(paste.image, paste.region);
        poissonJump += borderJump(clone.image, clone.region);
      }
    }
    const mean = (sum: number): string => (sum / 12).toFixed(1);
    t.log(
      `mean border jump over 12 patches: paste ${mean(alphaJump)}, Poisson ${mean(poissonJump)}`,
    );
    t.true(poissonJump < 0.5 * alphaJump);
  },
);

test.serial(
  'a contact sheet of augmentations of one face is a PNG of the expected size',
  async (t) => {
    if (!hasData(t)) return;
    const [{ image, detection, mesh }] = await loadFaces();
    const entries = [{ image, label: 'original' }];
    for (let seed = 1; seed <= 9; seed++) {
      const options = { patchProbability: 0.3, maskProbability: 0.3 };
      const result = randomAugmentation(image, mesh, seededRandom(seed), options);
      entries.push({ image: result.image, label: result.applied.join(',') || 'none' });
    }
    for (const level of syntheticOcclusionLevels(image, detection.box, seededRandom(1)).slice(1)) {
      entries.push({ image: level.image, label: `occlusion ${level.level}` });
    }

    const dir = await mkdtemp(path.join(tmpdir(), 'reidb-augment-'));
    try {
      const file = path.join(dir, 'sheet.png');
      const info = await writeContactSheet(entries, file, { columns: 5 });
      // 13 cells of 150 x 150 in 5 columns: 3 rows, 4-pixel gaps, 14-pixel captions.
      t.deepEqual(info, { width: 5 * 150 + 6 * 4, height: 3 * (150 + 14) + 4 * 4 });
      const bytes = await readFile(file);
      t.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      const meta = await sharp(bytes).metadata();
      t.is(meta.format, 'png');
      t.is(meta.width, info.width);
      t.is(meta.height, info.height);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);

/** Mean |inside - outside| over pixel pairs across a patch's border, all channels. */
function borderJump(image: RgbImage, region: Box): number {
  let sum = 0;
  let count = 0;
  const at = (x: number, y: number, c: number): number => image.data[(y * image.width + x) * 3 + c];
  const add = (xa: number, ya: number, xb: number, yb: number): void => {
    if (xb < 0 || yb < 0 || xb >= image.width || yb >= image.height) return;
    for (let c = 0; c < 3; c++) sum += Math.abs(at(xa, ya, c) - at(xb, yb, c));
    count += 3;
  };
  const { x, y, width, height } = region;
  for (let i = x; i < x + width; i++) {
    add(i, y, i, y - 1);
    add(i, y + height - 1, i, y + height);
  }
  for (let j = y; j < y + height; j++) {
    add(x, j, x - 1, j);
    add(x + width - 1, j, x + width, j);
  }
  return sum / count;
}
