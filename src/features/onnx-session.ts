import { readFileSync, statSync } from 'node:fs';

import { InferenceSession } from 'onnxruntime-node';

import { ReidbError } from '../errors.ts';

/**
 * Reads an ONNX file for `what` ('ONNX model', 'ONNX fusion'); model_missing naming the file
 * when it is absent or not a regular file.
 */
export function readOnnxFile(file: string, what: string): Buffer {
  try {
    if (!statSync(file).isFile()) throw new Error('not a regular file');
    return readFileSync(file);
  } catch (cause) {
    throw new ReidbError('model_missing', `${what} ${file} does not exist or is not a file`, {
      input: file,
      cause,
    });
  }
}

/**
 * Opens an onnxruntime session on the given execution providers. A provider onnxruntime
 * lacks is invalid_argument (the caller's choice, not a damaged file: onnxruntime resolves
 * providers before it parses the model); anything else is model_corrupt naming the file.
 */
export async function openOnnxSession(
  bytes: Buffer,
  file: string,
  executionProviders: string[],
  what: string,
): Promise<InferenceSession> {
  try {
    return await InferenceSession.create(bytes, { executionProviders });
  } catch (cause) {
    const message = cause instanceof Error ? cause.message : String(cause);
    if (/backend not found|execution provider/i.test(message)) {
      throw new ReidbError(
        'invalid_argument',
        `onnxruntime cannot use execution providers [${executionProviders}] for ${file}: ` +
          message,
        { input: 'executionProviders', cause },
      );
    }
    throw new ReidbError('model_corrupt', `${what} ${file} cannot be loaded: ${message}`, {
      input: file,
      cause,
    });
  }
}
