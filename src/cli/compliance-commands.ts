import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

import { ReidbError } from '../errors.ts';
import { checkOutsideFolders, exportGallery, importGallery } from '../gallery/export.ts';
import { checkPolicyText, type GalleryPolicy } from '../gallery/gallery.ts';
import { validateIdentity } from '../gallery/identity.ts';
import {
  auditAuditExport,
  auditGalleryExport,
  auditGalleryImport,
  auditKeyCreate,
  auditKeyRevoke,
  auditedLookup,
  auditPolicyChange,
  auditRead,
  cliActor,
} from '../policy/audit-events.ts';
import { policyJson } from '../policy/policy-json.ts';
import { formatDuration, parseDuration } from '../policy/duration.ts';
import { parseRoles } from '../policy/keys.ts';
import { runRetention } from '../policy/retention.ts';
import { subjectAccessReport } from '../policy/subject-access.ts';
import type { AuditRow, KeyRecord, Role } from '../policy/types.ts';
import { oneOf, required, str, type FlagSpec, type ParsedArgs } from './args.ts';
import {
  cliGalleryDir,
  cliGalleryFolders,
  openCliDeployment,
  openCliGallery,
} from './gallery-location.ts';
import type { Command, CommandContext, CommandOutput } from './main.ts';

/**
 * The compliance commands of `reidb`: API keys, retention, the audit trail, the gallery's
 * policy, and encrypted exports and imports. See docs/COMPLIANCE.md. Commands that touch only
 * keys or the audit trail open deployment.sqlite alone, so they work while `reidb serve`
 * holds the gallery.
 */

const COMMON: FlagSpec = { json: false, verbose: false, help: false, 'new-deployment': false };

/** The policy fields `reidb policy set` can change, in the order they are reported. */
type PolicyField = keyof Omit<GalleryPolicy, 'updatedAt'>;

const THUMBNAIL_MODES = ['off', 'on', 'blurred'] as const;

export const COMPLIANCE_COMMANDS: Record<string, Command> = {
  'keys create': {
    summary: 'reidb keys create [--db DIR] --role ROLE[,ROLE...] [--label TEXT]',
    help:
      'Creates an API key and prints it once; reidb keeps only its SHA-256.\n' +
      'Roles: enrol, search, read, compliance, admin (admin manages keys and the policy: it\n' +
      'reads no faces but can make a key of any role, so give it to few). Opens only\n' +
      'DIR/deployment.sqlite (DIR must exist), creating it if needed, so it works while\n' +
      '`reidb serve` runs on DIR.',
    flags: { ...COMMON, db: true, role: true, label: true },
    run: keysCreate,
  },
  'keys list': {
    summary: 'reidb keys list [--db DIR]',
    help: 'Lists every API key, revoked ones included: id, roles, label and times, never a secret.',
    flags: { ...COMMON, db: true },
    run: keysList,
  },
  'keys revoke': {
    summary: 'reidb keys revoke [--db DIR] --id KEY_ID',
    help: 'Revokes a key (k_ + 12 hex digits); a running server refuses it from its next request.',
    flags: { ...COMMON, db: true, id: true },
    run: keysRevoke,
  },
  'retention run': {
    summary: 'reidb retention run [--db DIR] [--dry-run]',
    help:
      "Erases every face whose keep-for has run out (the identity's, else the gallery's), as\n" +
      'an erasure does: ledger, secure delete, index overwrite. --dry-run only counts them.\n' +
      'Running it twice erases nothing the second time.',
    flags: { ...COMMON, db: true, 'dry-run': false },
    run: retentionRun,
  },
  'audit verify': {
    summary: 'reidb audit verify [--db DIR]',
    help:
      'Checks the hash chain of the audit trail: exit 0 when intact (prints the head hash, to\n' +
      'keep elsewhere), exit 1 naming the first edited, inserted or missing row.',
    flags: { ...COMMON, db: true },
    run: auditVerify,
  },
  'audit export': {
    summary: 'reidb audit export [--db DIR] --format csv|json [--out FILE] [--identity ID]',
    help:
      'Writes the audit trail, or only the rows about one identity, to stdout or FILE (mode\n' +
      '0600). JSON is {"rows": [...]}; CSV has one line per row with details as JSON.',
    flags: { ...COMMON, db: true, format: true, out: true, identity: true },
    run: auditExport,
  },
  'policy show': {
    summary: 'reidb policy show [--db DIR]',
    help: "Prints the gallery's keep-for, legal basis, purpose and thumbnail setting.",
    flags: { ...COMMON, db: true },
    run: policyShow,
  },
  'policy set': {
    summary:
      'reidb policy set [--db DIR] [--keep-for 30d|none] [--legal-basis TEXT|none] ' +
      '[--purpose TEXT|none] [--thumbnails off|on|blurred]',
    help:
      "Changes the gallery's policy; `none` clears a field. keep-for applies to faces already\n" +
      'stored at the next retention run. Durations: 90s, 15m, 12h, 30d, 52w.',
    flags: {
      ...COMMON,
      db: true,
      'keep-for': true,
      'legal-basis': true,
      purpose: true,
      thumbnails: true,
    },
    run: policySet,
  },
  export: {
    summary: 'reidb export [--db DIR] --out FILE [--plaintext]',
    help:
      'Writes the gallery as JSON lines, each identity sealed under its own key, which stays in\n' +
      'DIR/deployment.sqlite: the file is unreadable elsewhere, and an identity erased later is\n' +
      'unreadable in it for good. --plaintext writes records unencrypted, for a move to another\n' +
      'deployment: no later erasure can reach such a file.',
    flags: { ...COMMON, db: true, out: true, plaintext: false },
    run: exportCommand,
  },
  import: {
    summary: 'reidb import [--db DIR] --in FILE',
    help:
      'Restores an export. Faces erased since it was made are never restored, nor faces the\n' +
      'gallery already holds; records whose key was destroyed are unreadable and skipped.',
    flags: { ...COMMON, db: true, in: true },
    run: importCommand,
  },
  access: {
    summary: 'reidb access [--db DIR] --identity ID [--vectors]',
    help:
      'Prints the subject access report of one identity (GDPR Art. 15), as\n' +
      'GET /v1/identities/:id/export does: its record, faces, expiry, processing record and\n' +
      'audit rows; its vectors only with --vectors. Labels are exact (case, accents).',
    flags: { ...COMMON, db: true, identity: true, vectors: false },
    run: accessCommand,
  },
};

/** `reidb access`: the subject access report, audited as `export_identity`. */
async function accessCommand(ctx: CommandContext): Promise<CommandOutput> {
  const identity = required(ctx.args, 'identity');
  try {
    validateIdentity(identity);
  } catch (e) {
    throw new ReidbError('invalid_argument', `--identity: ${(e as Error).message}`, {
      input: '--identity',
    });
  }
  const vectors = ctx.args.flags.vectors === true;

  const gallery = await openCliGallery(ctx, { mustExist: true });
  try {
    const actor = cliActor();
    const report = auditedLookup(gallery.deployment, actor, 'export_identity', identity, () =>
      subjectAccessReport(gallery, identity, { vectors }),
    );
    auditRead(gallery.deployment, actor, 'export_identity', identity, { vectors });
    return { json: report, text: JSON.stringify(report, null, 2) };
  } finally {
    gallery.close();
  }
}

async function keysCreate(ctx: CommandContext): Promise<CommandOutput> {
  const roles = roleArg(required(ctx.args, 'role'));
  const label = str(ctx.args, 'label');

  const deployment = openCliDeployment(ctx);
  try {
    let created;
    try {
      created = deployment.keys.create({ roles, label });
    } catch (e) {
      throw flagError(e, '--label', 'label');
    }
    auditKeyCreate(deployment, cliActor(), created);

    const { key, id, createdAt } = created;
    return {
      json: { key, id, roles: created.roles, label: created.label, createdAt },
      text:
        `${key}\n` +
        `This key is shown only once: store it now (reidb keeps only its hash). ` +
        `id ${id}, roles ${created.roles.join(',')}`,
    };
  } finally {
    deployment.close();
  }
}

async function keysList(ctx: CommandContext): Promise<CommandOutput> {
  const deployment = openCliDeployment(ctx, { mustExist: true });
  try {
    const keys = deployment.keys.list();
    const active = keys.filter((key) => key.revokedAt === null).length;
    const lines =
      keys.length === 0
        ? ['no API keys: the HTTP API runs open, on loopback only']
        : [`${keys.length} key(s), ${active} active`, ...keys.map(keyLine)];
    return { json: { keys }, text: lines.join('\n') };
  } finally {
    deployment.close();
  }
}

function keyLine(key: KeyRecord): string {
  const state = key.revokedAt === null ? 'active' : `revoked ${key.revokedAt}`;
  const used = key.lastUsedAt === null ? 'never used' : `last used ${key.lastUsedAt}`;
  const label = key.label === null ? '' : `  ${JSON.stringify(key.label)}`;
  return `  ${key.id}  ${key.roles.join(',')}  created ${key.createdAt}  ${used}  ${state}${label}`;
}

async function keysRevoke(ctx: CommandContext): Promise<CommandOutput> {
  const id = required(ctx.args, 'id');

  const deployment = openCliDeployment(ctx, { mustExist: true });
  try {
    const before = deployment.keys.get(id);
    const record = deployment.keys.revoke(id);
    const changed = before !== null && before.revokedAt === null;
    if (changed) auditKeyRevoke(deployment, cliActor(), record);

    const lines = [
      changed
        ? `revoked key ${record.id} (${record.roles.join(',')})`
        : `key ${record.id} was already revoked at ${record.revokedAt}`,
    ];
    if (!deployment.keys.hasActive()) {
      lines.push('no active API key is left: the HTTP API accepts requests without a key again');
    }
    return { json: record, text: lines.join('\n') };
  } finally {
    deployment.close();
  }
}

async function retentionRun(ctx: CommandContext): Promise<CommandOutput> {
  const dryRun = ctx.args.flags['dry-run'] === true;

  const gallery = await openCliGallery(ctx, { mustExist: true });
  try {
    const summary = runRetention(gallery, {
      actor: cliActor(),
      dryRun,
      onProgress: (done, total) => ctx.stderr(`retention: ${done}/${total} identities done\n`),
    });

    const due =
      `${summary.facesDue} face(s) of ${summary.identitiesDue} identity(ies) due at ` +
      summary.checkedAt;
    const text = dryRun
      ? `retention (dry run): ${due}; nothing erased`
      : summary.facesDue === 0
        ? `retention: nothing due at ${summary.checkedAt}`
        : `retention: ${due}; erased ${summary.facesErased} face(s), ` +
          `${summary.identitiesErased} identity(ies) removed whole`;
    return { json: summary, text };
  } finally {
    gallery.close();
  }
}

async function auditVerify(ctx: CommandContext): Promise<CommandOutput> {
  const deployment = openCliDeployment(ctx, { mustExist: true });
  try {
    const result = deployment.audit.verify();
    if (result.ok) {
      return {
        json: result,
        text:
          `audit trail intact: ${result.rows} row(s)\n` +
          `head ${result.head ?? '(empty trail)'}  (keep it elsewhere to detect a rewrite)`,
      };
    }

    const bad = result.firstBad!;
    const reason = bad.reason.startsWith(`row ${bad.seq}`)
      ? bad.reason
      : `row ${bad.seq}: ${bad.reason}`;
    return { json: result, text: `audit trail tampered: ${reason}`, exitCode: 1 };
  } finally {
    deployment.close();
  }
}

async function auditExport(ctx: CommandContext): Promise<CommandOutput> {
  const { args } = ctx;
  const format = oneOf(args, 'format', ['csv', 'json'] as const);
  if (format === undefined) throw usage('--format is required (csv or json)', '--format');
  const out = str(args, 'out');
  const identity = identityArg(args);
  if (out === undefined && format === 'csv' && args.flags.json === true) {
    throw usage(
      '--format csv to stdout cannot be combined with --json (one JSON document); ' +
        'give --out FILE or use --format json',
      '--format',
    );
  }
  if (out !== undefined) checkOutsideFolders(out, cliGalleryFolders(args), '--out');

  const deployment = openCliDeployment(ctx, { mustExist: true });
  try {
    const identityRef = identity === undefined ? undefined : deployment.identityRef(identity);
    const rows = deployment.audit.rows(identityRef === undefined ? {} : { identityRef });
    const content = format === 'csv' ? deployment.audit.toCsv(rows) : auditJson(rows);

    if (out !== undefined) writePrivateFile(out, content, '--out');
    auditAuditExport(deployment, cliActor(), { format, rows: rows.length, identityRef });

    if (out !== undefined) {
      return {
        json: { file: out, format, count: rows.length },
        text: `wrote ${rows.length} audit row(s) as ${format} to ${out}`,
      };
    }
    return { json: { rows }, text: content };
  } finally {
    deployment.close();
  }
}

function auditJson(rows: AuditRow[]): string {
  return JSON.stringify({ rows }) + '\n';
}

async function policyShow(ctx: CommandContext): Promise<CommandOutput> {
  const gallery = await openCliGallery(ctx, { mustExist: true });
  try {
    const policy = gallery.policy();
    return { json: policyJson(policy), text: policyText(policy) };
  } finally {
    gallery.close();
  }
}

async function policySet(ctx: CommandContext): Promise<CommandOutput> {
  const patch = policyPatch(ctx.args);
  const given = Object.keys(patch) as PolicyField[];
  if (given.length === 0) {
    throw usage(
      'policy set needs at least one of --keep-for, --legal-basis, --purpose, --thumbnails',
    );
  }

  const gallery = await openCliGallery(ctx, { mustExist: true });
  try {
    const before = gallery.policy();
    const policy = gallery.setPolicy(patch);
    const changed = given.filter((field) => before[field] !== policy[field]);
    if (changed.length > 0) auditPolicyChange(gallery.deployment, cliActor(), changed, policy);

    const head =
      changed.length === 0 ? 'policy unchanged' : `policy changed: ${changed.join(', ')}`;
    return {
      json: { ...policyJson(policy), changed },
      text: `${head}\n${policyText(policy)}`,
    };
  } finally {
    gallery.close();
  }
}

/** The fields `policy set` was given, parsed and checked; `none` becomes null. */
function policyPatch(args: ParsedArgs): Partial<Omit<GalleryPolicy, 'updatedAt'>> {
  const patch: Partial<Omit<GalleryPolicy, 'updatedAt'>> = {};

  const keepFor = str(args, 'keep-for');
  if (keepFor !== undefined) {
    patch.keepForSeconds = keepFor === 'none' ? null : parseDuration(keepFor, '--keep-for');
  }

  const legalBasis = str(args, 'legal-basis');
  if (legalBasis !== undefined) {
    patch.legalBasis = legalBasis === 'none' ? null : checkPolicyText(legalBasis, '--legal-basis');
  }

  const purpose = str(args, 'purpose');
  if (purpose !== undefined) {
    patch.purpose = purpose === 'none' ? null : checkPolicyText(purpose, '--purpose');
  }

  const thumbnails = oneOf(args, 'thumbnails', THUMBNAIL_MODES);
  if (thumbnails !== undefined) patch.thumbnails = thumbnails;

  return patch;
}

function policyText(policy: GalleryPolicy): string {
  const keep =
    policy.keepForSeconds === null
      ? 'none (faces are kept until erased, unless their identity sets one)'
      : `${formatDuration(policy.keepForSeconds)} after enrolment`;
  return [
    `keep-for:    ${keep}`,
    `legal basis: ${policy.legalBasis ?? 'none recorded'}`,
    `purpose:     ${policy.purpose ?? 'none recorded'}`,
    `thumbnails:  ${policy.thumbnails}`,
    `updated:     ${policy.updatedAt}`,
  ].join('\n');
}

async function exportCommand(ctx: CommandContext): Promise<CommandOutput> {
  const out = required(ctx.args, 'out');
  const plaintext = ctx.args.flags.plaintext === true;
  checkOutsideFolders(out, cliGalleryFolders(ctx.args), '--out');

  const gallery = await openCliGallery(ctx, { mustExist: true });
  try {
    const summary = exportGallery(gallery, out, { plaintext });
    auditGalleryExport(gallery.deployment, cliActor(), summary);

    const lines = [
      `exported ${summary.identities} identity(ies) with ${summary.faces} face(s) to ${out}`,
      summary.mac === undefined
        ? `sha256 ${summary.sha256}`
        : `mac ${summary.mac} (HMAC-SHA256 under a key of the deployment)`,
    ];
    if (plaintext) {
      const warning =
        `${out} holds biometric data in plain text: no later erasure can reach it, so ` +
        'whoever keeps it must erase from it by hand';
      ctx.stderr(`reidb: warning: ${warning}\n`);
      lines.push(`warning: ${warning}`);
    } else {
      lines.push(
        `each identity is sealed under its own key in ${cliGalleryDir(ctx.args)}/` +
          'deployment.sqlite: back that file up separately, never with the export',
      );
    }
    return { json: summary, text: lines.join('\n') };
  } finally {
    gallery.close();
  }
}

async function importCommand(ctx: CommandContext): Promise<CommandOutput> {
  const file = required(ctx.args, 'in');

  const gallery = await openCliGallery(ctx);
  try {
    const before = gallery.policy();
    const summary = await importGallery(gallery, file);
    const actor = cliActor();
    auditGalleryImport(gallery.deployment, actor, summary);

    // A new gallery takes the export's policy: a policy change like any other.
    const after = gallery.policy();
    const fields = ['keepForSeconds', 'legalBasis', 'purpose', 'thumbnails'] as const;
    const changed = fields.filter((field) => before[field] !== after[field]);
    if (changed.length > 0) auditPolicyChange(gallery.deployment, actor, changed, after);

    return {
      json: summary,
      text: [
        `imported ${summary.identities} identity(ies) with ${summary.faces} face(s) from ${file}`,
        `  ${summary.skippedErased} face(s) skipped as erased since the export`,
        `  ${summary.skippedDuplicate} face(s) skipped as already in the gallery`,
        `  ${summary.unreadable} identity record(s) unreadable: their keys were destroyed when ` +
          'they were erased since the export (so their faces count here, not as skipped)',
      ].join('\n'),
    };
  } finally {
    gallery.close();
  }
}

/** --role parsed; a bad role is a usage error (exit 2) naming it. */
function roleArg(text: string): Role[] {
  try {
    return parseRoles(text);
  } catch (e) {
    const err = e as ReidbError;
    throw new ReidbError('invalid_argument', `--role: ${err.message}`, { input: err.input });
  }
}

/** --identity when given, checked; a bad one is a usage error naming --identity. */
function identityArg(args: ParsedArgs): string | undefined {
  const identity = str(args, 'identity');
  if (identity === undefined) return undefined;
  try {
    return validateIdentity(identity);
  } catch (e) {
    throw usage(`--identity: ${(e as Error).message}`, '--identity');
  }
}

/** An invalid_argument from the library about `field`, renamed after the command's flag. */
function flagError(e: unknown, flag: string, field: string): unknown {
  if (e instanceof ReidbError && e.code === 'invalid_argument' && e.input === field) {
    return new ReidbError('invalid_argument', `${flag}: ${e.message}`, { input: flag });
  }
  return e;
}

/**
 * Writes `content` to `file` readable by its owner only (mode 0600, also when the file
 * existed), flushed to disk before returning. The content goes to a new file beside it that
 * is renamed over `file`, so a link at `file` is replaced, never written through.
 * invalid_argument naming `flag` when it cannot.
 */
function writePrivateFile(file: string, content: string, flag: string): void {
  const partial = path.join(path.dirname(file), `.${path.basename(file)}.partial`);
  const fail = (cause: unknown): ReidbError =>
    new ReidbError(
      'invalid_argument',
      `${flag}: cannot write ${file}: ${(cause as Error).message}`,
      {
        input: flag,
        cause,
      },
    );

  let fd: number;
  try {
    rmSync(partial, { force: true });
    fd = openSync(partial, 'wx', 0o600);
  } catch (cause) {
    throw fail(cause);
  }
  try {
    try {
      writeSync(fd, content);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(partial, file);
  } catch (cause) {
    rmSync(partial, { force: true });
    throw fail(cause);
  }
}

function usage(message: string, input?: string): ReidbError {
  return new ReidbError('invalid_argument', message, input === undefined ? {} : { input });
}
