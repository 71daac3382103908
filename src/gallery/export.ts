import { createHash } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  fsyncSync,
  openSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';

import { ReidbError } from '../errors.ts';
import type { SealedRecord } from '../policy/export-keys.ts';
import { blobToFloat32, float32ToBlob } from './store.ts';
import {
  MAX_FACES_PER_ENROLMENT,
  type EnrolFace,
  type Gallery,
  type GalleryConfig,
  type GalleryPolicy,
  type IdentityPolicy,
  type StoredFace,
} from './gallery.ts';

/** Name and version of the export format (JSON lines). */
export const EXPORT_FORMAT = 'reidb-export';
export const EXPORT_VERSION = 1;

/** The first line of an export file. */
export interface ExportHeader {
  format: typeof EXPORT_FORMAT;
  version: number;
  createdAt: string;
  /** The deployment whose keys sealed the records. */
  deploymentId: string;
  encrypted: boolean;
  config: GalleryConfig | null;
  policy: GalleryPolicy;
}

/** One identity as an export holds it (inside a sealed record when encrypted). */
export interface ExportedIdentity {
  identity: string;
  createdAt: string;
  metadata: Record<string, unknown>;
  policy: IdentityPolicy;
  faces: ExportedFace[];
}

/** A face with its vectors as base64 little-endian float32 and its thumbnail as base64. */
export interface ExportedFace {
  uid: string;
  source: string;
  camera?: string;
  capturedAt?: string;
  enrolledAt: string;
  box: StoredFace['box'];
  pose: StoredFace['pose'];
  quality: number;
  detectorScore: number;
  meshScore: number;
  appearance: string;
  geometry: string;
  fused: string;
  thumbnail?: string;
}

export interface ExportSummary {
  file: string;
  identities: number;
  faces: number;
  encrypted: boolean;
  /** Hex sha256 of every line before the trailer. */
  sha256: string;
}

export interface ImportSummary {
  identities: number;
  faces: number;
  /** Faces the erasure ledger lists: erased after the export was made; not restored. */
  skippedErased: number;
  /** Faces the gallery already holds (same uid). */
  skippedDuplicate: number;
  /** Identity records whose export key was destroyed (erased since) or is not held here. */
  unreadable: number;
}

/**
 * Writes the whole gallery to `file` as JSON lines: a header, one line per identity and a
 * trailer with the counts and the sha256 of the lines before it. Unless `plaintext`, each
 * identity's record is sealed with AES-256-GCM under that identity's own export key, which
 * stays in deployment.sqlite: the file is unreadable elsewhere, and an identity erased later
 * can never be read from it again. The file is written beside its final name and renamed
 * into place, with mode 0600.
 */
export function exportGallery(
  gallery: Gallery,
  file: string,
  options: { plaintext?: boolean } = {},
): ExportSummary {
  const encrypted = options.plaintext !== true;
  const { deployment } = gallery;
  const partial = path.join(path.dirname(file), `.${path.basename(file)}.partial`);
  const hash = createHash('sha256');
  let fd: number;
  try {
    // A partial file left by a crash may have another mode: start from a new one.
    rmSync(partial, { force: true });
    fd = openSync(partial, 'wx', 0o600);
  } catch (cause) {
    throw new ReidbError('invalid_argument', `cannot write ${file}: ${(cause as Error).message}`, {
      input: file,
      cause,
    });
  }

  let identities = 0;
  let faces = 0;
  try {
    const writeLine = (value: unknown): void => {
      const line = JSON.stringify(value) + '\n';
      hash.update(line);
      writeSync(fd, line);
    };
    const header: ExportHeader = {
      format: EXPORT_FORMAT,
      version: EXPORT_VERSION,
      createdAt: new Date().toISOString(),
      deploymentId: deployment.id,
      encrypted,
      config: gallery.config(),
      policy: gallery.policy(),
    };
    writeLine(header);

    for (const identity of gallery.identityLabels()) {
      const { record, faces: stored } = gallery.identityData(identity);
      const exported: ExportedIdentity = {
        identity,
        createdAt: record.createdAt,
        metadata: record.metadata,
        policy: record.policy,
        faces: stored.map(exportFace),
      };
      if (encrypted) {
        const identityRef = deployment.identityRef(identity);
        const plain = Buffer.from(JSON.stringify(exported), 'utf8');
        writeLine({ type: 'identity', sealed: deployment.exportKeys.seal(identityRef, plain) });
      } else {
        writeLine({ type: 'identity', record: exported });
      }
      identities++;
      faces += stored.length;
    }

    const sha256 = hash.digest('hex');
    writeSync(fd, JSON.stringify({ type: 'end', identities, faces, sha256 }) + '\n');
    fsyncSync(fd);
    closeSync(fd);
    renameSync(partial, file);
    return { file, identities, faces, encrypted, sha256 };
  } catch (error) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    rmSync(partial, { force: true });
    throw error;
  }
}

/**
 * Restores an export into the gallery. The file is read twice: first to check the header and
 * the trailer's sha256 (a damaged or cut file changes nothing), then to add its identities.
 * A face the erasure ledger lists is never restored, nor one already held (same uid); a
 * sealed record whose export key was destroyed is unreadable and skipped. Throws
 * export_invalid for a file that is not an intact export, or whose records were all sealed
 * by another deployment; gallery_mismatch when its configuration differs from the gallery's.
 */
export async function importGallery(gallery: Gallery, file: string): Promise<ImportSummary> {
  const header = await checkExportFile(file);
  if (header.config !== null) gallery.ensureConfig(header.config);
  const { deployment } = gallery;
  const summary: ImportSummary = {
    identities: 0,
    faces: 0,
    skippedErased: 0,
    skippedDuplicate: 0,
    unreadable: 0,
  };

  let lineNumber = 0;
  let sealedLines = 0;
  for await (const line of readLines(file)) {
    lineNumber++;
    if (lineNumber === 1) continue;
    const entry = JSON.parse(line) as {
      type: string;
      sealed?: SealedRecord;
      record?: ExportedIdentity;
    };
    if (entry.type === 'end') break;

    let record: ExportedIdentity;
    if (entry.sealed !== undefined) {
      sealedLines++;
      const plain = deployment.exportKeys.open(entry.sealed);
      if (plain === null) {
        summary.unreadable++;
        continue;
      }
      record = JSON.parse(plain.toString('utf8')) as ExportedIdentity;
    } else if (entry.record !== undefined) {
      record = entry.record;
    } else {
      throw invalid(file, `line ${lineNumber} is neither a sealed nor a plain identity record`);
    }

    const uids = record.faces.map((face) => face.uid);
    const erased = deployment.ledger.erasedAmong(uids);
    const held = gallery.heldFaceUids(uids);
    const fresh = record.faces.filter((face) => !erased.has(face.uid) && !held.has(face.uid));
    summary.skippedErased += erased.size;
    summary.skippedDuplicate += [...held].filter((uid) => !erased.has(uid)).length;
    if (fresh.length === 0) continue;

    for (let start = 0; start < fresh.length; start += MAX_FACES_PER_ENROLMENT) {
      const chunk = fresh.slice(start, start + MAX_FACES_PER_ENROLMENT).map(importFace);
      gallery.enrol(record.identity, chunk, record.metadata, record.policy);
    }
    summary.identities++;
    summary.faces += fresh.length;
  }
  gallery.flush();

  if (
    sealedLines > 0 &&
    summary.unreadable === sealedLines &&
    header.deploymentId !== deployment.id
  ) {
    throw invalid(
      file,
      `its records are sealed by deployment ${header.deploymentId}, whose keys are not here; ` +
        'make the export with --plaintext to move a gallery to another deployment',
    );
  }
  return summary;
}

/** Reads the header, checks every line is JSON and the trailer's counts and sha256. */
async function checkExportFile(file: string): Promise<ExportHeader> {
  const hash = createHash('sha256');
  let header: ExportHeader | null = null;
  let trailer: { identities: number; faces: number; sha256: string } | null = null;
  let identities = 0;
  let lineNumber = 0;

  for await (const line of readLines(file)) {
    lineNumber++;
    if (trailer !== null) throw invalid(file, `line ${lineNumber} follows the trailer`);
    let value: Record<string, unknown>;
    try {
      value = JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw invalid(file, `line ${lineNumber} is not JSON`);
    }

    if (lineNumber === 1) {
      if (value.format !== EXPORT_FORMAT) throw invalid(file, 'it is not a reidb export');
      if (value.version !== EXPORT_VERSION) {
        throw invalid(file, `export version ${String(value.version)} is not ${EXPORT_VERSION}`);
      }
      header = value as unknown as ExportHeader;
    } else if (value.type === 'end') {
      trailer = value as unknown as typeof trailer;
      continue;
    } else if (value.type === 'identity') {
      identities++;
    } else {
      throw invalid(file, `line ${lineNumber} has an unknown type`);
    }
    hash.update(line + '\n');
  }

  const end = trailer as { identities: number; faces: number; sha256: string } | null;
  if (header === null) throw invalid(file, 'it is empty');
  if (end === null) throw invalid(file, 'it has no trailer (the file was cut short)');
  if (end.identities !== identities || end.sha256 !== hash.digest('hex')) {
    throw invalid(file, 'its lines do not match the trailer (the file was changed or damaged)');
  }
  return header;
}

async function* readLines(file: string): AsyncGenerator<string> {
  const stream = createReadStream(file, { encoding: 'utf8' });
  stream.on('error', () => undefined);
  try {
    for await (const line of createInterface({ input: stream, crlfDelay: Infinity })) {
      if (line.length > 0) yield line;
    }
  } catch (cause) {
    throw new ReidbError('file_not_found', `cannot read ${file}: ${(cause as Error).message}`, {
      input: file,
      cause,
    });
  }
}

function exportFace(face: StoredFace): ExportedFace {
  return {
    uid: face.uid,
    source: face.source,
    ...(face.camera !== undefined ? { camera: face.camera } : {}),
    ...(face.capturedAt !== undefined ? { capturedAt: face.capturedAt } : {}),
    enrolledAt: face.enrolledAt,
    box: face.box,
    pose: face.pose,
    quality: face.quality,
    detectorScore: face.detectorScore,
    meshScore: face.meshScore,
    appearance: float32ToBlob(face.appearance).toString('base64'),
    geometry: float32ToBlob(face.geometry).toString('base64'),
    fused: float32ToBlob(face.fused).toString('base64'),
    ...(face.thumbnail !== undefined ? { thumbnail: face.thumbnail.toString('base64') } : {}),
  };
}

function importFace(face: ExportedFace): EnrolFace {
  return {
    uid: face.uid,
    source: face.source,
    camera: face.camera,
    capturedAt: face.capturedAt,
    enrolledAt: face.enrolledAt,
    box: face.box,
    pose: face.pose,
    quality: face.quality,
    detectorScore: face.detectorScore,
    meshScore: face.meshScore,
    appearance: blobToFloat32(Buffer.from(face.appearance, 'base64')),
    geometry: blobToFloat32(Buffer.from(face.geometry, 'base64')),
    fused: blobToFloat32(Buffer.from(face.fused, 'base64')),
    thumbnail: face.thumbnail === undefined ? undefined : Buffer.from(face.thumbnail, 'base64'),
  };
}

function invalid(file: string, why: string): ReidbError {
  return new ReidbError('export_invalid', `${file} is not a usable export: ${why}`, {
    input: file,
  });
}
