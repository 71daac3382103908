import type { DecodeOptions } from '../image/decode.ts';
import type { Analysis, PipelineIdentity, PipelineOptions } from './pipeline.ts';

/** A ReidbError as it crosses a thread boundary. */
export interface WireError {
  code: string;
  message: string;
  input?: string;
  details?: Record<string, unknown>;
}

export interface WorkerInit {
  pipeline: PipelineOptions;
}

export type JobInput =
  { kind: 'file'; path: string } | { kind: 'buffer'; buffer: Uint8Array; name: string };

export interface JobRequest {
  id: number;
  input: JobInput;
  decode: DecodeOptions;
}

export type WorkerMessage =
  | { type: 'ready'; identity: PipelineIdentity; detectorId: string; meshId: string }
  | { type: 'init-error'; error: WireError }
  | { type: 'result'; id: number; analysis: Analysis; decodeMs: number }
  | { type: 'error'; id: number; error: WireError };
