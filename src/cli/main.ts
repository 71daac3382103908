import { readFileSync } from 'node:fs';

import { createEngine, type Engine } from '../engine/pool.ts';
import {
  enrolImages,
  listFolderLayout,
  searchImage,
  type EnrolItem,
  type SearchReport,
} from '../engine/service.ts';
import { ReidbError, toReidbError } from '../errors.ts';
import { checkPolicyText, type Gallery, type IdentityPolicy } from '../gallery/gallery.ts';
import { validateIdentity } from '../gallery/identity.ts';
import { jsonLineLogger, type Logger } from '../log.ts';
import {
  auditEnrolment,
  auditedLookup,
  auditErasure,
  auditSearch,
  cliActor,
} from '../policy/audit-events.ts';
import { parseDuration } from '../policy/duration.ts';
import { int, num, parseArgs, required, str, type FlagSpec, type ParsedArgs } from './args.ts';
import { benchCommand, BENCH_FLAGS } from './bench-command.ts';
import { COMPLIANCE_COMMANDS } from './compliance-commands.ts';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, exitCodeFor } from './exit-codes.ts';
import { keepFusionModel, openCliGallery } from './gallery-location.ts';
import { ENGINE_FLAGS, engineOptions } from './options.ts';
import { refuseCommand, REFUSE_FLAGS } from './refuse-command.ts';
import { serveCommand, SERVE_FLAGS } from './serve-command.ts';
import { trainCommand, TRAIN_FLAGS } from './train-command.ts';

/** What a command hands back: the JSON document and the lines for people. */
export interface CommandOutput {
  json: unknown;
  text: string;
  /** Exit code when not 0: a batch in which nothing succeeded ends 1, its report printed. */
  exitCode?: number;
}

export interface CommandContext {
  args: ParsedArgs;
  logger: Logger;
  /** Writes to stdout (used only by long-running commands such as serve). */
  stdout: (s: string) => void;
  /** Writes progress for people to stderr. */
  stderr: (s: string) => void;
}

/** One command (or `group subcommand`) of the table below. */
export interface Command {
  flags: FlagSpec;
  /** The usage line, shown in `reidb --help` and `reidb <command> --help`. */
  summary: string;
  /** More lines for `reidb <command> --help`. */
  help?: string;
  run(ctx: CommandContext): Promise<CommandOutput>;
}

const COMMON: FlagSpec = { json: false, verbose: false, help: false, 'new-deployment': false };

const COMMANDS: Record<string, Command> = {
  enroll: {
    summary:
      'reidb enroll [--db DIR] --layout folder ROOT | [--db DIR] --identity ID FILE... ' +
      '[--camera C] [--keep-for 30d] [--legal-basis TEXT] [--purpose TEXT]',
    help:
      '--keep-for, --legal-basis and --purpose are recorded for every identity this creates\n' +
      "(an existing one keeps what it has); keep-for may only be shorter than the gallery's\n" +
      '(reidb policy set).\n' +
      'Durations: 90s, 15m, 12h, 30d, 52w.',
    flags: {
      ...COMMON,
      ...ENGINE_FLAGS,
      db: true,
      layout: true,
      identity: true,
      camera: true,
      'keep-for': true,
      'legal-basis': true,
      purpose: true,
    },
    run: enrollCommand,
  },
  search: {
    summary: 'reidb search [--db DIR] [--top-k K] [--min-score S] FILE...',
    flags: { ...COMMON, ...ENGINE_FLAGS, db: true, 'top-k': true, 'min-score': true },
    run: searchCommand,
  },
  erase: {
    summary: 'reidb erase [--db DIR] --identity ID',
    flags: { ...COMMON, db: true, identity: true },
    run: eraseCommand,
  },
  bench: {
    summary:
      'reidb bench --layout folder|labels|cuhk01|cuhk03|market1501|msmt17 ROOT [--pairs FILE] ' +
      '[--align raw|mesh] [--protocol loo|frontal-gallery] [--distractors DIR] [--out DIR]',
    flags: { ...COMMON, ...ENGINE_FLAGS, ...BENCH_FLAGS },
    run: benchCommand,
  },
  train: {
    summary:
      'reidb train --layout folder ROOT --out FILE [--val-share 0.2] [--epochs N] [--cache FILE] ' +
      '[--loss-weights 0.7,0.3] [--optimiser adamw|sgd] [--lr X] [--init appearance-identity|glorot]',
    flags: { ...COMMON, ...ENGINE_FLAGS, ...TRAIN_FLAGS },
    run: trainCommand,
  },
  refuse: {
    summary: 'reidb refuse [--db DIR] --fusion FILE|concat|appearance [--geometry-weight W]',
    flags: { ...COMMON, ...REFUSE_FLAGS },
    run: refuseCommand,
  },
  serve: {
    summary:
      'reidb serve [--db DIR] [--port 8080] [--host 127.0.0.1] [--retention-interval 1h|off] ' +
      '[--rate-limit 50] [--max-upload-mb 10]',
    help:
      'Without an API key (reidb keys create) the API runs open and listens on loopback only;\n' +
      'any other --host is refused until a key exists. Retention runs every\n' +
      '--retention-interval (default 1h; off disables it). Each API key (or address, when\n' +
      'open) may make --rate-limit requests a second, in bursts of twice that (0: no limit).',
    flags: { ...COMMON, ...ENGINE_FLAGS, ...SERVE_FLAGS },
    run: serveCommand,
  },
  ...COMPLIANCE_COMMANDS,
};

/** Commands that take a subcommand: `reidb keys create`, `reidb audit verify`, ... */
const GROUPS = new Set(
  Object.keys(COMMANDS)
    .filter((name) => name.includes(' '))
    .map((name) => name.split(' ')[0]!),
);

/**
 * Runs the `reidb` command line and returns the exit code: 0 done (a batch that skipped bad
 * files still ends 0 and lists them), 2 usage error, 1 anything else. With --json the command
 * prints exactly one JSON document on stdout; errors then are `{"error": {code, message}}`.
 */
export async function main(
  argv: string[],
  io: { stdout: (s: string) => void; stderr: (s: string) => void } = {
    stdout: (s) => process.stdout.write(s),
    stderr: (s) => process.stderr.write(s),
  },
): Promise<number> {
  let [name, ...rest] = argv;
  const json = rest.includes('--json');

  if (!name || name === 'help' || name === '--help' || name === '-h') {
    io.stdout(helpText());
    return name ? EXIT_OK : EXIT_USAGE;
  }
  if (name === '--version' || name === 'version') {
    io.stdout(`reidb ${packageVersion()}\n`);
    return EXIT_OK;
  }
  if (GROUPS.has(name)) {
    const sub = rest[0];
    const usageLines = groupHelp(name);
    if (sub === undefined || sub.startsWith('-')) {
      if (rest.includes('--help') || rest.includes('-h')) {
        io.stdout(usageLines);
        return EXIT_OK;
      }
      return fail(
        io,
        json,
        'invalid_argument',
        `reidb ${name} needs a subcommand\n\n${usageLines.trimEnd()}`,
        EXIT_USAGE,
      );
    }
    if (COMMANDS[`${name} ${sub}`] === undefined) {
      return fail(
        io,
        json,
        'invalid_argument',
        `unknown command 'reidb ${name} ${sub}'\n\n${usageLines.trimEnd()}`,
        EXIT_USAGE,
      );
    }
    name = `${name} ${sub}`;
    rest = rest.slice(1);
  }
  const command = COMMANDS[name];
  if (!command) {
    return fail(
      io,
      json,
      'invalid_argument',
      `unknown command '${name}'\n\n${helpText()}`,
      EXIT_USAGE,
    );
  }

  try {
    const args = parseArgs(rest, command.flags);
    if (args.flags.help) {
      io.stdout(`usage: ${command.summary}\n${command.help ? `\n${command.help}\n` : ''}`);
      return EXIT_OK;
    }
    const logger = args.flags.verbose
      ? jsonLineLogger(io.stderr, 'debug')
      : jsonLineLogger(io.stderr, 'warn');
    const out = await command.run({ args, logger, stdout: io.stdout, stderr: io.stderr });
    // A command whose document was already printed (serve prints its address) returns none.
    if (json && out.json !== undefined) io.stdout(JSON.stringify(out.json) + '\n');
    if (!json) io.stdout(out.text.endsWith('\n') ? out.text : out.text + '\n');
    return out.exitCode ?? EXIT_OK;
  } catch (e) {
    const err = toReidbError(e);
    return fail(io, json, err.code, err.message, exitCodeFor(err.code), err.input);
  }
}

function fail(
  io: { stdout: (s: string) => void; stderr: (s: string) => void },
  json: boolean,
  code: string,
  message: string,
  exit: number,
  input?: string,
): number {
  if (json)
    io.stdout(JSON.stringify({ error: { code, message, ...(input ? { input } : {}) } }) + '\n');
  io.stderr(`reidb: ${message} [${code}]\n`);
  return exit;
}

/** The usage lines of every subcommand of a group, for `reidb keys --help`. */
function groupHelp(group: string): string {
  const lines = Object.entries(COMMANDS)
    .filter(([name]) => name.startsWith(`${group} `))
    .map(([, c]) => `  ${c.summary}`);
  return `usage:\n${lines.join('\n')}\n`;
}

function helpText(): string {
  const lines = Object.values(COMMANDS).map((c) => `  ${c.summary}`);
  return (
    'usage: reidb <command> [options]   (every command takes --json)\n\n' +
    lines.join('\n') +
    '\n\nWithout --db DIR, commands use the default gallery (.reidb/ and indexes/ in the checkout).' +
    '\n`reidb <command> --help` says more; compliance: docs/COMPLIANCE.md.' +
    '\n\nFace pipeline options: --align mesh|raw, --embedder dlib|onnx-arcface --model FILE,\n' +
    '  --backend wasm|cpu, --workers N, --fusion concat|appearance|MODEL_FILE, --geometry-weight W\n'
  );
}

/**
 * Opens the gallery and an engine that matches how it was built. For a search the gallery
 * must exist, and an engine whose vectors differ from the gallery's (alignment, embedder,
 * fusion) is refused before any image is read.
 */
async function openBoth(
  ctx: CommandContext,
  purpose: 'enrol' | 'search',
): Promise<{ gallery: Gallery; engine: Engine }> {
  const gallery = await openCliGallery(ctx, { mustExist: purpose === 'search' });
  try {
    const options = engineOptions(ctx.args, ctx.logger, gallery.config(), gallery.dir);
    const engine = await createEngine(options);
    if (purpose === 'search' && gallery.config() !== null) {
      try {
        gallery.ensureConfig(engine.identity);
      } catch (e) {
        await engine.close();
        throw e;
      }
    }
    keepFusionModel(gallery, engine, options.pipeline?.fusionModel);
    return { gallery, engine };
  } catch (e) {
    gallery.close();
    throw e;
  }
}

async function enrollCommand(ctx: CommandContext): Promise<CommandOutput> {
  const { args } = ctx;
  const layout = str(args, 'layout');
  const identity = str(args, 'identity');
  const policy = enrolmentPolicy(args);

  let items: EnrolItem[];
  let listed: { file: string; code: string; message: string }[] = [];
  if (layout !== undefined) {
    if (layout !== 'folder')
      throw usageError(`--layout must be 'folder' for enroll, got '${layout}'`);
    if (identity !== undefined)
      throw usageError('give either --layout folder ROOT or --identity ID');
    if (args.positionals.length !== 1) throw usageError('--layout folder needs exactly one ROOT');
    const found = listFolderLayout(args.positionals[0]);
    items = found.items;
    listed = found.skipped;
  } else if (identity !== undefined) {
    if (args.positionals.length === 0) throw usageError('--identity ID needs at least one FILE');
    validateIdentityArg(identity);
    const camera = str(args, 'camera');
    items = args.positionals.map((file) => ({ identity, image: { file }, camera }));
  } else {
    throw usageError('enroll needs --layout folder ROOT or --identity ID FILE...');
  }

  const { gallery, engine } = await openBoth(ctx, 'enrol');
  try {
    const report = await enrolImages(engine, gallery, items, { policy });
    auditEnrolment(gallery.deployment, cliActor(), report, items, policy);
    const skipped = [...listed, ...report.skipped];
    const stats = gallery.stats();
    const text = [
      `enrolled ${report.enrolled.length} face(s) for ${report.identities.length} identity(ies); ` +
        `gallery now holds ${stats.faces} face(s) of ${stats.identities} identity(ies)`,
      ...report.enrolled.filter((e) => e.note).map((e) => `  ${e.file}: ${e.note}`),
      ...skipped.map((s) => `  skipped: ${s.message} [${s.code}]`),
    ].join('\n');
    return {
      json: {
        enrolled: report.enrolled.length,
        identities: report.identities.length,
        faces: report.enrolled,
        skipped,
        gallery: { identities: stats.identities, faces: stats.faces },
      },
      text,
      exitCode: report.enrolled.length === 0 && skipped.length > 0 ? EXIT_FAILURE : undefined,
    };
  } finally {
    await engine.close();
    gallery.close();
  }
}

/** --keep-for, --legal-basis and --purpose of enroll, checked before any image is read. */
function enrolmentPolicy(args: ParsedArgs): IdentityPolicy {
  const policy: IdentityPolicy = {};
  const keepFor = str(args, 'keep-for');
  if (keepFor !== undefined) policy.keepForSeconds = parseDuration(keepFor, '--keep-for');
  const legalBasis = str(args, 'legal-basis');
  if (legalBasis !== undefined) policy.legalBasis = checkPolicyText(legalBasis, '--legal-basis');
  const purpose = str(args, 'purpose');
  if (purpose !== undefined) policy.purpose = checkPolicyText(purpose, '--purpose');
  return policy;
}

async function searchCommand(ctx: CommandContext): Promise<CommandOutput> {
  const { args } = ctx;
  if (args.positionals.length === 0) throw usageError('search needs at least one FILE');
  const k = int(args, 'top-k', 1, 1000) ?? 5;
  const minScore = num(args, 'min-score', -1, 1);

  const { gallery, engine } = await openBoth(ctx, 'search');
  try {
    const results: (SearchReport | { file: string; error: { code: string; message: string } })[] =
      await Promise.all(
        args.positionals.map(async (file) => {
          try {
            return await searchImage(engine, gallery, { file }, { k, minScore });
          } catch (e) {
            const err = toReidbError(e, file);
            return { file, error: { code: err.code, message: err.message } };
          }
        }),
      );

    // One row per probe: counts, outcome and who was returned; never the image or its name.
    const actor = cliActor();
    for (const result of results) auditSearch(gallery.deployment, actor, result, k);

    const text = results.map(searchText).join('\n');
    const json = results.length === 1 ? results[0] : { results };
    const failedAll = results.every((r) => 'error' in r);
    return { json, text, exitCode: failedAll ? EXIT_FAILURE : undefined };
  } finally {
    await engine.close();
    gallery.close();
  }
}

function searchText(
  r: SearchReport | { file: string; error: { code: string; message: string } },
): string {
  if ('error' in r) return `${r.file}: ${r.error.message} [${r.error.code}]`;
  if (r.faces.length === 0) return `${r.file}: no face (${r.reason})`;
  const lines = [`${r.file}: ${r.faces.length} face(s)`];
  r.faces.forEach((f, i) => {
    const b = f.box;
    lines.push(
      `  face ${i + 1} at ${Math.round(b.x)},${Math.round(b.y)} ${Math.round(b.width)}x` +
        `${Math.round(b.height)} px, yaw ${f.yaw.toFixed(0)} deg, quality ${f.quality.toFixed(2)}`,
    );
    if (f.matches.length === 0) lines.push('    no match in the gallery');
    f.matches.forEach((m, rank) =>
      lines.push(`    ${rank + 1}. ${m.identity}  score ${m.score.toFixed(3)}  (face ${m.faceId})`),
    );
  });
  return lines.join('\n');
}

async function eraseCommand(ctx: CommandContext): Promise<CommandOutput> {
  const identity = validateIdentityArg(required(ctx.args, 'identity'));
  const gallery = await openCliGallery(ctx, { mustExist: true });
  try {
    const actor = cliActor();
    const result = auditedLookup(gallery.deployment, actor, 'erase', identity, () =>
      gallery.erase(identity, { actor }),
    );
    auditErasure(gallery.deployment, actor, result);
    return {
      json: { identity: result.identity, facesRemoved: result.facesRemoved },
      text: `erased identity ${result.identity}: ${result.facesRemoved} face(s) removed`,
    };
  } finally {
    gallery.close();
  }
}

/** An identity given on the command line; a bad one is a usage error (exit 2). */
function validateIdentityArg(identity: string): string {
  try {
    return validateIdentity(identity);
  } catch (e) {
    const err = e as ReidbError;
    throw new ReidbError('invalid_argument', `--identity: ${err.message}`, { input: '--identity' });
  }
}

function usageError(message: string): ReidbError {
  return new ReidbError('invalid_argument', message);
}

/** The version in the checkout's package.json. */
function packageVersion(): string {
  const file = new URL('../../package.json', import.meta.url);
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}
