import sharp from 'sharp';

import type { Box } from '../types.ts';
import type { DecodedImage } from './decode.ts';

/** Side of a stored thumbnail, in pixels. */
export const THUMBNAIL_SIZE = 96;

/** Gaussian blur of a blurred thumbnail, sigma in pixels of the 96-pixel thumbnail. */
export const THUMBNAIL_BLUR_SIGMA = 6;

/**
 * A square JPEG thumbnail of a face: the detector's box (pixels of the upright image) grown by
 * 20 % on each side and clipped to the image, resized to 96 x 96 pixels. With `blurred`, a
 * Gaussian blur (sigma 6 px) leaves a recognisable pose and setting but no usable face
 * detail. Only made when a gallery's policy opts in to thumbnails.
 */
export async function makeThumbnail(
  image: DecodedImage,
  box: Box,
  blurred: boolean,
): Promise<Buffer> {
  const margin = 0.2 * Math.max(box.width, box.height);
  const left = clamp(Math.floor(box.x - margin), 0, image.width - 1);
  const top = clamp(Math.floor(box.y - margin), 0, image.height - 1);
  const right = clamp(Math.ceil(box.x + box.width + margin), left + 1, image.width);
  const bottom = clamp(Math.ceil(box.y + box.height + margin), top + 1, image.height);

  let pipeline = sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.length), {
    raw: { width: image.width, height: image.height, channels: 3 },
  })
    .extract({ left, top, width: right - left, height: bottom - top })
    .resize(THUMBNAIL_SIZE, THUMBNAIL_SIZE, { fit: 'cover' });
  if (blurred) pipeline = pipeline.blur(THUMBNAIL_BLUR_SIGMA);
  return pipeline.jpeg({ quality: 80 }).toBuffer();
}

function clamp(value: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, value));
}
