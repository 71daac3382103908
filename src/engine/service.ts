import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

import { ReidbError, toReidbError } from '../errors.ts';
import {
  MAX_FACES_PER_ENROLMENT,
  MAX_K,
  type EnrolFace,
  type Gallery,
  type IdentityPolicy,
  type Match,
} from '../gallery/gallery.ts';
import { decodeImage } from '../image/decode.ts';
import { makeThumbnail } from '../image/thumbnail.ts';
import { validateIdentity } from '../gallery/identity.ts';
import type { Box, FaceFeatures } from '../types.ts';
import type { Engine, EngineResult } from './pool.ts';
import { noFaceReason, pickEnrolmentFace } from './pipeline.ts';

/** One image to enrol or search: a file path, or bytes with the name used in messages. */
export type ImageInput = { file: string } | { buffer: Uint8Array; name: string };

export interface EnrolItem {
  identity: string;
  image: ImageInput;
  camera?: string;
  capturedAt?: string;
}

export interface Skipped {
  file: string;
  code: string;
  message: string;
}

export interface EnrolledFace {
  file: string;
  identity: string;
  faceId: number;
  box: Box;
  quality: number;
  /** Present when the image held several faces and one was chosen. */
  note?: string;
}

export interface EnrolReport {
  enrolled: EnrolledFace[];
  /** Distinct identities that received at least one face in this call. */
  identities: string[];
  skipped: Skipped[];
}

export interface SearchFace {
  box: Box;
  /** Degrees. */
  yaw: number;
  pitch: number;
  roll: number;
  /** In [0, 1]. */
  quality: number;
  matches: Match[];
}

export interface SearchReport {
  file: string;
  faces: SearchFace[];
  /** Present when no usable face was found: why. */
  reason?: string;
  /** Candidates that were found but not usable. */
  rejected?: { box: Box; code: string; message: string }[];
}

export interface SearchOptions {
  /** Matches per face, 1..1000. Default 5. */
  k?: number;
  /** Drop matches below this cosine similarity in [-1, 1]. Default: none. */
  minScore?: number;
}

function inputName(image: ImageInput): string {
  return 'file' in image ? image.file : image.name;
}

function analyse(engine: Engine, image: ImageInput): Promise<EngineResult> {
  return 'file' in image
    ? engine.analyseFile(image.file)
    : engine.analyseBuffer(image.buffer, image.name);
}

function toEnrolFace(face: FaceFeatures, item: EnrolItem): EnrolFace {
  return {
    source: path.basename(inputName(item.image)),
    camera: item.camera,
    capturedAt: item.capturedAt,
    box: face.detection.box,
    pose: face.pose,
    quality: face.quality,
    detectorScore: face.detection.score,
    meshScore: face.mesh.score,
    appearance: face.appearance,
    geometry: face.geometry,
    fused: face.fused,
  };
}

/** What an enrolment records besides the faces. */
export interface EnrolOptions {
  /** Recorded for every identity of the call (keep-for in seconds, legal basis, purpose). */
  policy?: IdentityPolicy;
  /**
   * When the request began (performance.now(), ms), for the erasure fence: an erasure of one
   * of the identities acknowledged after it wins. Default: when enrolImages is called.
   */
  startedAt?: number;
}

/**
 * Enrols images: each is analysed on the engine's workers, one face is chosen per image
 * (pickEnrolmentFace), and the faces of each identity are written in one transaction.
 * A bad image is listed in `skipped` with its code and never stops the batch. A thumbnail of
 * each face is stored only when the gallery's policy asks for one; nothing else of the image
 * is kept.
 */
export async function enrolImages(
  engine: Engine,
  gallery: Gallery,
  items: EnrolItem[],
  options: EnrolOptions = {},
): Promise<EnrolReport> {
  gallery.ensureConfig(engine.identity);
  const thumbnails = gallery.policy().thumbnails;
  // An erasure of one of these identities acknowledged after this moment wins over the batch.
  const startedAt = options.startedAt ?? performance.now();

  const skipped: Skipped[] = [];
  const byIdentity = new Map<
    string,
    { item: EnrolItem; face: FaceFeatures; note?: string; thumbnail?: Buffer }[]
  >();

  const results = await Promise.all(
    items.map(async (item) => {
      const name = inputName(item.image);
      try {
        validateIdentity(item.identity);
        const { analysis } = await analyse(engine, item.image);
        const picked = pickEnrolmentFace(analysis, name);
        const thumbnail =
          thumbnails === 'off'
            ? undefined
            : await thumbnailOf(item.image, picked.face, thumbnails === 'blurred');
        return { item, face: picked.face, note: picked.note, thumbnail };
      } catch (e) {
        const err = toReidbError(e, name);
        skipped.push({ file: name, code: err.code, message: err.message });
        return null;
      }
    }),
  );

  for (const r of results) {
    if (!r) continue;
    const list = byIdentity.get(r.item.identity) ?? [];
    list.push(r);
    byIdentity.set(r.item.identity, list);
  }

  // One transaction per identity and chunk: the gallery takes at most MAX_FACES_PER_ENROLMENT
  // faces a call, and a failure of one identity is reported without losing the others.
  const enrolled: EnrolledFace[] = [];
  for (const [identity, list] of byIdentity) {
    for (let start = 0; start < list.length; start += MAX_FACES_PER_ENROLMENT) {
      const chunk = list.slice(start, start + MAX_FACES_PER_ENROLMENT);
      let faceIds: number[];
      try {
        faceIds = gallery.enrol(
          identity,
          chunk.map((r) => ({ ...toEnrolFace(r.face, r.item), thumbnail: r.thumbnail })),
          undefined,
          options.policy,
          { startedAt },
        ).faceIds;
      } catch (e) {
        const err = toReidbError(e, identity);
        for (const r of chunk) {
          skipped.push({
            file: inputName(r.item.image),
            code: err.code,
            message: `${identity}: ${err.message}`,
          });
        }
        continue;
      }
      chunk.forEach((r, i) => {
        enrolled.push({
          file: inputName(r.item.image),
          identity,
          faceId: faceIds[i],
          box: r.face.detection.box,
          quality: r.face.quality,
          ...(r.note ? { note: r.note } : {}),
        });
      });
    }
  }
  gallery.flush();

  const identities = [...new Set(enrolled.map((e) => e.identity))];
  return { enrolled, identities, skipped };
}

/** The thumbnail of an enrolled face, from the image decoded once more (upright, sRGB). */
async function thumbnailOf(image: ImageInput, face: FaceFeatures, blurred: boolean) {
  const decoded =
    'file' in image
      ? await decodeImage(image.file)
      : await decodeImage(Buffer.from(image.buffer), { name: image.name });
  return makeThumbnail(decoded, face.detection.box, blurred);
}

/**
 * Lists a folder layout ROOT/<identity>/<image> as enrolment items. Every regular file in an
 * identity folder is offered (the engine refuses non-images with a code); anything else
 * (files directly under ROOT, sub-folders, broken or looping links, pipes and devices) is
 * reported in `skipped` with the reason, so one odd entry never stops the batch.
 */
export function listFolderLayout(root: string): { items: EnrolItem[]; skipped: Skipped[] } {
  let entries: string[];
  try {
    entries = readdirSync(root).sort();
  } catch (cause) {
    throw new ReidbError('file_not_found', `${root}: cannot read the folder`, {
      input: root,
      cause,
    });
  }

  const items: EnrolItem[] = [];
  const skipped: Skipped[] = [];
  const skip = (file: string, code: string, message: string): void => {
    skipped.push({ file, code, message: `${file}: ${message}` });
  };

  for (const entry of entries) {
    const dir = path.join(root, entry);
    const kind = entryKind(dir);
    if (kind !== 'directory') {
      if (kind === 'file')
        skip(
          dir,
          'invalid_argument',
          'not inside an identity folder (layout is ROOT/<identity>/<image>)',
        );
      else skip(dir, 'not_an_image', kind);
      continue;
    }

    let files: string[];
    try {
      files = readdirSync(dir).sort();
    } catch (cause) {
      skip(dir, 'file_not_found', `cannot read the folder (${(cause as Error).message})`);
      continue;
    }
    for (const file of files) {
      const full = path.join(dir, file);
      const fileKind = entryKind(full);
      if (fileKind === 'file') items.push({ identity: entry, image: { file: full } });
      else if (fileKind === 'directory')
        skip(full, 'invalid_argument', 'a folder inside an identity folder is not read');
      else skip(full, 'not_an_image', fileKind);
    }
  }
  return { items, skipped };
}

/** 'file', 'directory', or why the entry is neither (broken link, link loop, pipe, ...). */
function entryKind(file: string): string {
  try {
    const stat = statSync(file);
    if (stat.isFile()) return 'file';
    if (stat.isDirectory()) return 'directory';
    return 'not a regular file (pipe, socket or device)';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'a link to a file that does not exist';
    if (code === 'ELOOP') return 'a link that loops';
    return `cannot be read (${code ?? (e as Error).message})`;
  }
}

/**
 * Searches the gallery with every usable face of an image. Each face gets up to k matches,
 * one per identity (its best face), sorted by cosine similarity. An image without a usable
 * face answers with an empty `faces` and the `reason`; it never embeds the whole frame.
 */
export async function searchImage(
  engine: Engine,
  gallery: Gallery,
  image: ImageInput,
  options: SearchOptions = {},
): Promise<SearchReport> {
  const k = options.k ?? 5;
  const file = inputName(image);
  const { analysis } = await analyse(engine, image);

  const config = gallery.config();
  if (config && config.fusionId !== engine.identity.fusionId) {
    throw new ReidbError(
      'gallery_mismatch',
      `gallery vectors come from fusion '${config.fusionId}' but the engine produces ` +
        `'${engine.identity.fusionId}'`,
      { input: file },
    );
  }

  const faces: SearchFace[] = analysis.faces.map((face) => ({
    box: face.detection.box,
    yaw: face.pose.yaw,
    pitch: face.pose.pitch,
    roll: face.pose.roll,
    quality: face.quality,
    matches: config ? bestPerIdentity(gallery, face.fused, k, options.minScore) : [],
  }));

  const report: SearchReport = { file, faces };
  if (faces.length === 0) report.reason = noFaceReason(analysis);
  if (analysis.rejected.length > 0) {
    report.rejected = analysis.rejected.map((r) => ({
      box: r.box,
      code: r.code,
      message: r.message,
    }));
  }
  return report;
}

/**
 * Top-k identities for a vector, each with its best face. The index returns faces, and one
 * identity may hold many near the probe (frames of one video), so the request widens until
 * k identities are found or the whole gallery has been seen.
 */
function bestPerIdentity(
  gallery: Gallery,
  vector: Float32Array,
  k: number,
  minScore?: number,
): Match[] {
  const total = gallery.stats().faces;
  let wanted = Math.min(MAX_K, Math.max(k * 4, k + 20));
  for (;;) {
    const matches = gallery.search(vector, Math.min(wanted, MAX_K), minScore);
    const seen = new Set<string>();
    const out: Match[] = [];
    for (const m of matches) {
      if (seen.has(m.identity)) continue;
      seen.add(m.identity);
      out.push(m);
      if (out.length === k) return out;
    }
    if (matches.length < Math.min(wanted, MAX_K) || wanted >= total) return out;
    if (wanted >= MAX_K) return gallery.searchIdentitiesExact(vector, k, minScore);
    wanted *= 4;
  }
}
