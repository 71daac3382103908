/**
 * Netpbm decoder (PBM P1/P4, PGM P2/P5, PPM P3/P6) for image intake. The prebuilt libvips
 * inside sharp has no PPM loader, and face sets such as ORL/AT&T ship as binary PGM, so
 * reidb reads these few simple formats itself. Only the first image of a file is read.
 * Samples are taken as sRGB-encoded, as the Netpbm specification intends.
 */
import { ReidbError } from '../errors.ts';

/** The decoded pixels: 8-bit, 3 channels, interleaved RGB, row-major. */
export interface PnmImage {
  data: Uint8Array;
  width: number;
  height: number;
  format: 'pbm' | 'pgm' | 'ppm';
}

/** Reads white-space separated header tokens and ASCII samples, skipping '#' comments. */
class TokenReader {
  private readonly bytes: Uint8Array;
  private at: number;

  constructor(bytes: Uint8Array, start: number) {
    this.bytes = bytes;
    this.at = start;
  }

  get position(): number {
    return this.at;
  }

  /** Skips white space and comments; returns false at the end of the data. */
  private skipSpace(): boolean {
    while (this.at < this.bytes.length) {
      const value = this.bytes[this.at];
      if (value === 0x23) {
        while (this.at < this.bytes.length && this.bytes[this.at] !== 0x0a) this.at++;
      } else if (value === 0x20 || (value >= 0x09 && value <= 0x0d)) {
        this.at++;
      } else {
        return true;
      }
    }
    return false;
  }

  /** The next decimal integer, or undefined when the data ends or holds no digit here. */
  integer(): number | undefined {
    if (!this.skipSpace()) return undefined;
    let value = 0;
    let digits = 0;
    while (this.at < this.bytes.length) {
      const digit = this.bytes[this.at] - 0x30;
      if (digit < 0 || digit > 9) break;
      value = value * 10 + digit;
      digits++;
      this.at++;
      if (digits > 9) return undefined;
    }
    return digits === 0 ? undefined : value;
  }

  /** One '0' or '1' of a P1 bitmap, which may be written without spaces between them. */
  bit(): number | undefined {
    if (!this.skipSpace()) return undefined;
    const value = this.bytes[this.at] - 0x30;
    if (value !== 0 && value !== 1) return undefined;
    this.at++;
    return value;
  }
}

/**
 * Decodes a Netpbm image. Throws ReidbError: image_too_large when width x height exceeds
 * `maxPixels` (checked from the header, before any pixel buffer exists), corrupt_image when
 * the header is malformed or the pixel data is short or out of range.
 */
export function decodePnm(bytes: Uint8Array, name: string, maxPixels: number): PnmImage {
  const corrupt = (why: string) =>
    new ReidbError('corrupt_image', `${name}: corrupt Netpbm image: ${why}`, { input: name });

  // Header: magic, width, height and (except for bitmaps) the maximum sample value.
  const kind = bytes[1] - 0x30;
  const format = kind === 1 || kind === 4 ? 'pbm' : kind === 2 || kind === 5 ? 'pgm' : 'ppm';
  const reader = new TokenReader(bytes, 2);
  const width = reader.integer();
  const height = reader.integer();
  const maxValue = format === 'pbm' ? 1 : reader.integer();
  if (width === undefined || height === undefined || maxValue === undefined) {
    throw corrupt('the header is incomplete');
  }
  if (width < 1 || height < 1) throw corrupt(`the size ${width} x ${height} is empty`);
  if (maxValue < 1 || maxValue > 65535) throw corrupt(`the maximum value ${maxValue} is invalid`);
  if (width * height > maxPixels) {
    throw new ReidbError(
      'image_too_large',
      `${name}: image is ${width} x ${height} pixels, more than the limit of ${maxPixels}`,
      { input: name, details: { width, height, pixels: width * height, maxPixels } },
    );
  }

  // Samples, scaled to 8 bits.
  const channels = format === 'ppm' ? 3 : 1;
  const count = width * height * channels;
  const samples = new Uint8Array(count);
  const scale = (value: number) => Math.round((value * 255) / maxValue);
  if (kind === 1) {
    for (let i = 0; i < count; i++) {
      const bit = reader.bit();
      if (bit === undefined) throw corrupt('the bitmap data is short');
      samples[i] = bit === 1 ? 0 : 255;
    }
  } else if (kind === 2 || kind === 3) {
    for (let i = 0; i < count; i++) {
      const value = reader.integer();
      if (value === undefined) throw corrupt('the sample data is short');
      if (value > maxValue) throw corrupt(`sample ${value} exceeds the maximum ${maxValue}`);
      samples[i] = scale(value);
    }
  } else {
    // Binary rasters start after exactly one white-space character.
    const start = reader.position + 1;
    if (kind === 4) {
      const rowBytes = Math.ceil(width / 8);
      if (bytes.length < start + rowBytes * height) throw corrupt('the bitmap data is truncated');
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const bit = (bytes[start + y * rowBytes + (x >> 3)] >> (7 - (x & 7))) & 1;
          samples[y * width + x] = bit === 1 ? 0 : 255;
        }
      }
    } else {
      const sampleBytes = maxValue < 256 ? 1 : 2;
      if (bytes.length < start + count * sampleBytes) throw corrupt('the pixel data is truncated');
      for (let i = 0; i < count; i++) {
        const at = start + i * sampleBytes;
        const value = sampleBytes === 1 ? bytes[at] : (bytes[at] << 8) | bytes[at + 1];
        if (value > maxValue) throw corrupt(`sample ${value} exceeds the maximum ${maxValue}`);
        samples[i] = maxValue === 255 ? value : scale(value);
      }
    }
  }

  // Grey to RGB.
  if (channels === 3) return { data: samples, width, height, format };
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    data[3 * i] = data[3 * i + 1] = data[3 * i + 2] = samples[i];
  }
  return { data, width, height, format };
}
