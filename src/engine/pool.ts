import { Worker } from 'node:worker_threads';
import os from 'node:os';

import { ReidbError, type ErrorCode } from '../errors.ts';
import type { DecodeOptions } from '../image/decode.ts';
import { silentLogger, type Logger } from '../log.ts';
import type { JobInput, JobRequest, WireError, WorkerInit, WorkerMessage } from './messages.ts';
import type { Analysis, PipelineIdentity, PipelineOptions } from './pipeline.ts';

export interface EngineOptions {
  pipeline?: PipelineOptions;
  /** Worker threads, each with its own models. Default: the number of CPU cores (at most 4). */
  workers?: number;
  /** Limits applied when decoding every image. */
  decode?: DecodeOptions;
  logger?: Logger;
}

export interface EngineResult {
  analysis: Analysis;
  /** Milliseconds spent decoding the image. */
  decodeMs: number;
}

/**
 * The enrolment engine: a pool of worker threads, each running the whole face pipeline
 * (decode, detect, mesh, align, embed, fuse) on one image at a time. wasm inference is
 * single-threaded, so one worker per core is what uses the machine.
 */
export interface Engine {
  readonly identity: PipelineIdentity;
  readonly detectorId: string;
  readonly meshId: string;
  readonly workers: number;
  analyseFile(path: string): Promise<EngineResult>;
  analyseBuffer(buffer: Uint8Array, name: string): Promise<EngineResult>;
  close(): Promise<void>;
}

interface Pending {
  request: JobRequest;
  resolve: (r: EngineResult) => void;
  reject: (e: ReidbError) => void;
}

interface Slot {
  worker: Worker;
  busy: Pending | null;
}

/** Starts the worker pool and waits until every worker has loaded its models. */
export async function createEngine(options: EngineOptions = {}): Promise<Engine> {
  const logger = options.logger ?? silentLogger;
  const count = Math.max(1, options.workers ?? Math.min(4, os.availableParallelism()));
  const init: WorkerInit = { pipeline: options.pipeline ?? {} };
  const decode = options.decode ?? {};
  const queue: Pending[] = [];
  const slots: Slot[] = [];
  let nextId = 1;
  let closing = false;
  let ready: Extract<WorkerMessage, { type: 'ready' }> | null = null;

  function spawn(): Promise<Slot> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(new URL('./worker-entry.js', import.meta.url), {
        workerData: init,
      });
      const slot: Slot = { worker, busy: null };
      let started = false;

      worker.on('message', (message: WorkerMessage) => {
        if (message.type === 'ready') {
          started = true;
          ready = message;
          resolve(slot);
          return;
        }
        if (message.type === 'init-error') {
          reject(fromWire(message.error));
          void worker.terminate();
          return;
        }
        const job = slot.busy;
        slot.busy = null;
        if (job && job.request.id === message.id) {
          if (message.type === 'result') {
            job.resolve({ analysis: message.analysis, decodeMs: message.decodeMs });
          } else {
            job.reject(fromWire(message.error));
          }
        }
        pump();
      });

      worker.on('error', (error) => {
        if (!started)
          reject(new ReidbError('internal', `worker failed to start: ${error.message}`));
        logger.error('engine worker failed', { error: error.message });
      });

      worker.on('exit', (code) => {
        const index = slots.indexOf(slot);
        if (index >= 0) slots.splice(index, 1);
        if (slot.busy) {
          const input = describe(slot.busy.request.input);
          slot.busy.reject(
            new ReidbError('internal', `${input}: the worker analysing it exited (code ${code})`, {
              input,
            }),
          );
          slot.busy = null;
        }
        if (started && !closing) {
          logger.warn('engine worker exited; starting a new one', { code });
          spawn()
            .then((s) => {
              slots.push(s);
              pump();
            })
            .catch((e) => logger.error('engine worker restart failed', { error: String(e) }));
        }
      });
    });
  }

  function pump(): void {
    for (const slot of slots) {
      if (slot.busy || queue.length === 0) continue;
      const job = queue.shift()!;
      slot.busy = job;
      slot.worker.postMessage(job.request);
    }
  }

  function submit(input: JobInput): Promise<EngineResult> {
    if (closing) return Promise.reject(new ReidbError('closed', 'engine is closed'));
    return new Promise((resolve, reject) => {
      queue.push({ request: { id: nextId++, input, decode }, resolve, reject });
      pump();
    });
  }

  const started = await Promise.allSettled(Array.from({ length: count }, () => spawn()));
  for (const s of started) if (s.status === 'fulfilled') slots.push(s.value);
  const failure = started.find((s) => s.status === 'rejected');
  if (failure) {
    closing = true;
    await Promise.all(slots.map((s) => s.worker.terminate()));
    throw (failure as PromiseRejectedResult).reason;
  }
  const info = ready!;

  return {
    identity: info.identity,
    detectorId: info.detectorId,
    meshId: info.meshId,
    workers: count,
    analyseFile: (path) => submit({ kind: 'file', path }),
    analyseBuffer: (buffer, name) => submit({ kind: 'buffer', buffer, name }),
    async close() {
      closing = true;
      for (const job of queue.splice(0)) {
        job.reject(new ReidbError('closed', 'engine closed before the image was analysed'));
      }
      await Promise.all(slots.map((s) => s.worker.terminate()));
    },
  };
}

function describe(input: JobInput): string {
  return input.kind === 'file' ? input.path : input.name;
}

function fromWire(error: WireError): ReidbError {
  return new ReidbError(error.code as ErrorCode, error.message, {
    input: error.input,
    details: error.details,
  });
}
