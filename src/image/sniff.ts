/**
 * Format sniffing for image intake: what a file is, judged from its first bytes (magic
 * numbers), never from its name. A WebP saved as `photo.jpg` is a WebP; a text file saved as
 * `photo.jpg` is text. The result says whether reidb decodes the format, refuses it as an
 * image it does not support, or refuses it as something that is not an image at all.
 */

/** Formats reidb decodes: through sharp/libvips, or (pbm, pgm, ppm) through src/image/pnm.ts. */
export type DecodableFormat =
  'jpeg' | 'png' | 'webp' | 'gif' | 'tiff' | 'avif' | 'heic' | 'pbm' | 'pgm' | 'ppm';

export type SniffResult =
  | { kind: 'image'; format: DecodableFormat }
  /** An image format recognised but refused; `reason` says why, for the error message. */
  | { kind: 'unsupported'; format: string; reason: string }
  /** Not an image; `what` is a short guess at what it is, for the error message. */
  | { kind: 'not_image'; what: string };

/** True when `bytes` at `offset` hold exactly the ASCII text `text`. */
function hasAscii(bytes: Uint8Array, offset: number, text: string): boolean {
  if (bytes.length < offset + text.length) return false;
  for (let i = 0; i < text.length; i++) {
    if (bytes[offset + i] !== text.charCodeAt(i)) return false;
  }
  return true;
}

/** True when `bytes` start with the byte values `prefix`. */
function hasBytes(bytes: Uint8Array, prefix: readonly number[], offset = 0): boolean {
  if (bytes.length < offset + prefix.length) return false;
  return prefix.every((value, i) => bytes[offset + i] === value);
}

/** The ISO base media (HEIF, AVIF, MP4) brands of an `ftyp` box at the start of a file. */
function ftypBrands(bytes: Uint8Array): string[] | undefined {
  if (!hasAscii(bytes, 4, 'ftyp') || bytes.length < 16) return undefined;

  const boxSize = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
  const end = Math.min(bytes.length, boxSize >= 16 ? boxSize : 16);
  const ascii = (from: number) => String.fromCharCode(...bytes.subarray(from, from + 4));

  // The major brand at 8, a minor version at 12, then compatible brands to the end of the box.
  const brands = [ascii(8)];
  for (let at = 16; at + 4 <= end; at += 4) brands.push(ascii(at));
  return brands;
}

/** Netpbm magic digit ('1'..'6') to format. */
const PNM_MAGIC = new Map<number, DecodableFormat>([
  [0x31, 'pbm'],
  [0x34, 'pbm'],
  [0x32, 'pgm'],
  [0x35, 'pgm'],
  [0x33, 'ppm'],
  [0x36, 'ppm'],
]);

const HEIC_BRANDS = new Set(['heic', 'heix', 'hevc', 'hevx', 'heim', 'heis', 'hevm', 'hevs']);

/** Sorts an ISO base media file into AVIF, HEIC, a generic HEIF or a video container. */
function sniffFtyp(brands: string[]): SniffResult {
  if (brands.includes('avif') || brands.includes('avis')) return { kind: 'image', format: 'avif' };
  if (brands.some((brand) => HEIC_BRANDS.has(brand))) return { kind: 'image', format: 'heic' };
  if (brands.includes('mif1') || brands.includes('msf1')) {
    // A HEIF container that names no codec brand: let libheif say what the codec is.
    return { kind: 'image', format: 'heic' };
  }
  return { kind: 'not_image', what: `an ISO media file (brand '${brands[0].trim()}', a video?)` };
}

/** First non-space character position after an optional UTF-8 byte-order mark. */
function textStart(bytes: Uint8Array): number {
  let at = hasBytes(bytes, [0xef, 0xbb, 0xbf]) ? 3 : 0;
  while (at < bytes.length && [0x09, 0x0a, 0x0d, 0x20].includes(bytes[at])) at++;
  return at;
}

/** True when the first 512 bytes look like text: no NUL, almost all printable or UTF-8. */
function looksLikeText(bytes: Uint8Array): boolean {
  const head = bytes.subarray(0, 512);
  let odd = 0;
  for (const value of head) {
    if (value === 0) return false;
    if (value < 0x09 || (value > 0x0d && value < 0x20) || value === 0x7f) odd++;
  }
  return odd <= head.length * 0.02;
}

/** A short description of unrecognised bytes for an error message. */
function describeUnknown(bytes: Uint8Array): string {
  if (hasBytes(bytes, [0x1f, 0x8b])) return 'gzip-compressed data';
  if (hasBytes(bytes, [0x50, 0x4b, 0x03, 0x04])) return 'a ZIP archive';
  if (hasAscii(bytes, 4, 'Bud1')) return 'a macOS .DS_Store file';
  if (looksLikeText(bytes)) return 'text';
  const hex = Array.from(bytes.subarray(0, 8), (value) => value.toString(16).padStart(2, '0'));
  return `unrecognised binary data (first bytes ${hex.join(' ')})`;
}

/**
 * Decides what `bytes` hold from their magic numbers. Never throws; `bytes` must not be
 * empty (the caller reports empty_file first).
 */
export function sniffImageFormat(bytes: Uint8Array): SniffResult {
  // Decodable formats.
  if (hasBytes(bytes, [0xff, 0xd8, 0xff])) return { kind: 'image', format: 'jpeg' };
  if (hasBytes(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) {
    return { kind: 'image', format: 'png' };
  }
  if (hasAscii(bytes, 0, 'RIFF') && hasAscii(bytes, 8, 'WEBP')) {
    return { kind: 'image', format: 'webp' };
  }
  if (hasAscii(bytes, 0, 'GIF87a') || hasAscii(bytes, 0, 'GIF89a')) {
    return { kind: 'image', format: 'gif' };
  }
  if (hasBytes(bytes, [0x49, 0x49, 0x2a, 0x00]) || hasBytes(bytes, [0x4d, 0x4d, 0x00, 0x2a])) {
    return { kind: 'image', format: 'tiff' };
  }
  if (bytes.length >= 3 && bytes[0] === 0x50 && [0x09, 0x0a, 0x0d, 0x20].includes(bytes[2])) {
    // Netpbm: 'P1'..'P6' and a white-space character.
    const pnm = PNM_MAGIC.get(bytes[1]);
    if (pnm !== undefined) return { kind: 'image', format: pnm };
    if (bytes[1] === 0x37) {
      return { kind: 'unsupported', format: 'pam', reason: 'PAM (P7) images are not supported' };
    }
  }
  const brands = ftypBrands(bytes);
  if (brands !== undefined) return sniffFtyp(brands);

  // Recognised image formats that reidb refuses.
  if (hasAscii(bytes, 0, '%PDF-')) {
    return { kind: 'unsupported', format: 'pdf', reason: 'PDF documents are not photos' };
  }
  if (hasAscii(bytes, 0, '8BPS')) {
    return { kind: 'unsupported', format: 'psd', reason: 'Photoshop documents are not supported' };
  }
  if (hasBytes(bytes, [0x49, 0x49, 0x2b, 0x00]) || hasBytes(bytes, [0x4d, 0x4d, 0x00, 0x2b])) {
    return { kind: 'unsupported', format: 'bigtiff', reason: 'BigTIFF is not supported' };
  }
  if (
    hasAscii(bytes, 0, 'BM') &&
    bytes.length >= 18 &&
    [12, 40, 52, 56, 64, 108, 124].includes(bytes[14] | (bytes[15] << 8))
  ) {
    return { kind: 'unsupported', format: 'bmp', reason: 'BMP is not supported by this build' };
  }
  if (
    hasBytes(bytes, [0xff, 0x0a]) ||
    hasBytes(bytes, [0x00, 0x00, 0x00, 0x0c, 0x4a, 0x58, 0x4c, 0x20, 0x0d, 0x0a, 0x87, 0x0a])
  ) {
    return { kind: 'unsupported', format: 'jxl', reason: 'JPEG XL is not supported by this build' };
  }
  if (
    hasBytes(bytes, [0x00, 0x00, 0x00, 0x0c, 0x6a, 0x50, 0x20, 0x20, 0x0d, 0x0a, 0x87, 0x0a]) ||
    hasBytes(bytes, [0xff, 0x4f, 0xff, 0x51])
  ) {
    const reason = 'JPEG 2000 is not supported by this build';
    return { kind: 'unsupported', format: 'jp2', reason };
  }
  if (hasBytes(bytes, [0x76, 0x2f, 0x31, 0x01])) {
    return { kind: 'unsupported', format: 'exr', reason: 'OpenEXR is not supported' };
  }
  if (hasAscii(bytes, 0, '#?RADIANCE') || hasAscii(bytes, 0, '#?RGBE')) {
    return { kind: 'unsupported', format: 'hdr', reason: 'Radiance HDR is not supported' };
  }
  if (hasAscii(bytes, 128, 'DICM')) {
    return { kind: 'unsupported', format: 'dicom', reason: 'DICOM is not supported' };
  }
  if (hasBytes(bytes, [0x08, 0xf2, 0xa6, 0xb6]) || hasBytes(bytes, [0xb6, 0xa6, 0xf2, 0x08])) {
    return { kind: 'unsupported', format: 'vips', reason: 'the libvips native format is refused' };
  }
  if (hasBytes(bytes, [0x00, 0x00, 0x01, 0x00]) && bytes.length >= 6 && bytes[4] > 0) {
    return { kind: 'unsupported', format: 'ico', reason: 'ICO icons are not supported' };
  }

  // SVG is text: an XML or <svg> start with an <svg element near the top.
  const start = textStart(bytes);
  if (bytes[start] === 0x3c) {
    const head = Buffer.from(bytes.subarray(start, start + 4096))
      .toString('latin1')
      .toLowerCase();
    if (head.includes('<svg')) {
      return {
        kind: 'unsupported',
        format: 'svg',
        reason: 'SVG is a vector drawing, not a photo (and may reference external files)',
      };
    }
  }

  return { kind: 'not_image', what: describeUnknown(bytes) };
}
