import { createHash, timingSafeEqual, type Hash, type Hmac } from 'node:crypto';
import {
  closeSync,
  constants as fsConstants,
  fsyncSync,
  openSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

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
/**
 * 2: a sealed export's trailer carries an HMAC-SHA256 (`mac`) under a key only its deployment
 * holds; a plaintext one's a SHA-256 (`sha256`). Version 1 (an unkeyed SHA-256 for both) is
 * not read.
 */
export const EXPORT_VERSION = 2;

/**
 * Longest line an import reads, in bytes (64 MiB). One line holds one identity with all its
 * faces (about 9 KB each as base64, more with thumbnails), so this allows some thousands of
 * faces per identity; a longer line is refused rather than read into memory.
 */
export const MAX_EXPORT_LINE_BYTES = 64 * 1024 * 1024;

/** Bytes read from an export file at a time. */
const READ_CHUNK_BYTES = 1024 * 1024;

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
  /** Hex sha256 of every line before the trailer (the trailer holds it in a plaintext export). */
  sha256: string;
  /** A sealed export's trailer MAC: hex HMAC-SHA256 of the same lines (Deployment.exportMac). */
  mac?: string;
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

/** The last line of an export file. */
interface ExportTrailer {
  type: 'end';
  identities: number;
  faces: number;
  /** Plaintext exports: hex SHA-256 of every line before the trailer. */
  sha256?: string;
  /** Sealed exports: hex HMAC-SHA256 of the same lines under the deployment's export MAC key. */
  mac?: string;
}

/**
 * Writes the whole gallery to `file` as JSON lines: a header, one line per identity and a
 * trailer with the counts and a digest of the lines before it. Unless `plaintext`, each
 * identity's record is sealed with AES-256-GCM under that identity's own export key, which
 * stays in deployment.sqlite, and the digest is an HMAC-SHA256 under a key derived from the
 * deployment's secret: the file is unreadable elsewhere, an identity erased later can never
 * be read from it again, and no line can be added, removed or moved without the import
 * noticing. A plaintext export's digest is a SHA-256, which detects damage, not tampering.
 * The file is written beside its final name and renamed into place, with mode 0600. Throws
 * invalid_argument naming `file` when it cannot be written or lies inside the gallery
 * directory (where it could replace the gallery's own files).
 */
export function exportGallery(
  gallery: Gallery,
  file: string,
  options: { plaintext?: boolean } = {},
): ExportSummary {
  checkOutsideFolders(file, [gallery.dir], file);
  const encrypted = options.plaintext !== true;
  const { deployment } = gallery;
  const partial = path.join(path.dirname(file), `.${path.basename(file)}.partial`);
  const hash = createHash('sha256');
  const mac = encrypted ? deployment.exportMac() : null;
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
      mac?.update(line);
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
    const digest = mac === null ? undefined : mac.digest('hex');
    const trailer: ExportTrailer =
      digest === undefined
        ? { type: 'end', identities, faces, sha256 }
        : { type: 'end', identities, faces, mac: digest };
    writeSync(fd, JSON.stringify(trailer) + '\n');
    fsyncSync(fd);
    closeSync(fd);
    renameSync(partial, file);
    return { file, identities, faces, encrypted, sha256, ...(digest ? { mac: digest } : {}) };
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
 * Throws invalid_argument naming `input` when `file` would be written inside one of `folders`
 * (or be one of them): the real path of its parent folder plus its name, against the real
 * path of each folder. Used for every file reidb writes on request (exports, audit exports),
 * so that no --out can replace gallery.sqlite, deployment.sqlite or the index files.
 */
export function checkOutsideFolders(file: string, folders: string[], input: string): void {
  const target = path.join(realOrResolved(path.dirname(path.resolve(file))), path.basename(file));
  for (const folder of folders) {
    const real = realOrResolved(folder);
    if (target === real || target.startsWith(real + path.sep)) {
      const prefix = input === file ? '' : `${input}: `;
      throw new ReidbError(
        'invalid_argument',
        `${prefix}${file} is inside the gallery folder ${folder}, where it could replace ` +
          `the gallery's own files; write it elsewhere`,
        { input },
      );
    }
  }
}

function realOrResolved(folder: string): string {
  try {
    return realpathSync(folder);
  } catch {
    return path.resolve(folder);
  }
}

/**
 * Restores an export into the gallery, all or nothing as far as the file goes. The file is
 * read three times. First every line's shape is checked and so is the trailer: the MAC of a
 * sealed export, the SHA-256 of a plaintext one, and the counts. Then every record is opened
 * and checked as an enrolment would check it (label, metadata, policy, each face's uid,
 * enrolment time, dimensions and values), with nothing stored. Only then are the identities
 * added: a new identity with the record's metadata and policy, an existing one with its
 * missing faces only (its own metadata and policy stay). A face the erasure ledger lists is
 * never restored, nor one already held (same uid); a sealed record whose export key was
 * destroyed is unreadable and skipped. Each line is checked to be the same at every reading.
 *
 * Throws file_not_found when the file cannot be read; export_invalid, changing nothing, for
 * a file that is not a regular file, not an intact export of this version, holds a line
 * longer than MAX_EXPORT_LINE_BYTES or a bad record (naming the line), or was sealed by
 * another deployment; gallery_mismatch when its configuration differs from the gallery's.
 * A gallery without a configuration takes the export's once the first reading passes.
 */
export async function importGallery(gallery: Gallery, file: string): Promise<ImportSummary> {
  const handle = await openExportFile(file);
  try {
    const checked = await checkExportFile(handle, file, gallery);
    const { header } = checked;
    if (checked.identityLines === 0) return emptySummary();

    // A gallery without a configuration (a new one, or one whose data was lost) takes the
    // export's configuration and policy, but only once every record has been checked
    // against them: a bad file leaves it as it was.
    // The recorded policy comes back only into a gallery that has none of its own (no
    // configuration and the default policy); it is checked first, like every record.
    const config = checkedConfig(gallery, file, header.config);
    const restorePolicy =
      gallery.config() === null && isDefaultPolicy(gallery.policy())
        ? checkedPolicy(gallery, file, header.policy)
        : null;
    const keepCeiling = (restorePolicy ?? gallery.policy()).keepForSeconds;
    const reader = new RecordReader(gallery, file, checked, { config, keepCeiling });
    const plan = await planImport(handle, reader, gallery, checked.trailer);
    if (gallery.config() === null) gallery.ensureConfig(config);
    if (restorePolicy !== null) gallery.setPolicy(restorePolicy);
    return await writeImport(handle, reader, gallery, plan);
  } finally {
    await handle.close();
  }
}

/** What the first reading learns: the header, the trailer, and a digest of each record line. */
interface CheckedFile {
  header: ExportHeader;
  trailer: ExportTrailer;
  identityLines: number;
  /** sha256 (base64) of each identity line by line number: later readings must match. */
  lineDigests: Map<number, string>;
  /** Line numbers of the header and the trailer. */
  headerLine: number;
  trailerLine: number;
}

/**
 * Opens `file` for reading without blocking on a FIFO, and refuses anything but a regular
 * file: a device such as /dev/zero never ends, and a FIFO or socket cannot be read twice.
 */
async function openExportFile(file: string): Promise<FileHandle> {
  const cannotRead = (cause: unknown): ReidbError =>
    new ReidbError('file_not_found', `cannot read ${file}: ${(cause as Error).message}`, {
      input: file,
      cause,
    });
  let stats: Stats;
  try {
    stats = statSync(file);
  } catch (cause) {
    throw cannotRead(cause);
  }
  refuseIrregular(file, stats);

  let handle: FileHandle;
  try {
    handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (cause) {
    throw cannotRead(cause);
  }
  try {
    // The name may have been pointed at something else between the stat and the open.
    refuseIrregular(file, await handle.stat());
  } catch (error) {
    await handle.close();
    throw error;
  }
  return handle;
}

function refuseIrregular(file: string, stats: Stats): void {
  if (stats.isFile()) return;
  const kind = stats.isDirectory()
    ? 'a directory'
    : stats.isCharacterDevice() || stats.isBlockDevice()
      ? 'a device'
      : stats.isFIFO()
        ? 'a FIFO'
        : stats.isSocket()
          ? 'a socket'
          : 'not a plain file';
  throw invalid(file, `it is ${kind}, not a regular file`);
}

/** First reading: the header, every line's shape, the trailer's counts and its MAC or hash. */
async function checkExportFile(
  handle: FileHandle,
  file: string,
  gallery: Gallery,
): Promise<CheckedFile> {
  const { deployment } = gallery;
  let digest: Hash | Hmac | null = null;
  let header: ExportHeader | null = null;
  let trailer: ExportTrailer | null = null;
  let headerLine = 0;
  let trailerLine = 0;
  const lineDigests = new Map<number, string>();

  for await (const { number, bytes } of readLines(handle, file)) {
    if (trailer !== null) throw invalid(file, `line ${number} follows the trailer`, number);
    const value = parseLine(file, number, bytes);

    if (header === null) {
      header = checkHeader(file, value);
      headerLine = number;
      if (header.encrypted && header.deploymentId !== deployment.id) {
        throw invalid(
          file,
          `its records are sealed by deployment ${header.deploymentId}, whose keys are not ` +
            'here; make the export with --plaintext to move a gallery to another deployment',
        );
      }
      digest = header.encrypted ? deployment.exportMac() : createHash('sha256');
    } else if (value.type === 'end') {
      trailer = checkTrailer(file, number, value, header.encrypted);
      trailerLine = number;
      continue;
    } else if (value.type === 'identity') {
      checkIdentityLine(file, number, value, header.encrypted);
      lineDigests.set(number, lineDigest(bytes));
    } else {
      throw invalid(file, `line ${number} has an unknown type`, number);
    }
    digest!.update(bytes);
    digest!.update('\n');
  }

  if (header === null) throw invalid(file, 'it is empty');
  if (trailer === null) throw invalid(file, 'it has no trailer (the file was cut short)');
  if (trailer.identities !== lineDigests.size) {
    throw invalid(
      file,
      `its trailer counts ${trailer.identities} identities but it holds ${lineDigests.size}`,
    );
  }

  const computed = Buffer.from(digest!.digest('hex'), 'utf8');
  const claimed = Buffer.from((header.encrypted ? trailer.mac : trailer.sha256)!, 'utf8');
  if (computed.length !== claimed.length || !timingSafeEqual(computed, claimed)) {
    throw invalid(
      file,
      header.encrypted
        ? "its lines do not match the trailer's MAC (the file was changed, reordered or " +
            'truncated, or not made by this deployment)'
        : "its lines do not match the trailer's sha256 (the file was changed or damaged)",
    );
  }
  return { header, trailer, identityLines: lineDigests.size, lineDigests, headerLine, trailerLine };
}

function checkHeader(file: string, value: Record<string, unknown>): ExportHeader {
  if (value.format !== EXPORT_FORMAT) throw invalid(file, 'it is not a reidb export');
  if (value.version === 1) {
    throw invalid(
      file,
      `it is a version 1 export, which this reidb no longer reads (its trailer cannot be ` +
        `authenticated); make a new export with this reidb (version ${EXPORT_VERSION})`,
    );
  }
  if (value.version !== EXPORT_VERSION) {
    throw invalid(file, `export version ${String(value.version)} is not ${EXPORT_VERSION}`);
  }
  if (typeof value.encrypted !== 'boolean') {
    throw invalid(file, "line 1: the header's encrypted must be true or false", 1);
  }
  if (typeof value.deploymentId !== 'string') {
    throw invalid(file, "line 1: the header's deploymentId must be a string", 1);
  }
  if (value.config !== null && !isPlainObject(value.config)) {
    throw invalid(file, "line 1: the header's config must be an object or null", 1);
  }
  return value as unknown as ExportHeader;
}

/** An identity line holds what its header promises: sealed records or plain ones, not both. */
function checkIdentityLine(
  file: string,
  number: number,
  value: Record<string, unknown>,
  encrypted: boolean,
): void {
  const [expected, refused] = encrypted ? ['sealed', 'record'] : ['record', 'sealed'];
  if (refused in value) {
    throw invalid(
      file,
      `line ${number} holds a ${refused === 'record' ? 'plaintext' : 'sealed'} record, but ` +
        `the header says the export is ${encrypted ? 'sealed' : 'plaintext'}`,
      number,
    );
  }
  if (!isPlainObject(value[expected])) {
    throw invalid(
      file,
      `line ${number} has no ${encrypted ? 'sealed' : 'plain'} identity record (${expected})`,
      number,
    );
  }
}

function checkTrailer(
  file: string,
  number: number,
  value: Record<string, unknown>,
  encrypted: boolean,
): ExportTrailer {
  const count = (field: 'identities' | 'faces'): void => {
    const n = value[field];
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) {
      throw invalid(file, `line ${number}: the trailer's ${field} must be a count`, number);
    }
  };
  count('identities');
  count('faces');
  const field = encrypted ? 'mac' : 'sha256';
  if (typeof value[field] !== 'string' || !/^[0-9a-f]{64}$/.test(value[field] as string)) {
    throw invalid(
      file,
      `line ${number}: the trailer of a ${encrypted ? 'sealed' : 'plaintext'} export must hold ` +
        `${field} (64 hex digits)`,
      number,
    );
  }
  return value as unknown as ExportTrailer;
}

/** Sets the export's configuration on an unconfigured gallery, or checks that they agree. */
/**
 * The export's configuration, checked: it must exist when the file holds identities, and
 * agree with the gallery's when the gallery has one (gallery_mismatch otherwise). Changes
 * nothing.
 */
function checkedConfig(
  gallery: Gallery,
  file: string,
  config: GalleryConfig | null,
): GalleryConfig {
  if (config === null) {
    throw invalid(file, 'its header has no gallery configuration but it holds identities');
  }
  try {
    if (gallery.config() === null) gallery.checkConfig(config);
    else gallery.ensureConfig(config);
    return config;
  } catch (error) {
    if (error instanceof ReidbError && error.code === 'invalid_argument') {
      throw invalid(file, `line 1: ${error.message}`, 1);
    }
    throw error;
  }
}

function isDefaultPolicy(policy: GalleryPolicy): boolean {
  return (
    policy.keepForSeconds === null &&
    policy.legalBasis === null &&
    policy.purpose === null &&
    policy.thumbnails === 'off'
  );
}

/** The header's gallery policy, checked as setPolicy checks it; export_invalid otherwise. */
function checkedPolicy(
  gallery: Gallery,
  file: string,
  policy: unknown,
): Omit<GalleryPolicy, 'updatedAt'> {
  const given = (policy ?? {}) as Partial<GalleryPolicy>;
  if (policy === null || typeof policy !== 'object' || Array.isArray(policy)) {
    throw invalid(file, 'line 1: its header has no gallery policy', 1);
  }
  const patch = {
    keepForSeconds: given.keepForSeconds ?? null,
    legalBasis: given.legalBasis ?? null,
    purpose: given.purpose ?? null,
    thumbnails: given.thumbnails ?? 'off',
  };
  try {
    gallery.checkPolicy(patch);
  } catch (error) {
    if (error instanceof ReidbError) throw invalid(file, `line 1: ${error.message}`, 1);
    throw error;
  }
  return patch;
}

function emptySummary(): ImportSummary {
  return { identities: 0, faces: 0, skippedErased: 0, skippedDuplicate: 0, unreadable: 0 };
}

/** One identity line, opened and checked as an enrolment would check it. */
type ReadRecord =
  { readable: false } | { readable: true; record: ExportedIdentity; faces: EnrolFace[] };

/**
 * Opens and checks identity lines; the same checks at the second and the third reading, so
 * that what is written is exactly what was checked.
 */
class RecordReader {
  /** Labels the gallery held when the first record was checked. */
  private held?: Set<string>;

  constructor(
    private readonly gallery: Gallery,
    readonly file: string,
    private readonly checked: CheckedFile,
    /** The configuration faces are checked against; the longest keep-for a new identity gets. */
    private readonly target: { config: GalleryConfig; keepCeiling: number | null },
  ) {}

  /** The identity line `number`, or null for the header and the trailer. */
  read(number: number, bytes: Buffer): ReadRecord | null {
    if (number === this.checked.headerLine || number === this.checked.trailerLine) return null;
    if (this.checked.lineDigests.get(number) !== lineDigest(bytes)) {
      throw invalid(this.file, `line ${number} changed while the file was being imported`, number);
    }

    const value = parseLine(this.file, number, bytes);
    let record: unknown;
    if (this.checked.header.encrypted) {
      let plain: Buffer | null;
      try {
        plain = this.gallery.deployment.exportKeys.open(value.sealed as SealedRecord);
      } catch (error) {
        throw this.lineError(number, error);
      }
      if (plain === null) return { readable: false };
      try {
        record = JSON.parse(plain.toString('utf8'));
      } catch {
        throw invalid(this.file, `line ${number}: its sealed record is not JSON`, number);
      }
    } else {
      record = value.record;
    }
    return { readable: true, ...this.checkRecord(number, record) };
  }

  private checkRecord(
    number: number,
    value: unknown,
  ): { record: ExportedIdentity; faces: EnrolFace[] } {
    const fail = (why: string): never => {
      throw invalid(this.file, `line ${number}: ${why}`, number);
    };
    if (!isPlainObject(value)) fail('its record is not an object');
    const record = value as unknown as ExportedIdentity;

    if (typeof record.createdAt !== 'string' || Number.isNaN(Date.parse(record.createdAt))) {
      fail('its createdAt is not an ISO-8601 date-time');
    }
    if (!isPlainObject(record.metadata)) fail('its metadata is not an object');
    if (!isPlainObject(record.policy)) fail('its policy is not an object');
    try {
      // As enrol checks them; for an identity the gallery holds, only its label matters
      // (import adds faces to it and leaves its metadata and policy as they are).
      this.held ??= new Set(this.gallery.identityLabels());
      const held = this.held.has(record.identity);
      // A restore into a gallery whose keep-for is shorter now keeps the identity for that
      // long, as retention would anyway, rather than refuse the whole file.
      const keep = record.policy.keepForSeconds;
      const ceiling = this.target.keepCeiling;
      if (typeof keep === 'number' && ceiling !== null && keep > ceiling) {
        record.policy.keepForSeconds = ceiling;
      }
      this.gallery.checkIdentityFields(
        record.identity,
        held ? undefined : record.metadata,
        held ? undefined : record.policy,
      );
    } catch (error) {
      throw this.lineError(number, error);
    }
    if (!Array.isArray(record.faces)) fail('its faces are not a list');

    const faces = record.faces.map((face, i) => {
      const enrolFace = decodeFace(face, (why) => fail(`faces[${i}]: ${why}`));
      try {
        this.gallery.checkFaces([enrolFace], this.target.config);
      } catch (error) {
        if (!(error instanceof ReidbError)) throw error;
        fail(error.message.replace(/^faces\[0\]/, `faces[${i}]`));
      }
      return enrolFace;
    });
    return { record, faces };
  }

  private lineError(number: number, error: unknown): unknown {
    if (!(error instanceof ReidbError)) return error;
    return invalid(this.file, `line ${number}: ${error.message}`, number);
  }
}

/** What the second reading decided: the counts, and which identities are new. */
interface ImportPlan {
  summary: ImportSummary;
  /** Labels the gallery held before the import. */
  existing: Set<string>;
}

/**
 * Second reading: opens and checks every record, counts what will be added and skipped, and
 * refuses what would make an enrolment fail half-way (a label or face uid twice in the file,
 * an identity kept longer than the gallery allows). Stores nothing.
 */
async function planImport(
  handle: FileHandle,
  reader: RecordReader,
  gallery: Gallery,
  trailer: ExportTrailer,
): Promise<ImportPlan> {
  const { file } = reader;
  const existing = new Set(gallery.identityLabels());
  const labels = new Set<string>();
  const uids = new Set<string>();
  const summary: ImportSummary = {
    identities: 0,
    faces: 0,
    skippedErased: 0,
    skippedDuplicate: 0,
    unreadable: 0,
  };
  let readableFaces = 0;

  for await (const { number, bytes } of readLines(handle, file)) {
    const read = reader.read(number, bytes);
    if (read === null) continue;
    if (!read.readable) {
      summary.unreadable++;
      continue;
    }

    const { record, faces } = read;
    if (labels.has(record.identity)) {
      throw invalid(file, `line ${number}: identity '${record.identity}' appears twice`, number);
    }
    labels.add(record.identity);
    for (const face of faces) {
      if (uids.has(face.uid!)) {
        throw invalid(file, `line ${number}: face uid ${face.uid} appears twice`, number);
      }
      uids.add(face.uid!);
    }
    readableFaces += faces.length;

    const { fresh, erased, held } = freshFaces(gallery, faces);
    summary.skippedErased += erased;
    summary.skippedDuplicate += held;
    if (fresh.length === 0) continue;

    summary.identities++;
    summary.faces += fresh.length;
  }

  const facesMatch =
    summary.unreadable === 0 ? readableFaces === trailer.faces : readableFaces <= trailer.faces;
  if (!facesMatch) {
    throw invalid(
      file,
      `its records hold ${readableFaces} faces; its trailer counts ${trailer.faces}`,
    );
  }
  return { summary, existing };
}

/** Third reading: adds the faces the plan counted. */
async function writeImport(
  handle: FileHandle,
  reader: RecordReader,
  gallery: Gallery,
  plan: ImportPlan,
): Promise<ImportSummary> {
  for await (const { number, bytes } of readLines(handle, reader.file)) {
    const read = reader.read(number, bytes);
    if (read === null || !read.readable) continue;
    const { record, faces } = read;
    const { fresh } = freshFaces(gallery, faces);

    // Only a new identity takes the record's metadata and policy; an existing one keeps its
    // own, and gets only the faces it lacks.
    const isNew = !plan.existing.has(record.identity);
    for (let start = 0; start < fresh.length; start += MAX_FACES_PER_ENROLMENT) {
      const chunk = fresh.slice(start, start + MAX_FACES_PER_ENROLMENT);
      if (isNew && start === 0) {
        const { keepForSeconds, legalBasis, purpose } = record.policy;
        gallery.enrol(record.identity, chunk, record.metadata, {
          keepForSeconds,
          legalBasis,
          purpose,
        });
      } else {
        gallery.enrol(record.identity, chunk);
      }
    }
  }
  gallery.flush();
  return plan.summary;
}

/** The faces neither the ledger lists nor the gallery holds, and how many of each were not. */
function freshFaces(
  gallery: Gallery,
  faces: EnrolFace[],
): { fresh: EnrolFace[]; erased: number; held: number } {
  const uids = faces.map((face) => face.uid!);
  const erased = gallery.deployment.ledger.erasedAmong(uids);
  const held = gallery.heldFaceUids(uids);
  const fresh = faces.filter((face) => !erased.has(face.uid!) && !held.has(face.uid!));
  return {
    fresh,
    erased: erased.size,
    held: [...held].filter((uid) => !erased.has(uid)).length,
  };
}

/**
 * The non-empty lines of the file from its start, with their numbers (1 = first line), as
 * bytes without the line end. A line longer than MAX_EXPORT_LINE_BYTES is export_invalid
 * naming its number, found before more than that is held in memory.
 */
async function* readLines(
  handle: FileHandle,
  file: string,
): AsyncGenerator<{ number: number; bytes: Buffer }> {
  const chunk = Buffer.allocUnsafe(READ_CHUNK_BYTES);
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let number = 0;
  let position = 0;

  for (;;) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(chunk, 0, chunk.length, position));
    } catch (cause) {
      throw new ReidbError('file_not_found', `cannot read ${file}: ${(cause as Error).message}`, {
        input: file,
        cause,
      });
    }
    if (bytesRead === 0) break;
    position += bytesRead;

    const view = chunk.subarray(0, bytesRead);
    let start = 0;
    while (start < view.length) {
      const end = view.indexOf(0x0a, start);
      const piece = view.subarray(start, end === -1 ? view.length : end);
      if (pendingBytes + piece.length > MAX_EXPORT_LINE_BYTES) throw tooLong(file, number + 1);
      if (end === -1) {
        pending.push(Buffer.from(piece));
        pendingBytes += piece.length;
        break;
      }

      number++;
      const line = Buffer.concat([...pending, piece]);
      pending = [];
      pendingBytes = 0;
      if (line.length > 0) yield { number, bytes: line };
      start = end + 1;
    }
  }
  if (pendingBytes > 0) yield { number: number + 1, bytes: Buffer.concat(pending) };
}

function tooLong(file: string, number: number): ReidbError {
  return invalid(
    file,
    `line ${number} is longer than ${MAX_EXPORT_LINE_BYTES / (1024 * 1024)} MiB, the most an ` +
      'export line may hold',
    number,
  );
}

function parseLine(file: string, number: number, bytes: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw invalid(file, `line ${number} is not JSON`, number);
  }
  if (!isPlainObject(value)) throw invalid(file, `line ${number} is not a JSON object`, number);
  return value;
}

function lineDigest(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('base64');
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
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

/** Standard base64 with padding, as Buffer.toString('base64') writes it. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * An exported face as enrol takes it; `fail` names a field that is missing or not decodable.
 * Everything else (values, dimensions, the uid's and enrolment time's form) is left to
 * Gallery.checkFaces.
 */
function decodeFace(face: unknown, fail: (why: string) => never): EnrolFace {
  if (!isPlainObject(face)) fail('is not an object');
  const f = face as unknown as ExportedFace;
  if (typeof f.uid !== 'string') fail('uid is missing');
  if (typeof f.enrolledAt !== 'string') fail('enrolledAt is missing');

  const vector = (field: 'appearance' | 'geometry' | 'fused'): Float32Array => {
    const text: unknown = f[field];
    if (typeof text !== 'string' || !BASE64.test(text)) fail(`${field} is not base64`);
    const bytes = Buffer.from(text as string, 'base64');
    if (bytes.length % 4 !== 0) fail(`${field} is not a list of float32 values`);
    return blobToFloat32(bytes);
  };
  const thumbnail: unknown = f.thumbnail;
  if (thumbnail !== undefined && (typeof thumbnail !== 'string' || !BASE64.test(thumbnail))) {
    fail('thumbnail is not base64');
  }

  return {
    uid: f.uid,
    source: f.source,
    camera: f.camera,
    capturedAt: f.capturedAt,
    enrolledAt: f.enrolledAt,
    box: f.box,
    pose: f.pose,
    quality: f.quality,
    detectorScore: f.detectorScore,
    meshScore: f.meshScore,
    appearance: vector('appearance'),
    geometry: vector('geometry'),
    fused: vector('fused'),
    thumbnail: thumbnail === undefined ? undefined : Buffer.from(thumbnail as string, 'base64'),
  };
}

function invalid(file: string, why: string, line?: number): ReidbError {
  return new ReidbError('export_invalid', `${file} is not a usable export: ${why}`, {
    input: file,
    ...(line === undefined ? {} : { details: { line } }),
  });
}
