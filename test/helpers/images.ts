import { readFileSync } from 'node:fs';

import sharp from 'sharp';

import { dataPath } from './data.ts';

/** Bytes of a real LFW photo, e.g. lfw('Aaron_Peirsol', 1). */
export function lfw(name: string, n: number): Buffer {
  return readFileSync(dataPath('lfw_multi', name, `${name}_${String(n).padStart(4, '0')}.jpg`));
}

/** A photo with no face: a smooth colour gradient with some noise, as a JPEG. */
export async function noFacePhoto(width = 320, height = 240): Promise<Buffer> {
  const data = Buffer.alloc(width * height * 3);
  let seed = 7;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      const n = (seed % 21) - 10;
      const i = (y * width + x) * 3;
      data[i] = Math.max(0, Math.min(255, (x * 255) / width + n));
      data[i + 1] = Math.max(0, Math.min(255, (y * 255) / height + n));
      data[i + 2] = 120 + n;
    }
  }
  return sharp(data, { raw: { width, height, channels: 3 } })
    .jpeg()
    .toBuffer();
}

/** Two photos side by side on one canvas (the second scaled to `secondScale`), as a JPEG. */
export async function sideBySide(a: Buffer, b: Buffer, secondScale = 1): Promise<Buffer> {
  const ma = await sharp(a).metadata();
  const bw = Math.round((ma.width ?? 250) * secondScale);
  const bScaled = await sharp(b).resize(bw).toBuffer();
  const mb = await sharp(bScaled).metadata();
  const width = (ma.width ?? 250) + (mb.width ?? bw);
  const height = Math.max(ma.height ?? 250, mb.height ?? bw);
  return sharp({ create: { width, height, channels: 3, background: { r: 128, g: 128, b: 128 } } })
    .composite([
      { input: a, left: 0, top: 0 },
      { input: bScaled, left: ma.width ?? 250, top: 0 },
    ])
    .jpeg()
    .toBuffer();
}
