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
 * with payload_too_large as soon as the limit is crossed; other content types with
 * unsupported_media_type; a malformed multipart body with invalid_argument.
 */
export async function readUploads(
  req: Request,
  maxBytes: number,
  maxFiles: number,
): Promise<Upload[]> {
  const type = (req.headers['content-type'] ?? '').toLowerCase();
  const media = type.split(';')[0].trim();

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

function readMultipart(req: Request, maxBytes: number, maxFiles: number): Promise<Upload[]> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: req.headers,
        limits: { fileSize: maxBytes, files: maxFiles, fields: 64, fieldSize: maxBytes },
      });
    } catch (e) {
      req.resume();
      reject(
        new ReidbError('invalid_argument', `malformed multipart request: ${(e as Error).message}`),
      );
      return;
    }

    const uploads: Upload[] = [];
    let total = 0;
    let failure: ReidbError | null = null;
    const fail = (e: ReidbError): void => {
      if (!failure) failure = e;
    };
    const malformed = (e: Error): ReidbError =>
      new ReidbError('invalid_argument', `malformed multipart request: ${e.message}`);
    // Every byte of the body counts towards the limit, whatever field it belongs to.
    const count = (n: number): boolean => {
      total += n;
      if (total > maxBytes) fail(tooLarge(maxBytes));
      return failure === null;
    };

    parser.on('file', (field, stream, info) => {
      // A part cut off mid-way makes the part's own stream emit 'error'; unheard, it would
      // be thrown and end the process.
      stream.on('error', (e: Error) => fail(malformed(e)));
      const keep = field === 'image';
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => {
        if (count(c.length) && keep) chunks.push(c);
      });
      stream.on('limit', () => fail(tooLarge(maxBytes)));
      stream.on('end', () => {
        if (keep) {
          uploads.push({
            buffer: Buffer.concat(chunks),
            name: info.filename || `image-${uploads.length + 1}`,
          });
        }
      });
    });
    parser.on('field', (_name, value: string) => {
      count(Buffer.byteLength(value));
    });
    parser.on('filesLimit', () =>
      fail(new ReidbError('invalid_argument', `more than ${maxFiles} file parts in one request`)),
    );
    parser.on('fieldsLimit', () =>
      fail(new ReidbError('invalid_argument', 'too many form fields in one request')),
    );
    parser.on('error', (e: Error) => {
      fail(malformed(e));
      req.unpipe(parser);
      req.resume();
      reject(failure);
    });
    parser.on('close', () => {
      if (failure) reject(failure);
      else if (uploads.length === 0) {
        reject(new ReidbError('invalid_argument', 'multipart request has no file field "image"'));
      } else resolve(uploads);
    });
    req.pipe(parser);
  });
}
