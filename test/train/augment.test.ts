import test from 'ava';

import {
  flipHorizontal,
  flipTransform,
  gaussianNoise,
  hsvJitter,
  motionBlur,
  randomAugmentation,
  rotate,
  rotationTransform,
  scale,
  scaleTransform,
  seededRandom,
  syntheticOcclusionLevels,
  transformLandmarks,
} from '../../src/train/augment.ts';
import { boxCoverage, occludePatch } from '../../src/train/occlusion.ts';
import type { Box, FaceMesh, RgbImage } from '../../src/types.ts';

function blank(width: number, height: number, value = 0): RgbImage {
  return { data: new Uint8Array(width * height * 3).fill(value), width, height, channels: 3 };
}

/** Random colours, seeded. */
function randomImage(width: number, height: number, seed: number): RgbImage {
  const random = seededRandom(seed);
  const image = blank(width, height);
  for (let k = 0; k < image.data.length; k++) image.data[k] = Math.floor(random() * 256);
  return image;
}

/** Smooth texture around `level`, so that patches have something to be compared with. */
function texturedImage(
  width: number,
  height: number,
  level: (x: number, y: number) => number,
): RgbImage {
  const image = blank(width, height);
  for (let j = 0; j < height; j++) {
    for (let i = 0; i < width; i++) {
      const base = level(i, j) + 12 * Math.sin(i * 0.7) * Math.cos(j * 0.5);
      for (let c = 0; c < 3; c++) image.data[(j * width + i) * 3 + c] = Math.round(base + 5 * c);
    }
  }
  return image;
}

function pixel(image: RgbImage, x: number, y: number): number[] {
  const o = (y * image.width + x) * 3;
  return [image.data[o], image.data[o + 1], image.data[o + 2]];
}

function setPixel(image: RgbImage, x: number, y: number, rgb: number[]): void {
  image.data.set(rgb, (y * image.width + x) * 3);
}

/** A one-landmark "mesh" at the centre of pixel (x, y). */
function meshAt(x: number, y: number): FaceMesh {
  return { landmarks: new Float32Array([x + 0.5, y + 0.5, 2]), score: 1 };
}

function std(values: number[]): number {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
}

test('rotate by 0 degrees is the identity', (t) => {
  const image = randomImage(23, 17, 1);
  t.deepEqual(rotate(image, 0).data, image.data);
});

test('rotate by 90 degrees moves a marked pixel a quarter turn clockwise, landmarks with it', (t) => {
  const n = 9;
  const image = blank(n, n, 10);
  setPixel(image, 1, 2, [250, 20, 30]);
  setPixel(image, 6, 1, [0, 200, 0]);

  // Clockwise on screen: pixel (i, j) goes to (n - 1 - j, i).
  const turned = rotate(image, 90);
  t.deepEqual(pixel(turned, n - 1 - 2, 1), [250, 20, 30]);
  t.deepEqual(pixel(turned, n - 1 - 1, 6), [0, 200, 0]);
  t.deepEqual(pixel(turned, 1, 2), [10, 10, 10]);

  const moved = transformLandmarks(meshAt(1, 2), rotationTransform(n, n, 90));
  t.true(Math.abs(moved.landmarks[0] - (n - 1 - 2 + 0.5)) < 1e-4);
  t.true(Math.abs(moved.landmarks[1] - (1 + 0.5)) < 1e-4);
  t.true(Math.abs(moved.landmarks[2] - 2) < 1e-6, 'a rotation keeps z');
});

test('flip twice is the identity and landmarks follow the flipped pixel', (t) => {
  const image = randomImage(20, 12, 2);
  const once = flipHorizontal(image);
  t.deepEqual(flipHorizontal(once).data, image.data);
  t.notDeepEqual(once.data, image.data);
  t.deepEqual(pixel(once, 20 - 1 - 3, 5), pixel(image, 3, 5));

  const mesh = meshAt(3, 5);
  const flipped = transformLandmarks(mesh, flipTransform(20));
  t.is(flipped.landmarks[0], 20 - 1 - 3 + 0.5);
  t.is(flipped.landmarks[1], 5.5);
  t.deepEqual(transformLandmarks(flipped, flipTransform(20)).landmarks, mesh.landmarks);
});

test('scale 1 is the identity; scale 2 keeps the centre and doubles distances from it', (t) => {
  const image = randomImage(16, 16, 3);
  t.deepEqual(scale(image, 1).data, image.data);

  const mesh: FaceMesh = { landmarks: new Float32Array([8, 8, 1, 10, 7, 1]), score: 1 };
  const moved = transformLandmarks(mesh, scaleTransform(16, 16, 2));
  t.deepEqual([...moved.landmarks], [8, 8, 2, 12, 6, 2]);
});

test('noise with sigma 0 is the identity; sigma 0.03 has a standard deviation of 0.03 x 255', (t) => {
  const grey = blank(64, 64, 128);
  t.deepEqual(gaussianNoise(grey, 0, seededRandom(1)).data, grey.data);

  const noisy = gaussianNoise(grey, 0.03, seededRandom(2));
  const measured = std([...noisy.data]);
  const expected = 0.03 * 255;
  t.true(
    Math.abs(measured - expected) / expected < 0.15,
    `std ${measured.toFixed(2)} vs ${expected}`,
  );
});

test('motion blur keeps a constant image and spreads one bright pixel over a line of k pixels', (t) => {
  const flat = blank(12, 10, 90);
  for (const angle of [0, 30, 90, 135]) t.deepEqual(motionBlur(flat, 5, angle).data, flat.data);

  const dot = blank(15, 15);
  setPixel(dot, 7, 7, [255, 255, 255]);
  const horizontal = motionBlur(dot, 5, 0);
  const lit = (image: RgbImage): [number, number][] => {
    const out: [number, number][] = [];
    for (let y = 0; y < 15; y++) {
      for (let x = 0; x < 15; x++) if (pixel(image, x, y)[0] > 0) out.push([x, y]);
    }
    return out;
  };
  t.deepEqual(lit(horizontal), [
    [5, 7],
    [6, 7],
    [7, 7],
    [8, 7],
    [9, 7],
  ]);
  t.deepEqual(pixel(horizontal, 5, 7), [51, 51, 51]);
  t.deepEqual(lit(motionBlur(dot, 5, 90)), [
    [7, 5],
    [7, 6],
    [7, 7],
    [7, 8],
    [7, 9],
  ]);
  t.throws(() => motionBlur(dot, 4, 0), { message: /odd/ });
});

test('HSV jitter with neutral parameters is the identity; value 0.5 halves a grey', (t) => {
  const image = randomImage(40, 30, 4);
  t.deepEqual(hsvJitter(image, { hue: 0, saturation: 1, value: 1 }).data, image.data);
  t.deepEqual(hsvJitter(image, { hue: 360 }).data, image.data);
  t.deepEqual(pixel(hsvJitter(blank(2, 2, 200), { value: 0.5 }), 0, 0), [100, 100, 100]);

  // A hue shift of 120 degrees turns pure red into pure green.
  const red = blank(1, 1);
  setPixel(red, 0, 0, [255, 0, 0]);
  t.deepEqual(pixel(hsvJitter(red, { hue: 120 }), 0, 0), [0, 255, 0]);
});

test('occludePatch covers 20-40 % of the face box and changes nothing outside its patch', (t) => {
  const image = texturedImage(120, 100, (x) => 60 + x);
  const box: Box = { x: 30.4, y: 20.2, width: 55, height: 60 };
  for (let seed = 1; seed <= 12; seed++) {
    const random = seededRandom(seed);
    const coverage = 0.2 + 0.2 * random();
    const blend = seed % 2 === 0 ? 'poisson' : 'alpha';
    const fill = seed % 3 === 0 ? 'noise' : 'texture';
    const result = occludePatch(image, box, coverage, random, { blend, fill });

    // The patch's share of the box, and the share of box pixels actually changed.
    const share = boxCoverage(result.mask, image.width, box);
    t.true(Math.abs(share - coverage) < 0.01, `seed ${seed}: share ${share} for ${coverage}`);
    let changed = 0;
    let outside = 0;
    for (let k = 0; k < result.mask.length; k++) {
      const differs = [0, 1, 2].some((c) => result.image.data[k * 3 + c] !== image.data[k * 3 + c]);
      if (differs && result.mask[k]) changed++;
      if (differs && !result.mask[k]) outside++;
    }
    const changedShare = changed / (55 * 60);
    t.true(changedShare >= 0.19 && changedShare <= 0.405, `seed ${seed}: changed ${changedShare}`);
    t.is(outside, 0);
  }
});

test('Poisson blending meets the surroundings at the patch border better than a plain paste', (t) => {
  // Dark textured face area, bright textured background on the right: the source.
  const image = texturedImage(140, 80, (x) => (x < 70 ? 60 : 190));
  const box: Box = { x: 5, y: 10, width: 60, height: 60 };
  const options = { sourceAt: [90, 20] as [number, number], fill: 'texture' as const };
  const paste = occludePatch(image, box, 0.3, seededRandom(9), {
    ...options,
    blend: 'alpha',
    feather: 0,
  });
  const poisson = occludePatch(image, box, 0.3, seededRandom(9), { ...options, blend: 'poisson' });
  t.deepEqual(paste.region, poisson.region);

  /** Mean |inside - outside| over pixel pairs across the patch border, all channels. */
  const borderJump = (result: RgbImage, region: Box): number => {
    let sum = 0;
    let count = 0;
    const add = (xa: number, ya: number, xb: number, yb: number): void => {
      if (xb < 0 || yb < 0 || xb >= result.width || yb >= result.height) return;
      for (let c = 0; c < 3; c++)
        sum += Math.abs(pixel(result, xa, ya)[c] - pixel(result, xb, yb)[c]);
      count += 3;
    };
    for (let i = region.x; i < region.x + region.width; i++) {
      add(i, region.y, i, region.y - 1);
      add(i, region.y + region.height - 1, i, region.y + region.height);
    }
    for (let j = region.y; j < region.y + region.height; j++) {
      add(region.x, j, region.x - 1, j);
      add(region.x + region.width - 1, j, region.x + region.width, j);
    }
    return sum / count;
  };

  const pasteJump = borderJump(paste.image, paste.region);
  const poissonJump = borderJump(poisson.image, poisson.region);
  t.log(`border jump: paste ${pasteJump.toFixed(1)}, poisson ${poissonJump.toFixed(1)}`);
  t.true(pasteJump > 100, `paste jump ${pasteJump}`);
  t.true(
    poissonJump < 0.15 * pasteJump,
    `poisson ${poissonJump.toFixed(1)} vs paste ${pasteJump.toFixed(1)}`,
  );

  // The clone keeps the source's texture: its inside still varies like the source does.
  const inside: number[] = [];
  const { x, y, width, height } = poisson.region;
  for (let j = y + 5; j < y + height - 5; j++) {
    for (let i = x + 5; i < x + width - 5; i++) inside.push(pixel(poisson.image, i, j)[0]);
  }
  t.true(std(inside) > 4, `texture std ${std(inside)}`);
});

test('syntheticOcclusionLevels gives nested patches at 0, 20, 40 and 60 % of the box', (t) => {
  const image = texturedImage(100, 100, () => 100);
  const box: Box = { x: 20, y: 15, width: 60, height: 70 };
  const levels = syntheticOcclusionLevels(image, box, seededRandom(3));
  t.deepEqual(
    levels.map((l) => l.level),
    [0, 0.2, 0.4, 0.6],
  );
  t.deepEqual(levels[0].image.data, image.data);
  for (const l of levels)
    t.true(Math.abs(l.coverage - l.level) < 0.01, `${l.level}: ${l.coverage}`);

  // Each level hides what the lower one hid, with the same fill where they overlap.
  for (let n = 2; n < levels.length; n++) {
    for (let k = 0; k < levels[n - 1].mask.length; k++) {
      if (levels[n - 1].mask[k] && !levels[n].mask[k]) {
        t.fail(
          `level ${levels[n].level} leaves pixel ${k} of level ${levels[n - 1].level} uncovered`,
        );
        return;
      }
    }
  }
});

test('randomAugmentation: the same seed gives the same output, another seed another', (t) => {
  const image = texturedImage(64, 64, (x, y) => 80 + x + y);
  const mesh: FaceMesh = { landmarks: new Float32Array([20, 20, 0, 44, 44, 0]), score: 1 };
  const a = randomAugmentation(image, mesh, seededRandom(42));
  const b = randomAugmentation(image, mesh, seededRandom(42));
  t.deepEqual(a.image.data, b.image.data);
  t.deepEqual(a.applied, b.applied);
  t.deepEqual(a.details, b.details);

  const others = [43, 44, 45].map((seed) => randomAugmentation(image, mesh, seededRandom(seed)));
  t.true(others.some((o) => !Buffer.from(o.image.data).equals(Buffer.from(a.image.data))));
});

test('randomAugmentation applies everything asked for, in order, and never a mask without a mesh', (t) => {
  const image = texturedImage(64, 64, (x) => 70 + 2 * x);
  const always = {
    rotationProbability: 1,
    scaleProbability: 1,
    flipProbability: 1,
    noiseProbability: 1,
    blurProbability: 1,
    hsvProbability: 1,
    patchProbability: 0,
    maskProbability: 1,
    sunglassesProbability: 1,
  };
  const result = randomAugmentation(image, null, seededRandom(5), always);
  t.deepEqual(result.applied, ['rotate', 'scale', 'flip', 'hsv', 'blur', 'noise']);
  t.is(result.mesh, null);
  t.true(Math.abs(result.details['rotate.degrees'] as number) <= 20);
  const factor = result.details['scale.factor'] as number;
  t.true(factor >= 0.8 && factor <= 1.2);

  // A patch without a mesh falls on the whole image, at 20-40 %.
  const patched = randomAugmentation(image, null, seededRandom(6), { patchProbability: 1 });
  t.true(patched.applied.includes('patch'));
  const coverage = patched.details['patch.coverage'] as number;
  t.true(coverage >= 0.19 && coverage <= 0.41, `coverage ${coverage}`);
});

test('nothing touches its input', (t) => {
  const image = randomImage(32, 32, 7);
  const copy = new Uint8Array(image.data);
  const random = seededRandom(1);
  rotate(image, 15);
  scale(image, 0.9);
  flipHorizontal(image);
  gaussianNoise(image, 0.03, random);
  motionBlur(image, 5, 45);
  hsvJitter(image, { hue: 20, saturation: 1.2, value: 0.9 });
  occludePatch(image, { x: 4, y: 4, width: 24, height: 24 }, 0.3, random, { blend: 'poisson' });
  randomAugmentation(image, null, random, { patchProbability: 1 });
  t.deepEqual(image.data, copy);
});
