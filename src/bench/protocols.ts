/**
 * Evaluation protocols: which dataset items are queries (probes) and which form the gallery.
 * A split holds item indices, so the runner can drop images without a face afterwards and still
 * account for every query it was asked to evaluate.
 *
 * - `loo` (leave-one-out, default for face folders): every image of an identity with >= 2
 *   images is a query against all other images; single-image identities and distractors are
 *   gallery only. The query's own image is removed through `excludeSelf`.
 * - `frontal-gallery`: per identity, images with |yaw| <= 15 deg are the gallery, the others
 *   are probes; yaw from the dataset labels where present, else from the mesh estimate.
 * - `cross-camera` (default for re-ID layouts): the dataset's own query / gallery lists where it
 *   has them (Market-1501, MSMT17, a `split` column); for CUHK01 camera A ('1') queries against
 *   camera B ('2'); otherwise every image against all others. Same-pid-same-camera gallery items
 *   are always removed from a query's ranking.
 */
import { ReidbError } from '../errors.ts';
import type { Dataset, DatasetItem, LayoutKind } from './layouts.ts';

export type ProtocolKind = 'loo' | 'frontal-gallery' | 'cross-camera';

export const PROTOCOL_KINDS: readonly ProtocolKind[] = ['loo', 'frontal-gallery', 'cross-camera'];

/** Where a yaw angle came from: the dataset's ground truth or reidb's own mesh estimate. */
export type YawSource = 'dataset' | 'mesh';

/** Yaw of item `index` in degrees with its source, or undefined when it is not known. */
export type YawGetter = (
  item: DatasetItem,
  index: number,
) => { yaw: number; source: YawSource } | undefined;

export interface Split {
  protocol: ProtocolKind;
  /** Item indices of the queries (probes), in item order. */
  queries: number[];
  /** Item indices of the gallery, in item order. */
  gallery: number[];
  /** Per query: the position in `gallery` of the query's own image, or -1. */
  excludeSelf: number[];
  /** Remove same-pid-same-camera gallery items from each query's ranking. */
  excludeSameCamera: boolean;
  notes: string[];
  /** frontal-gallery only: where the yaw angles came from ('mixed' when both sources). */
  yawSource?: YawSource | 'mixed';
}

export interface ProtocolOptions {
  /** The layout the items came from; picks the cross-camera variant. */
  layout?: LayoutKind;
  /** frontal-gallery: yaw of each item (required for that protocol). */
  yawOf?: YawGetter;
  /** frontal-gallery: largest |yaw| in degrees that still counts as frontal (default 15). */
  frontalMaxYaw?: number;
  /**
   * cross-camera without the dataset's own lists: camid of the query camera; the gallery is
   * every other camera. Default '1' for CUHK01 (camera A); unset elsewhere (all-vs-all).
   */
  queryCamera?: string;
}

/** The protocol a layout gets when none is asked for. */
export function defaultProtocol(layout: LayoutKind): ProtocolKind {
  return layout === 'folder' ? 'loo' : 'cross-camera';
}

/** Builds the query / gallery split of `items` for a protocol. */
export function buildSplit(
  items: ReadonlyArray<DatasetItem>,
  protocol: ProtocolKind,
  options: ProtocolOptions = {},
): Split {
  switch (protocol) {
    case 'loo':
      return leaveOneOut(items);
    case 'frontal-gallery':
      return frontalGallery(items, options);
    case 'cross-camera':
      return crossCamera(items, options);
    default:
      throw new ReidbError('invalid_argument', `unknown protocol '${String(protocol)}'`, {
        input: 'protocol',
        details: { known: PROTOCOL_KINDS },
      });
  }
}

/**
 * Items of a distractor folder as gallery clutter: pid 'distractor:<n>' (n = 0, 1, ... in item
 * order, so no two distractors share an identity) and the distractor flag set.
 */
export function asDistractors(dataset: Dataset): DatasetItem[] {
  return dataset.items.map((item, n) => ({
    file: item.file,
    pid: `distractor:${n}`,
    distractor: true,
    yaw: item.yaw,
    pitch: item.pitch,
  }));
}

/** True for items that may never be a query. */
function galleryOnly(item: DatasetItem): boolean {
  return item.distractor === true || item.junk === true;
}

function leaveOneOut(items: ReadonlyArray<DatasetItem>): Split {
  const perPid = new Map<string, number>();
  for (const item of items) {
    if (!galleryOnly(item)) perPid.set(item.pid, (perPid.get(item.pid) ?? 0) + 1);
  }

  // Everything is gallery; queries are images whose identity has another image.
  const gallery = items.map((_, i) => i);
  const queries = gallery.filter((i) => !galleryOnly(items[i]) && perPid.get(items[i].pid)! >= 2);
  const singles = [...perPid.values()].filter((n) => n === 1).length;
  const notes = [
    `leave-one-out: ${queries.length} queries, each against the other ${items.length - 1} images`,
    `${singles} single-image identities and ${items.length - perPidTotal(perPid)} ` +
      'distractor/junk images are gallery only',
  ];
  return {
    protocol: 'loo',
    queries,
    gallery,
    excludeSelf: queries, // gallery position = item index
    excludeSameCamera: false,
    notes,
  };
}

function perPidTotal(perPid: Map<string, number>): number {
  let n = 0;
  for (const v of perPid.values()) n += v;
  return n;
}

function frontalGallery(items: ReadonlyArray<DatasetItem>, options: ProtocolOptions): Split {
  if (options.yawOf === undefined) {
    throw new ReidbError('invalid_argument', 'frontal-gallery protocol needs a yaw getter', {
      input: 'yawOf',
    });
  }
  const maxYaw = options.frontalMaxYaw ?? 15;
  const queries: number[] = [];
  const gallery: number[] = [];
  const sources = new Set<YawSource>();
  let unknown = 0;

  // Split by |yaw|; distractors and junk go to the gallery whatever their pose.
  items.forEach((item, i) => {
    if (galleryOnly(item)) {
      gallery.push(i);
      return;
    }
    const pose = options.yawOf!(item, i);
    if (pose === undefined || !Number.isFinite(pose.yaw)) {
      unknown++;
      return;
    }
    sources.add(pose.source);
    if (Math.abs(pose.yaw) <= maxYaw) gallery.push(i);
    else queries.push(i);
  });

  // Identities whose probes have no frontal image to be found.
  const galleryPids = new Set(gallery.map((i) => items[i].pid));
  const orphanPids = new Set(queries.map((i) => items[i].pid).filter((p) => !galleryPids.has(p)));
  const yawSource = sources.size === 2 ? 'mixed' : sources.size === 1 ? [...sources][0] : undefined;
  const notes = [
    `frontal gallery: |yaw| <= ${maxYaw} deg -> gallery (${gallery.length}), ` +
      `others -> probes (${queries.length}); yaw source ${yawSource ?? 'none'}`,
  ];
  if (unknown > 0) notes.push(`${unknown} images with unknown yaw (no label, no face) left out`);
  if (orphanPids.size > 0) {
    notes.push(`${orphanPids.size} identities have no frontal gallery image`);
  }
  return {
    protocol: 'frontal-gallery',
    queries,
    gallery,
    excludeSelf: queries.map(() => -1),
    excludeSameCamera: false,
    notes,
    yawSource,
  };
}

function crossCamera(items: ReadonlyArray<DatasetItem>, options: ProtocolOptions): Split {
  const hasSplit = items.some((item) => item.split !== undefined);
  const queryCamera = options.queryCamera ?? (options.layout === 'cuhk01' ? '1' : undefined);
  const indices = items.map((_, i) => i);

  // The dataset's own query / gallery lists.
  if (hasSplit) {
    const queries = indices.filter((i) => items[i].split === 'query' && !galleryOnly(items[i]));
    const gallery = indices.filter((i) => items[i].split !== 'query' || galleryOnly(items[i]));
    const notes = [
      `cross-camera on the dataset's own lists: ${queries.length} queries, ` +
        `${gallery.length} gallery; same-pid-same-camera gallery items removed per query`,
    ];
    return splitOf(queries, gallery, () => -1, notes);
  }

  // One camera against the others (CUHK01: camera A queries, camera B gallery).
  if (queryCamera !== undefined) {
    const queries = indices.filter((i) => items[i].camid === queryCamera && !galleryOnly(items[i]));
    const gallery = indices.filter((i) => items[i].camid !== queryCamera || galleryOnly(items[i]));
    if (queries.length === 0) {
      throw new ReidbError('invalid_argument', `no query images from camera '${queryCamera}'`, {
        input: 'queryCamera',
      });
    }
    const notes = [
      `cross-camera: camera ${queryCamera} images are queries (${queries.length}), the other ` +
        `cameras' images the gallery (${gallery.length})`,
    ];
    return splitOf(queries, gallery, () => -1, notes);
  }

  // Every image against all the others, same camera removed.
  const missing = items.filter((item) => item.camid === undefined && !item.distractor).length;
  if (missing > 0) {
    throw new ReidbError(
      'invalid_argument',
      `cross-camera protocol needs a camid for every image; ${missing} have none`,
      { input: 'camid' },
    );
  }
  const queries = indices.filter((i) => !galleryOnly(items[i]));
  const notes = [
    `cross-camera all-vs-all: each of ${queries.length} images queries all others; ` +
      'same-pid-same-camera gallery items removed',
  ];
  return splitOf(queries, indices, (q) => q, notes);
}

function splitOf(
  queries: number[],
  gallery: number[],
  selfOf: (itemIndex: number) => number,
  notes: string[],
): Split {
  return {
    protocol: 'cross-camera',
    queries,
    gallery,
    excludeSelf: queries.map(selfOf),
    excludeSameCamera: true,
    notes,
  };
}
