/**
 * Contact sheets: many images on one PNG grid with a caption under each, for looking at what the
 * augmentations (src/train/augment.ts) do.
 */

import { mkdir } from 'node:fs/promises';
import path from 'node:path';

import sharp, { type OverlayOptions } from 'sharp';

import { ReidbError } from '../errors.ts';
import type { RgbImage } from '../types.ts';

export interface ContactSheetOptions {
  /** Images per row (default 4). */
  columns?: number;
  /** Cell size in pixels (default: the largest image's width and height); images are fitted in. */
  cell?: { width: number; height: number };
  /** Caption strip height in pixels (default 14; 0 leaves captions out). */
  labelHeight?: number;
  /** Gap between cells, pixels (default 4). */
  gap?: number;
}

/** Size of the written sheet, pixels. */
export interface ContactSheetInfo {
  width: number;
  height: number;
}

/**
 * Writes `images` as a PNG grid to `file` (parent folders are created): `columns` per row, each
 * cell the image fitted (aspect kept) on a grey background, its label as SVG text in a strip
 * below (rendered by sharp's librsvg; truncated to the cell width). Sheet size:
 * columns x cell.width + (columns + 1) x gap wide, rows x (cell.height + labelHeight) +
 * (rows + 1) x gap high.
 */
export async function writeContactSheet(
  images: { image: RgbImage; label: string }[],
  file: string,
  options: ContactSheetOptions = {},
): Promise<ContactSheetInfo> {
  if (images.length === 0) throw new ReidbError('invalid_argument', 'writeContactSheet: no images');
  const columns = options.columns ?? 4;
  if (!(Number.isInteger(columns) && columns >= 1)) {
    throw new ReidbError(
      'invalid_argument',
      `writeContactSheet: columns must be an integer >= 1, got ${columns}`,
    );
  }
  const gap = options.gap ?? 4;
  const labelHeight = options.labelHeight ?? 14;
  const cell = options.cell ?? {
    width: Math.max(...images.map((e) => e.image.width)),
    height: Math.max(...images.map((e) => e.image.height)),
  };

  // Layout.
  const rows = Math.ceil(images.length / columns);
  const width = columns * cell.width + (columns + 1) * gap;
  const height = rows * (cell.height + labelHeight) + (rows + 1) * gap;

  // One thumbnail per cell, and one SVG with every caption.
  const layers: OverlayOptions[] = [];
  const captions: string[] = [];
  for (const [n, { image, label }] of images.entries()) {
    const left = gap + (n % columns) * (cell.width + gap);
    const top = gap + Math.floor(n / columns) * (cell.height + labelHeight + gap);
    const pixels = Buffer.from(image.data.buffer, image.data.byteOffset, image.data.length);
    const raw = { width: image.width, height: image.height, channels: 3 as const };
    const thumbnail = await sharp(pixels, { raw })
      .resize(cell.width, cell.height, { fit: 'contain', background: { r: 96, g: 96, b: 96 } })
      .png()
      .toBuffer();
    layers.push({ input: thumbnail, left, top });
    if (labelHeight > 0 && label) {
      const fontSize = Math.max(6, Math.round(labelHeight * 0.78));
      const maxChars = Math.max(1, Math.floor(cell.width / (fontSize * 0.6)));
      const text = label.length > maxChars ? `${label.slice(0, maxChars - 1)}~` : label;
      captions.push(
        `<text x="${left + cell.width / 2}" y="${top + cell.height + labelHeight - 3}" ` +
          `font-family="DejaVu Sans Mono, monospace" font-size="${fontSize}" fill="#f0f0f0" ` +
          `text-anchor="middle">${escapeXml(text)}</text>`,
      );
    }
  }
  if (captions.length > 0) {
    const svg =
      `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">` +
      `${captions.join('')}</svg>`;
    layers.push({ input: Buffer.from(svg), left: 0, top: 0 });
  }

  await mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await sharp({ create: { width, height, channels: 3, background: { r: 32, g: 32, b: 32 } } })
    .composite(layers)
    .png()
    .toFile(file);
  return { width, height };
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
