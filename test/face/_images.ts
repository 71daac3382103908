/** Test-only image helpers: decode with sharp and make synthetic images. */
import sharp, { type Sharp } from 'sharp';

import type { RgbImage } from '../../src/types.ts';

export async function fromSharp(image: Sharp): Promise<RgbImage> {
  const { data, info } = await image
    .removeAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height, channels: 3 };
}

export function loadImage(file: string): Promise<RgbImage> {
  return fromSharp(sharp(file));
}

/** Two images of the same height side by side. */
export async function sideBySide(left: string, right: string): Promise<RgbImage> {
  const a = await sharp(left).metadata();
  const b = await sharp(right).metadata();
  const width = (a.width ?? 0) + (b.width ?? 0);
  const height = Math.max(a.height ?? 0, b.height ?? 0);
  const canvas = sharp({ create: { width, height, channels: 3, background: '#000000' } }).composite(
    [
      { input: left, left: 0, top: 0 },
      { input: right, left: a.width ?? 0, top: 0 },
    ],
  );
  return fromSharp(sharp(await canvas.png().toBuffer()));
}

/** Flat grey, uniform noise and a diagonal gradient, none of which holds a face. */
export function nonFaceImages(width: number, height: number): RgbImage[] {
  const flat = new Uint8Array(width * height * 3).fill(128);
  const noise = new Uint8Array(width * height * 3);
  let s = 12345;
  for (let i = 0; i < noise.length; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    noise[i] = s >>> 24;
  }
  const gradient = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      gradient[o] = Math.round((255 * x) / width);
      gradient[o + 1] = Math.round((255 * y) / height);
      gradient[o + 2] = Math.round((255 * (x + y)) / (width + height));
    }
  }
  return [flat, noise, gradient].map((data) => ({ data, width, height, channels: 3 as const }));
}
