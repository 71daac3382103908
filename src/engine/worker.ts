import { parentPort, workerData } from 'node:worker_threads';

import { toReidbError } from '../errors.ts';
import { decodeImage } from '../image/decode.ts';
import type { JobRequest, WireError, WorkerInit, WorkerMessage } from './messages.ts';
import { createPipeline } from './pipeline.ts';

/** One pipeline per worker thread; jobs arrive one at a time from the pool. */
async function run(): Promise<void> {
  const port = parentPort;
  if (!port) return;
  const post = (message: WorkerMessage): void => port.postMessage(message);
  const init = workerData as WorkerInit;

  let pipeline;
  try {
    pipeline = await createPipeline(init.pipeline);
  } catch (e) {
    post({ type: 'init-error', error: toWire(e) });
    return;
  }
  post({
    type: 'ready',
    identity: pipeline.identity,
    detectorId: pipeline.detectorId,
    meshId: pipeline.meshId,
  });

  port.on('message', async (job: JobRequest | 'close') => {
    if (job === 'close') {
      await pipeline.close();
      port.close();
      return;
    }

    const name = job.input.kind === 'file' ? job.input.path : job.input.name;
    try {
      const start = performance.now();
      const source = job.input.kind === 'file' ? job.input.path : Buffer.from(job.input.buffer);
      const image = await decodeImage(source, { ...job.decode, name });
      const decodeMs = performance.now() - start;
      const analysis = await pipeline.analyse(image);
      post({ type: 'result', id: job.id, analysis, decodeMs });
    } catch (e) {
      post({ type: 'error', id: job.id, error: toWire(e, name) });
    }
  });
}

function toWire(e: unknown, input?: string): WireError {
  const err = toReidbError(e, input);
  return { code: err.code, message: err.message, input: err.input, details: err.details };
}

await run();
