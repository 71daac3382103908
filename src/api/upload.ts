import type { Request } from 'express';
import busboy from 'busboy';

import { ReidbError } from '../errors.ts';

/** One uploaded image: its bytes and the name used in messages. */
export interface Upload {
  buffer: Buffer;
  name: string;
}

/**
 * Reads the image(s) of a request: the raw body (image/* or application/octet-stream), or
 * every multipart/form-data file field named `image`. Bodies over `maxBytes` are refused
 * with payload_too_large as soon as the limit is crossed; other content types, and any
 * content encoding but identity, with unsupported_media_type; a malformed multipart body with
 * invalid_argument.
 */
export async function readUploads(
  req: Request,
  maxBytes: number,
  maxFiles: number,
): Promise<Upload[]> {
  // The body is read as sent; a compressed one would have to be inflated first, and an inflated
  // size is exactly what a decompression bomb lies about.
  const encoding = (req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity') {
    throw new ReidbError(
      'unsupported_media_type',
      `content encoding '${encoding}' is not accepted; send the body uncompressed`,
      { input: encoding },
    );
  }

  // Compared in lower case, named in messages as sent (a boundary is case-sensitive).
  const type = (req.headers['content-type'] ?? '').trim();
  const media = type.split(';')[0].trim().toLowerCase();

  if (media === 'multipart/form-data') return readMultipart(req, maxBytes, maxFiles);
  if (/^image\/[a-z0-9.+-]+$/.test(media) || media === 'application/octet-stream') {
    const buffer = await readRaw(req, maxBytes);
    return [{ buffer, name: 'upload' }];
  }
  throw new ReidbError(
    'unsupported_media_type',
    `content type '${type || '(none)'}' is not accepted; send the image as image/*, ` +
      'application/octet-stream or a multipart/form-data field "image"',
    { input: type || '(none)' },
  );
}

function tooLarge(maxBytes: number): ReidbError {
  return new ReidbError('payload_too_large', `upload is larger than the ${maxBytes} byte limit`, {
    details: { maxBytes },
  });
}

function readRaw(req: Request, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > maxBytes) {
      req.resume();
      reject(tooLarge(maxBytes));
      return;
    }

    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > maxBytes) {
        failed = true;
        reject(tooLarge(maxBytes));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
    req.on('error', (e) => {
      if (!failed) reject(new ReidbError('invalid_argument', `upload failed: ${e.message}`));
      failed = true;
    });
  });
}

/** Longest text field accepted in a multipart body, in bytes; reidb reads no text fields. */
const MAX_FIELD_BYTES = 64 * 1024;

/** Most non-file fields accepted in a multipart body. */
const MAX_FIELDS = 64;

/**
 * Reads the file parts named `image` of a multipart/form-data body. Settles once: with the
 * uploads at the end of the body, or with the first failure as soon as it is seen (the rest of
 * the body is then read and dropped, never buffered). A client that disconnects mid-body is a
 * failure too, so the request never hangs.
 */
function readMultipart(req: Request, maxBytes: number, maxFiles: number): Promise<Upload[]> {
  return new Promise((resolve, reject) => {
    const malformed = (e: Error): ReidbError =>
      new ReidbError('invalid_argument', `malformed multipart request: ${e.message}`);

    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: req.headers,
        limits: {
          fileSize: maxBytes,
          files: maxFiles,
          fields: MAX_FIELDS,
          fieldSize: MAX_FIELD_BYTES,
          // 'partsLimit' comes when the limit-th part ends, so one more than those allowed.
          parts: maxFiles + MAX_FIELDS + 1,
        },
      });
    } catch (e) {
      req.resume();
      reject(malformed(e as Error));
      return;
    }

    const uploads: Upload[] = [];
    let settled = false;
    const fail = (e: ReidbError): void => {
      if (settled) return;
      settled = true;
      // No more bytes reach the parser; the rest of the body is read and dropped.
      req.unpipe(parser);
      req.resume();
      reject(e);
    };

    // Every byte of the body counts towards the limit: part headers, boundaries and ignored
    // fields as well as the images.
    let total = 0;
    req.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total > maxBytes) fail(tooLarge(maxBytes));
    });
    req.on('error', (e: Error) =>
      fail(new ReidbError('invalid_argument', `upload failed: ${e.message}`)),
    );

    parser.on('file', (field, stream, info) => {
      // A part cut off mid-way makes the part's own stream emit 'error'; unheard, it would
      // be thrown and end the process.
      stream.on('error', (e: Error) => fail(malformed(e)));
      const keep = field === 'image';
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => {
        if (keep && !settled) chunks.push(c);
      });
      stream.on('limit', () => fail(tooLarge(maxBytes)));
      stream.on('end', () => {
        if (keep && !settled) {
          uploads.push({
            buffer: Buffer.concat(chunks),
            name: info.filename || `image-${uploads.length + 1}`,
          });
        }
      });
    });
    parser.on('field', (name: string, _value: string, info: busboy.FieldInfo) => {
      if (name === 'image') {
        fail(
          new ReidbError(
            'invalid_argument',
            'multipart part "image" has no filename, so it is read as a text field; send the ' +
              'image as a file part (Content-Disposition: form-data; name="image"; ' +
              'filename="photo.jpg")',
            { input: name },
          ),
        );
      } else if (info.valueTruncated) {
        fail(
          new ReidbError(
            'payload_too_large',
            `multipart field "${name}" is longer than ${MAX_FIELD_BYTES} bytes`,
            { input: name, details: { maxFieldBytes: MAX_FIELD_BYTES } },
          ),
        );
      }
    });
    parser.on('filesLimit', () =>
      fail(new ReidbError('invalid_argument', `more than ${maxFiles} file parts in one request`)),
    );
    parser.on('fieldsLimit', () =>
      fail(
        new ReidbError('invalid_argument', `more than ${MAX_FIELDS} form fields in one request`),
      ),
    );
    parser.on('partsLimit', () =>
      fail(
        new ReidbError(
          'invalid_argument',
          `more than ${maxFiles + MAX_FIELDS} parts in one multipart request`,
        ),
      ),
    );
    parser.on('error', (e: Error) => fail(malformed(e)));
    parser.on('close', () => {
      if (settled) return;
      if (uploads.length === 0) {
        fail(new ReidbError('invalid_argument', 'multipart request has no file field "image"'));
        return;
      }
      settled = true;
      resolve(uploads);
    });
    req.pipe(parser);
  });
}
