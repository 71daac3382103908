/**
 * Image intake (METHOD.md step 1): any photo file or upload becomes an upright 8-bit sRGB RGB
 * image, or a ReidbError that names the input and says what was wrong with it.
 *
 * - The format is sniffed from the bytes, never from the name (src/image/sniff.ts).
 * - Size limits are checked before pixels are decoded: the byte size first, then width x
 *   height from the header, so a 20000 x 20000 image is refused without allocating 1.2 GB.
 * - EXIF orientation is applied, so the output is upright and `width`/`height` are those
 *   of the upright picture.
 * - Grey, grey + alpha, RGBA, palette, 16-bit, CMYK and images with an embedded ICC profile
 *   all end as 8-bit sRGB; alpha is flattened onto white (a transparent background reads as
 *   a white wall behind the face, not as a black one).
 * - Truncated or corrupt pixel data is an error, not a half-grey picture (sharp `failOn`).
 */
import { readFile, stat } from 'node:fs/promises';

import sharp, { type Metadata, type OutputInfo } from 'sharp';

import { ReidbError, toReidbError } from '../errors.ts';
import type { RgbImage } from '../types.ts';
import { decodePnm } from './pnm.ts';
import { sniffImageFormat, type DecodableFormat } from './sniff.ts';

export interface DecodeOptions {
  /** Name used in errors (file path or upload name). Default: the path, or '<buffer>'. */
  name?: string;
  /** Refuse images with more pixels than this (width * height). Default 40e6. */
  maxPixels?: number;
  /** Refuse inputs larger than this many bytes. Default 50 MiB. */
  maxBytes?: number;
}

export interface DecodedImage extends RgbImage {
  /** The sniffed format: jpeg, png, webp, gif, tiff, avif, heic, pbm, pgm or ppm. */
  format: string;
  /** The EXIF orientation tag (1-8) found in the file and applied; absent when none. */
  orientation?: number;
  /** The input's name: `options.name`, else the file path, else '<buffer>'. */
  source: string;
}

/** Default pixel limit: 40 megapixels, a large phone photo. */
export const DEFAULT_MAX_PIXELS = 40e6;

/** Default byte limit: 50 MiB. */
export const DEFAULT_MAX_BYTES = 50 * 1024 * 1024;

/**
 * How strict libvips is with damaged pixel data. 'error' refuses truncated files and real
 * decode errors but lets through the harmless warnings (stray bytes after a JPEG marker) that
 * many camera and web JPEGs carry; 'warning' would refuse those photos.
 */
const FAIL_ON = 'error' as const;

/**
 * Decodes an image file (path) or its bytes (Buffer) into an upright 8-bit sRGB RGB image.
 * Throws only ReidbError: file_not_found, empty_file, not_an_image, unsupported_image,
 * corrupt_image, image_too_large (bytes or pixels over the limits) or invalid_argument.
 */
export async function decodeImage(
  input: string | Buffer,
  options: DecodeOptions = {},
): Promise<DecodedImage> {
  const source = options.name ?? (typeof input === 'string' ? input : '<buffer>');
  try {
    return await decode(input, options, source);
  } catch (error) {
    // Anything that is not already a ReidbError is a bug here, reported as 'internal'.
    throw toReidbError(error, source);
  }
}

/** decodeImage's steps: limits, bytes, sniffing, then the decoder for the format. */
async function decode(
  input: string | Buffer,
  options: DecodeOptions,
  source: string,
): Promise<DecodedImage> {
  const maxPixels = checkLimit(options.maxPixels, DEFAULT_MAX_PIXELS, 'maxPixels', source);
  const maxBytes = checkLimit(options.maxBytes, DEFAULT_MAX_BYTES, 'maxBytes', source);

  const bytes = await readInput(input, source, maxBytes);

  const sniffed = sniffImageFormat(bytes);
  if (sniffed.kind === 'not_image') {
    throw new ReidbError('not_an_image', `${source}: not an image (${sniffed.what})`, {
      input: source,
    });
  }
  if (sniffed.kind === 'unsupported') {
    throw new ReidbError(
      'unsupported_image',
      `${source}: unsupported image format ${sniffed.format}: ${sniffed.reason}`,
      { input: source, details: { format: sniffed.format } },
    );
  }

  if (sniffed.format === 'pbm' || sniffed.format === 'pgm' || sniffed.format === 'ppm') {
    const image = decodePnm(bytes, source, maxPixels);
    return { ...image, channels: 3, source };
  }
  return decodeWithSharp(bytes, sniffed.format, source, maxPixels);
}

/** Validates a positive limit option, or returns the default. */
function checkLimit(value: number | undefined, fallback: number, what: string, source: string) {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value)) {
    const message = `${source}: ${what} must be a positive number, got ${value}`;
    throw new ReidbError('invalid_argument', message, { input: source });
  }
  return value;
}

/** The input's bytes, after the existence, emptiness and byte-size checks. */
async function readInput(input: string | Buffer, source: string, maxBytes: number) {
  const tooLarge = (bytes: number) =>
    new ReidbError(
      'image_too_large',
      `${source}: input is ${bytes} bytes, more than the limit of ${maxBytes}`,
      { input: source, details: { bytes, maxBytes } },
    );
  const empty = () =>
    new ReidbError('empty_file', `${source}: the file is empty (0 bytes)`, { input: source });

  if (input instanceof Uint8Array) {
    if (input.length === 0) throw empty();
    if (input.length > maxBytes) throw tooLarge(input.length);
    return input;
  }
  if (typeof input !== 'string' || input === '') {
    throw new ReidbError('invalid_argument', 'decodeImage needs a file path or a Buffer', {
      input: source,
    });
  }

  // Stat first, so an oversized file is refused without being read.
  let bytes: Buffer;
  try {
    const info = await stat(input);
    if (info.isDirectory()) {
      throw new ReidbError('invalid_argument', `${source}: is a directory, not an image file`, {
        input: source,
      });
    }
    // A pipe or device has no size to check and may never end (/dev/zero, a FIFO).
    if (!info.isFile()) {
      throw new ReidbError(
        'not_an_image',
        `${source}: not a regular file (pipe, socket or device)`,
        {
          input: source,
        },
      );
    }
    if (info.size > maxBytes) throw tooLarge(info.size);
    bytes = await readFile(input);
  } catch (error) {
    throw fileError(error, source);
  }

  // The file may have changed between stat and read.
  if (bytes.length === 0) throw empty();
  if (bytes.length > maxBytes) throw tooLarge(bytes.length);
  return bytes;
}

/** Maps a file-system failure to a ReidbError. */
function fileError(error: unknown, source: string): ReidbError {
  if (error instanceof ReidbError) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new ReidbError('file_not_found', `${source}: no such file`, {
      input: source,
      cause: error,
    });
  }
  if (code === 'EACCES' || code === 'EPERM') {
    const message = `${source}: the file cannot be read (permission denied)`;
    return new ReidbError('file_not_found', message, { input: source, cause: error });
  }
  if (code === 'EISDIR') {
    return new ReidbError('invalid_argument', `${source}: is a directory, not an image file`, {
      input: source,
      cause: error,
    });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new ReidbError('internal', `${source}: the file cannot be read: ${message}`, {
    input: source,
    cause: error,
  });
}

/** Decodes a format libvips reads: header and limits first, then the pixels. */
async function decodeWithSharp(
  bytes: Uint8Array,
  format: DecodableFormat,
  source: string,
  maxPixels: number,
): Promise<DecodedImage> {
  // The header alone: size and orientation, no pixel buffer yet.
  let metadata: Metadata;
  try {
    const header = sharp(bytes, { failOn: FAIL_ON, limitInputPixels: false, pages: 1 });
    metadata = await header.metadata();
  } catch (error) {
    throw sharpError(error, format, source, 'its header cannot be read');
  }

  const pixels = metadata.width * metadata.height;
  if (pixels > maxPixels) {
    throw new ReidbError(
      'image_too_large',
      `${source}: image is ${metadata.width} x ${metadata.height} pixels, more than the limit ` +
        `of ${maxPixels}`,
      {
        input: source,
        details: { width: metadata.width, height: metadata.height, pixels, maxPixels },
      },
    );
  }

  // Pixels: upright, alpha flattened onto white, profile and colour space converted to sRGB.
  let output: { data: Buffer; info: OutputInfo };
  try {
    output = await sharp(bytes, {
      failOn: FAIL_ON,
      limitInputPixels: Math.max(1, Math.floor(maxPixels)),
      autoOrient: true,
      pages: 1,
    })
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (error) {
    throw sharpError(error, format, source, 'its pixel data cannot be decoded');
  }

  const { data, info } = output;
  if (info.channels !== 3 || data.length !== info.width * info.height * 3) {
    throw new ReidbError(
      'unsupported_image',
      `${source}: ${format} image with ${info.channels} channels cannot be converted to RGB`,
      { input: source, details: { format, channels: info.channels } },
    );
  }

  const image: DecodedImage = {
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    width: info.width,
    height: info.height,
    channels: 3,
    format,
    source,
  };
  if (metadata.orientation !== undefined) image.orientation = metadata.orientation;
  return image;
}

/** Maps a libvips failure to a ReidbError that names the input and the stage. */
function sharpError(error: unknown, format: DecodableFormat, source: string, stage: string) {
  const message = error instanceof Error ? error.message : String(error);
  if (/pixel limit/i.test(message)) {
    return new ReidbError('image_too_large', `${source}: ${message}`, {
      input: source,
      cause: error,
    });
  }
  if (format === 'heic') {
    return new ReidbError(
      'unsupported_image',
      `${source}: unsupported image format heic: ${stage}; the prebuilt sharp reads AVIF but ` +
        `has no HEVC decoder, convert the photo to JPEG (${message.trim()})`,
      { input: source, cause: error, details: { format } },
    );
  }
  return new ReidbError(
    'corrupt_image',
    `${source}: corrupt or truncated ${format} image: ${stage} (${message.trim()})`,
    { input: source, cause: error, details: { format } },
  );
}
