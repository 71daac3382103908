/**
 * Dataset layouts: turn a dataset root folder into a flat list of labelled image items for the
 * benchmark. Each reader checks its layout and fails with ReidbError('invalid_argument') naming
 * the path and what was wrong (missing folder, no images, a file name it cannot parse).
 *
 * Layouts:
 * - `folder`: ROOT/<identity>/<image>; optional ROOT/labels.csv (Pointing'04 pan/tilt, MFR2
 *   mask_type, or camid) attached by the `file` column.
 * - `labels`: ROOT/labels.csv with at least file,pid,camid (paths relative to ROOT); an optional
 *   `split` column (query | gallery) fixes the query and gallery sets.
 * - `cuhk01`: PPPPIII.png files in ROOT/campus (or ROOT); III 001-002 camera A ('1'),
 *   003-004 camera B ('2'); checked against ROOT/labels.csv when present.
 * - `cuhk03`: exported images, see `readCuhk03` for the expected layout.
 * - `market1501`: ROOT/query and ROOT/bounding_box_test, names PPPP_cCsS_FFFFFF_NN.jpg.
 * - `msmt17`: ROOT/list_query.txt and ROOT/list_gallery.txt (`path label` lines).
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

import { ReidbError } from '../errors.ts';

export type LayoutKind = 'folder' | 'labels' | 'cuhk01' | 'cuhk03' | 'market1501' | 'msmt17';

export const LAYOUT_KINDS: readonly LayoutKind[] = [
  'folder',
  'labels',
  'cuhk01',
  'cuhk03',
  'market1501',
  'msmt17',
];

/** One labelled image of a dataset. */
export interface DatasetItem {
  /** Absolute path. */
  file: string;
  /** Identity label as the dataset spells it (folder name, pid field, list label). */
  pid: string;
  camid?: string;
  /** Ground-truth yaw in degrees from the dataset's own labels (Pointing'04 pan). */
  yaw?: number;
  /** Ground-truth pitch in degrees from the dataset's own labels (Pointing'04 tilt). */
  pitch?: number;
  /** Occlusion label (MFR2 mask_type, e.g. 'no-mask', 'surgical_blue'). */
  occlusion?: string;
  /** The dataset's own query / gallery assignment, where it has one. */
  split?: 'query' | 'gallery';
  /** Junk in the Market-1501 sense (pid -1): never a hit or a miss. */
  junk?: boolean;
  /** Distractor: a gallery-only negative (Market-1501 pid 0000, or added clutter). */
  distractor?: boolean;
  /** Other label columns, as strings. */
  extra?: Record<string, string>;
}

export interface Dataset {
  root: string;
  kind: LayoutKind;
  items: DatasetItem[];
  /** Files that were skipped on purpose (hidden files, non-image files), absolute paths. */
  ignored: string[];
  /** Human-readable facts about how the layout was read. */
  notes: string[];
  /** 'dataset' when yaw comes from the dataset's own labels for at least one item. */
  yawSource?: 'dataset';
}

export interface LayoutOptions {
  /** CUHK03 only: which box set to use; required for that layout. */
  cuhk03Variant?: 'labeled' | 'detected';
}

/** Image extensions the harness lists (lower case, without the dot). */
export const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set([
  'jpg',
  'jpeg',
  'png',
  'webp',
  'pgm',
  'bmp',
  'tif',
  'tiff',
  'gif',
]);

/** True when the file name has an image extension (case-insensitive) and is not hidden. */
export function isImageName(name: string): boolean {
  if (name.startsWith('.')) return false;
  const ext = path.extname(name).slice(1).toLowerCase();
  return IMAGE_EXTENSIONS.has(ext);
}

/** Reads a dataset root with the given layout. */
export function readLayout(root: string, kind: LayoutKind, options: LayoutOptions = {}): Dataset {
  const abs = path.resolve(root);
  requireDir(abs, 'dataset root');
  switch (kind) {
    case 'folder':
      return readFolder(abs);
    case 'labels':
      return readLabelsLayout(abs);
    case 'cuhk01':
      return readCuhk01(abs);
    case 'cuhk03':
      return readCuhk03(abs, options.cuhk03Variant);
    case 'market1501':
      return readMarket1501(abs);
    case 'msmt17':
      return readMsmt17(abs);
    default:
      throw new ReidbError('invalid_argument', `unknown layout '${String(kind)}'`, {
        input: 'layout',
        details: { known: LAYOUT_KINDS },
      });
  }
}

// ---------------------------------------------------------------------------------------------
// folder

/**
 * ROOT/<identity>/<image>. Top-level files (labels.csv, pairs.csv, MANIFEST.md) are metadata,
 * not identities. Inside identity folders, hidden files, non-image files and sub-folders go to
 * `ignored`. A file with an image extension is listed even if its content is not an image: the
 * caller decodes it and reports the failure. ROOT/labels.csv, when present, is attached by its
 * `file` column: pan -> yaw and tilt -> pitch (degrees), mask_type -> occlusion, camid -> camid;
 * other columns go to `extra`.
 */
function readFolder(root: string): Dataset {
  const items: DatasetItem[] = [];
  const ignored: string[] = [];
  const notes: string[] = [];

  // List identities and their images.
  for (const identity of sortedEntries(root)) {
    const dir = path.join(root, identity.name);
    if (identity.name.startsWith('.')) {
      ignored.push(dir);
      continue;
    }
    if (!identity.isDirectory()) continue;
    for (const entry of sortedEntries(dir)) {
      const file = path.join(dir, entry.name);
      if (entry.isFile() && isImageName(entry.name)) items.push({ file, pid: identity.name });
      else ignored.push(file);
    }
  }
  if (items.length === 0) {
    throw new ReidbError('invalid_argument', `no images in ${root}/<identity>/ (folder layout)`, {
      input: root,
      details: { ignored: ignored.length },
    });
  }

  // Attach per-image labels.
  const labelsFile = path.join(root, 'labels.csv');
  let yawSource: 'dataset' | undefined;
  if (existsSync(labelsFile)) {
    const attached = attachFolderLabels(items, labelsFile, root);
    if (attached.yaw > 0) yawSource = 'dataset';
    notes.push(
      `labels.csv: ${attached.matched} of ${items.length} images labelled` +
        `, columns ${attached.columns.join(',')}` +
        (attached.unmatched > 0 ? `; ${attached.unmatched} label rows name no listed image` : ''),
    );
    if (attached.yaw > 0) notes.push('yaw/pitch from the dataset labels (pan = yaw, tilt = pitch)');
  }
  if (ignored.length > 0) notes.push(`${ignored.length} non-image or hidden entries ignored`);
  const identities = new Set(items.map((i) => i.pid)).size;
  notes.push(`${identities} identities, ${items.length} images`);
  return { root, kind: 'folder', items, ignored, notes, yawSource };
}

function attachFolderLabels(
  items: DatasetItem[],
  labelsFile: string,
  root: string,
): { matched: number; unmatched: number; yaw: number; columns: string[] } {
  const table = readCsv(labelsFile);
  requireColumns(table, ['file'], labelsFile);
  const byFile = new Map(items.map((item) => [item.file, item]));
  const used = new Set(['file', 'pan', 'tilt', 'mask_type', 'camid']);
  let matched = 0;
  let unmatched = 0;
  let yaw = 0;

  for (const row of table.rows) {
    const item = byFile.get(path.resolve(root, row.file));
    if (item === undefined) {
      unmatched++;
      continue;
    }
    matched++;
    if (row.pan !== undefined && row.pan !== '') {
      item.yaw = parseNumber(row.pan, labelsFile, 'pan');
      yaw++;
    }
    if (row.tilt !== undefined && row.tilt !== '') {
      item.pitch = parseNumber(row.tilt, labelsFile, 'tilt');
    }
    if (row.mask_type !== undefined && row.mask_type !== '') item.occlusion = row.mask_type;
    if (row.camid !== undefined && row.camid !== '') item.camid = row.camid;
    const extra = Object.fromEntries(Object.entries(row).filter(([k]) => !used.has(k)));
    if (Object.keys(extra).length > 0) item.extra = extra;
  }
  return { matched, unmatched, yaw, columns: table.columns };
}

// ---------------------------------------------------------------------------------------------
// labels

/**
 * ROOT/labels.csv with columns file,pid,camid (more allowed); `file` relative to ROOT. An
 * optional `split` column (query | gallery) and optional pan/tilt/mask_type columns are used.
 * Every listed file must exist.
 */
function readLabelsLayout(root: string): Dataset {
  const labelsFile = path.join(root, 'labels.csv');
  if (!existsSync(labelsFile)) {
    throw new ReidbError('invalid_argument', `labels layout needs ${labelsFile}`, {
      input: labelsFile,
    });
  }
  const table = readCsv(labelsFile);
  requireColumns(table, ['file', 'pid', 'camid'], labelsFile);
  const used = new Set(['file', 'pid', 'camid', 'split', 'pan', 'tilt', 'mask_type']);
  const items: DatasetItem[] = [];

  for (const [i, row] of table.rows.entries()) {
    const file = path.resolve(root, row.file);
    if (!existsSync(file)) {
      throw new ReidbError('invalid_argument', `${labelsFile} row ${i + 2}: ${file} not found`, {
        input: file,
      });
    }
    const item: DatasetItem = { file, pid: row.pid, camid: row.camid };
    if (row.split === 'query' || row.split === 'gallery') item.split = row.split;
    else if (row.split !== undefined && row.split !== '') {
      throw new ReidbError(
        'invalid_argument',
        `${labelsFile} row ${i + 2}: split must be 'query' or 'gallery', got '${row.split}'`,
        { input: labelsFile },
      );
    }
    if (row.pan) item.yaw = parseNumber(row.pan, labelsFile, 'pan');
    if (row.tilt) item.pitch = parseNumber(row.tilt, labelsFile, 'tilt');
    if (row.mask_type) item.occlusion = row.mask_type;
    if (row.pid === '-1') item.junk = true;
    const extra = Object.fromEntries(Object.entries(row).filter(([k]) => !used.has(k)));
    if (Object.keys(extra).length > 0) item.extra = extra;
    items.push(item);
  }
  if (items.length === 0) {
    throw new ReidbError('invalid_argument', `${labelsFile} lists no images`, {
      input: labelsFile,
    });
  }
  const notes = [`labels.csv: ${items.length} images, columns ${table.columns.join(',')}`];
  const yawSource = items.some((i) => i.yaw !== undefined) ? ('dataset' as const) : undefined;
  return { root, kind: 'labels', items, ignored: [], notes, yawSource };
}

// ---------------------------------------------------------------------------------------------
// cuhk01

const CUHK01_NAME = /^(\d{4})(\d{3})\.png$/i;

/**
 * CUHK01 campus: ROOT/campus/PPPPIII.png (or ROOT/PPPPIII.png). pid = PPPP without leading
 * zeros (as in its labels.csv); III 1-2 -> camid '1' (camera A), 3-4 -> camid '2' (camera B).
 * When ROOT/labels.csv exists each row's pid and camid must agree with the file name.
 */
function readCuhk01(root: string): Dataset {
  const dir = existsSync(path.join(root, 'campus')) ? path.join(root, 'campus') : root;
  const items: DatasetItem[] = [];
  const ignored: string[] = [];
  const notes: string[] = [];

  // Parse the file names.
  for (const entry of sortedEntries(dir)) {
    const file = path.join(dir, entry.name);
    if (!entry.isFile() || !isImageName(entry.name)) {
      if (dir !== root || entry.name.startsWith('.')) ignored.push(file);
      continue;
    }
    const m = CUHK01_NAME.exec(entry.name);
    if (m === null) throw unparsable(file, 'CUHK01 names are PPPPIII.png');
    const index = Number(m[2]);
    if (index < 1 || index > 4) throw unparsable(file, 'CUHK01 image index must be 001-004');
    const camid = index <= 2 ? '1' : '2';
    items.push({ file, pid: String(Number(m[1])), camid, extra: { img_index: String(index) } });
  }
  if (items.length === 0) {
    throw new ReidbError('invalid_argument', `no PPPPIII.png images in ${dir} (cuhk01 layout)`, {
      input: dir,
    });
  }

  // Cross-check with labels.csv.
  const labelsFile = path.join(root, 'labels.csv');
  if (existsSync(labelsFile)) {
    const table = readCsv(labelsFile);
    requireColumns(table, ['file', 'pid', 'camid'], labelsFile);
    const byFile = new Map(items.map((item) => [item.file, item]));
    for (const row of table.rows) {
      const item = byFile.get(path.resolve(root, row.file));
      if (item === undefined) continue;
      if (item.pid !== String(Number(row.pid)) || item.camid !== row.camid) {
        throw new ReidbError(
          'invalid_argument',
          `${labelsFile}: ${row.file} is labelled pid ${row.pid} camid ${row.camid} but its ` +
            `name says pid ${item.pid} camid ${item.camid}`,
          { input: labelsFile },
        );
      }
    }
    notes.push(`labels.csv agrees with the file names (${table.rows.length} rows)`);
  }
  notes.push('camid 1 = camera A (images 001-002), camid 2 = camera B (003-004)');
  return { root, kind: 'cuhk01', items, ignored, notes };
}

// ---------------------------------------------------------------------------------------------
// cuhk03

const CUHK03_NAME = /^(\d+)_(\d+)_(\d+)\.(png|jpg|jpeg)$/i;
const CUHK03_TORCHREID_NAME = /^(\d+)_(\d+)_(\d+)_(\d+)\.(png|jpg|jpeg)$/i;

/**
 * CUHK03 as exported images (the original is a .mat file, which the harness does not read):
 *
 *   ROOT/labeled/<pid>_<cam>_<idx>.png     and/or   ROOT/detected/<pid>_<cam>_<idx>.png
 *
 * (`images_labeled` / `images_detected` are accepted as folder names too, and so are
 * torchreid-style names <campair>_<pid>_<cam>_<idx>.png, whose pid becomes "<campair>_<pid>").
 * The variant must be chosen explicitly: labeled (hand-drawn boxes) and detected (DPM boxes)
 * give different numbers and must never be mixed. An optional ROOT/<variant>/test_pids.txt
 * (one pid per line) restricts the items to the test identities of a split such as the
 * 767/700 protocol; without it all identities are used and the notes say so.
 */
function readCuhk03(root: string, variant: LayoutOptions['cuhk03Variant']): Dataset {
  if (variant !== 'labeled' && variant !== 'detected') {
    throw new ReidbError(
      'invalid_argument',
      `cuhk03 layout needs an explicit variant 'labeled' or 'detected' (got ${String(variant)})`,
      { input: 'cuhk03Variant' },
    );
  }
  const candidates = [path.join(root, variant), path.join(root, `images_${variant}`)];
  const dir = candidates.find((d) => existsSync(d) && statSync(d).isDirectory());
  if (dir === undefined) {
    throw new ReidbError(
      'invalid_argument',
      `cuhk03 ${variant}: none of ${candidates.join(', ')} exists; expected exported images ` +
        `<pid>_<cam>_<idx>.png`,
      { input: root },
    );
  }
  const items: DatasetItem[] = [];
  const ignored: string[] = [];

  // Parse the file names.
  for (const entry of sortedEntries(dir)) {
    const file = path.join(dir, entry.name);
    if (!entry.isFile() || !isImageName(entry.name)) {
      ignored.push(file);
      continue;
    }
    const four = CUHK03_TORCHREID_NAME.exec(entry.name);
    const three = CUHK03_NAME.exec(entry.name);
    if (four !== null) items.push({ file, pid: `${four[1]}_${four[2]}`, camid: four[3] });
    else if (three !== null) items.push({ file, pid: three[1], camid: three[2] });
    else throw unparsable(file, 'CUHK03 names are <pid>_<cam>_<idx>.png');
  }
  if (items.length === 0) {
    throw new ReidbError('invalid_argument', `no images in ${dir} (cuhk03 ${variant})`, {
      input: dir,
    });
  }

  // Restrict to the test identities of a split, when given.
  const notes = [`cuhk03 variant: ${variant} (${dir})`];
  const pidsFile = path.join(dir, 'test_pids.txt');
  let kept = items;
  if (existsSync(pidsFile)) {
    const pids = new Set(
      readFileSync(pidsFile, 'utf8')
        .split(/\r?\n/)
        .map((l) => l.trim())
        .filter((l) => l !== ''),
    );
    kept = items.filter((item) => pids.has(item.pid));
    notes.push(`test_pids.txt: ${pids.size} test identities, ${kept.length} images`);
  } else {
    notes.push('no test_pids.txt: all identities used (not the 767/700 protocol)');
  }
  return { root, kind: 'cuhk03', items: kept, ignored, notes };
}

// ---------------------------------------------------------------------------------------------
// market1501

const MARKET_NAME = /^(-1|\d+)_c(\d+)s(\d+)_(\d+)_(\d+)\.jpe?g$/i;

/**
 * Market-1501: ROOT/query (split 'query') and ROOT/bounding_box_test (split 'gallery'), names
 * PPPP_cCsS_FFFFFF_NN.jpg. pid -1 marks junk, 0000 distractors (DPM false alarms). Non-image
 * files (Thumbs.db) are ignored; an image whose name does not parse is an error.
 */
function readMarket1501(root: string): Dataset {
  const items: DatasetItem[] = [];
  const ignored: string[] = [];
  const counts: Record<string, number> = {};

  for (const [folder, split] of [
    ['query', 'query'],
    ['bounding_box_test', 'gallery'],
  ] as const) {
    const dir = path.join(root, folder);
    requireDir(dir, `market1501 ${folder} folder`);
    let n = 0;
    for (const entry of sortedEntries(dir)) {
      const file = path.join(dir, entry.name);
      if (!entry.isFile() || !isImageName(entry.name)) {
        ignored.push(file);
        continue;
      }
      const m = MARKET_NAME.exec(entry.name);
      if (m === null) throw unparsable(file, 'Market-1501 names are PPPP_cCsS_FFFFFF_NN.jpg');
      const item: DatasetItem = { file, pid: m[1], camid: m[2], split };
      if (m[1] === '-1') item.junk = true;
      else if (Number(m[1]) === 0) {
        item.pid = '0000';
        item.distractor = true;
      }
      items.push(item);
      n++;
    }
    if (n === 0) {
      throw new ReidbError('invalid_argument', `no images in ${dir} (market1501 layout)`, {
        input: dir,
      });
    }
    counts[split] = n;
  }
  const junk = items.filter((i) => i.junk).length;
  const distractors = items.filter((i) => i.distractor).length;
  const notes = [
    `query ${counts.query}, gallery ${counts.gallery} images; ${junk} junk (pid -1), ` +
      `${distractors} distractors (pid 0000)`,
  ];
  return { root, kind: 'market1501', items, ignored, notes };
}

// ---------------------------------------------------------------------------------------------
// msmt17

/**
 * MSMT17: ROOT/list_query.txt and ROOT/list_gallery.txt, lines `<path> <label>`. Paths are
 * resolved against the first of ROOT/test, ROOT/mask_test_v2, ROOT that holds the first listed
 * file (MSMT17_V1 and V2 differ here). pid = the list label; camid = the third `_` field of the
 * file name (e.g. 0000_000_01_0303morning_0015_0.jpg -> '01').
 */
function readMsmt17(root: string): Dataset {
  const items: DatasetItem[] = [];
  const notes: string[] = [];

  for (const [name, split] of [
    ['list_query.txt', 'query'],
    ['list_gallery.txt', 'gallery'],
  ] as const) {
    const listFile = path.join(root, name);
    if (!existsSync(listFile)) {
      throw new ReidbError('invalid_argument', `msmt17 layout needs ${listFile}`, {
        input: listFile,
      });
    }
    const lines = readFileSync(listFile, 'utf8')
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== '');
    if (lines.length === 0) {
      throw new ReidbError('invalid_argument', `${listFile} is empty`, { input: listFile });
    }
    const base = msmtBase(root, lines[0].split(/\s+/)[0], listFile);

    for (const [i, line] of lines.entries()) {
      const [rel, label] = line.split(/\s+/);
      const camid = path.basename(rel ?? '').split('_')[2];
      if (rel === undefined || label === undefined || !/^-?\d+$/.test(label) || !camid) {
        throw new ReidbError(
          'invalid_argument',
          `${listFile} line ${i + 1}: expected '<path> <label>' with a pid_idx_cam_... name`,
          { input: listFile, details: { line } },
        );
      }
      items.push({ file: path.join(base, rel), pid: String(Number(label)), camid, split });
    }
    notes.push(`${name}: ${lines.length} images under ${base}`);
  }
  return { root, kind: 'msmt17', items, ignored: [], notes };
}

function msmtBase(root: string, firstPath: string, listFile: string): string {
  const bases = [path.join(root, 'test'), path.join(root, 'mask_test_v2'), root];
  const base = bases.find((b) => existsSync(path.join(b, firstPath)));
  if (base === undefined) {
    throw new ReidbError(
      'invalid_argument',
      `${listFile}: first listed file ${firstPath} is not under ${bases.join(', ')}`,
      { input: listFile },
    );
  }
  return base;
}

// ---------------------------------------------------------------------------------------------
// pairs

export interface Pair {
  /** Absolute path. */
  a: string;
  /** Absolute path. */
  b: string;
  same: boolean;
}

/**
 * Verification pairs from a CSV with columns img_a,img_b,same (more allowed, e.g. fold);
 * paths relative to `root`. `same` accepts 1/0, true/false, yes/no.
 */
export function readPairs(file: string, root: string): Pair[] {
  if (!existsSync(file)) {
    throw new ReidbError('invalid_argument', `pairs file ${file} not found`, { input: file });
  }
  const table = readCsv(file);
  requireColumns(table, ['img_a', 'img_b', 'same'], file);
  const absRoot = path.resolve(root);

  return table.rows.map((row, i) => {
    const same = parseBool(row.same);
    if (same === undefined) {
      throw new ReidbError(
        'invalid_argument',
        `${file} row ${i + 2}: same must be 1/0 or true/false, got '${row.same}'`,
        { input: file },
      );
    }
    return { a: path.resolve(absRoot, row.img_a), b: path.resolve(absRoot, row.img_b), same };
  });
}

function parseBool(value: string | undefined): boolean | undefined {
  const v = (value ?? '').trim().toLowerCase();
  if (v === '1' || v === 'true' || v === 'yes') return true;
  if (v === '0' || v === 'false' || v === 'no') return false;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// CSV and file helpers

export interface CsvTable {
  columns: string[];
  /** One object per data row, keyed by column name; missing cells are ''. */
  rows: Record<string, string>[];
}

/**
 * Reads a small CSV file (RFC 4180: commas, double-quoted fields with "" escapes, CRLF or LF).
 * The first line is the header. Blank lines are skipped.
 */
export function readCsv(file: string): CsvTable {
  const text = readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
  const records = parseCsv(text).filter((r) => !(r.length === 1 && r[0].trim() === ''));
  if (records.length === 0) {
    throw new ReidbError('invalid_argument', `${file} is empty (no CSV header)`, { input: file });
  }
  const columns = records[0].map((c) => c.trim());
  const rows = records.slice(1).map((cells) => {
    const row: Record<string, string> = {};
    columns.forEach((c, i) => (row[c] = (cells[i] ?? '').trim()));
    return row;
  });
  return { columns, rows };
}

function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let record: string[] = [];
  let field = '';
  let quoted = false;

  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"' && field === '') quoted = true;
    else if (c === ',') {
      record.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      record.push(field);
      records.push(record);
      record = [];
      field = '';
    } else field += c;
  }
  if (field !== '' || record.length > 0) {
    record.push(field);
    records.push(record);
  }
  return records;
}

function requireColumns(table: CsvTable, needed: string[], file: string): void {
  const missing = needed.filter((c) => !table.columns.includes(c));
  if (missing.length > 0) {
    throw new ReidbError(
      'invalid_argument',
      `${file} lacks column(s) ${missing.join(', ')} (has ${table.columns.join(', ')})`,
      { input: file },
    );
  }
}

function parseNumber(value: string, file: string, column: string): number {
  const n = Number(value);
  if (!Number.isFinite(n)) {
    throw new ReidbError('invalid_argument', `${file}: ${column} '${value}' is not a number`, {
      input: file,
    });
  }
  return n;
}

function requireDir(dir: string, what: string): void {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new ReidbError('invalid_argument', `${what} ${dir} is missing or not a folder`, {
      input: dir,
    });
  }
}

function sortedEntries(dir: string): import('node:fs').Dirent[] {
  return readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  );
}

function unparsable(file: string, expected: string): ReidbError {
  return new ReidbError('invalid_argument', `cannot parse the name of ${file}: ${expected}`, {
    input: file,
  });
}
