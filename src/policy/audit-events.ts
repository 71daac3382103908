/**
 * The audit rows that reidb's front ends (the CLI and the HTTP API) write, built in one place
 * so that both record the same facts in the same shape. Every row names its identity by the
 * pseudonymous reference (Deployment.identityRef), never by its label, and holds counts,
 * outcomes and parameters only: never an image, its file name, a face box or a vector.
 */
import os from 'node:os';

import type { EnrolReport, SearchReport } from '../engine/service.ts';
import type { GalleryPolicy, IdentityPolicy } from '../gallery/gallery.ts';
import type { ExportSummary, ImportSummary } from '../gallery/export.ts';
import type { Deployment } from './deployment.ts';
import type { AuditRow, KeyRecord } from './types.ts';

/** Most identity references one search row lists; the rest are counted, not named. */
export const MAX_MATCHED_REFS = 1000;

/** Longest user name kept in a CLI actor, in characters. */
const MAX_USER = 180;

/** A search that failed before any face was compared (unreadable file, no image). */
export interface SearchFailure {
  file: string;
  error: { code: string; message: string };
}

/**
 * The audit actor of a command run by hand: `cli:<os user name>`, or `cli:unknown` where the
 * system has no user entry for the process. Control characters are dropped.
 */
export function cliActor(): string {
  let user: string;
  try {
    user = os.userInfo().username;
  } catch {
    user = process.env.USER ?? process.env.LOGNAME ?? '';
  }

  const clean = [...user.replace(/[\p{Cc}\p{Zl}\p{Zp}\p{Cs}]/gu, '')].slice(0, MAX_USER).join('');
  return `cli:${clean === '' ? 'unknown' : clean}`;
}

/**
 * One `enrol` row per identity the enrolment concerned, details {faces, skipped}: faces
 * stored and images of that identity that were refused. An identity all of whose images were
 * refused still gets its row (with faces 0) when `items` are given, since its images were
 * analysed. Without `items`, refused images are counted against the identity only when the
 * call enrolled exactly one. The keep-for, legal basis and purpose the enrolment gave are
 * added as `policy` (they are recorded when the identity is created). Returns the rows in
 * identity order.
 */
export function auditEnrolment(
  deployment: Deployment,
  actor: string,
  report: EnrolReport,
  items?: readonly { identity: string; image: { file: string } | { name: string } }[],
  policy: IdentityPolicy = {},
): AuditRow[] {
  const given = Object.fromEntries(Object.entries(policy).filter(([, v]) => v !== undefined));
  const faces = new Map<string, number>();
  const skipped = new Map<string, number>();
  for (const identity of report.identities) faces.set(identity, 0);
  for (const face of report.enrolled) faces.set(face.identity, (faces.get(face.identity) ?? 0) + 1);

  if (items !== undefined) {
    const identityOf = new Map<string, string>();
    for (const item of items) {
      const name = 'file' in item.image ? item.image.file : item.image.name;
      identityOf.set(name, item.identity);
      if (!faces.has(item.identity)) faces.set(item.identity, 0);
    }
    for (const refused of report.skipped) {
      const identity = identityOf.get(refused.file);
      if (identity !== undefined) skipped.set(identity, (skipped.get(identity) ?? 0) + 1);
    }
  } else if (report.identities.length === 1) {
    skipped.set(report.identities[0]!, report.skipped.length);
  }

  return [...faces].map(([identity, count]) =>
    deployment.audit.append({
      actor,
      action: 'enrol',
      identityRef: deployment.identityRef(identity),
      details: {
        faces: count,
        skipped: skipped.get(identity) ?? 0,
        ...(Object.keys(given).length > 0 ? { policy: given } : {}),
      },
    }),
  );
}

/**
 * One `search` row for one probe image, with no identity reference of its own: details
 * {faces, k, matches, matchedRefs, outcome}, where faces counts the probe's faces, matches
 * the matches returned over all of them, matchedRefs the distinct references of the
 * identities returned (at most 1000; `matchedRefsOmitted` counts the rest), and outcome is
 * 'matched', 'no_match', 'no_face' or 'error' (then `error` holds the code).
 */
export function auditSearch(
  deployment: Deployment,
  actor: string,
  report: SearchReport | SearchFailure,
  k: number,
): AuditRow {
  if ('error' in report) {
    return deployment.audit.append({
      actor,
      action: 'search',
      identityRef: null,
      details: {
        faces: 0,
        k,
        matches: 0,
        matchedRefs: [],
        outcome: 'error',
        error: report.error.code,
      },
    });
  }

  const refs = new Set<string>();
  let matches = 0;
  for (const face of report.faces) {
    for (const match of face.matches) {
      matches++;
      refs.add(deployment.identityRef(match.identity));
    }
  }
  const matchedRefs = [...refs];
  const outcome = report.faces.length === 0 ? 'no_face' : matches > 0 ? 'matched' : 'no_match';

  return deployment.audit.append({
    actor,
    action: 'search',
    identityRef: null,
    details: {
      faces: report.faces.length,
      k,
      matches,
      matchedRefs: matchedRefs.slice(0, MAX_MATCHED_REFS),
      ...(matchedRefs.length > MAX_MATCHED_REFS
        ? { matchedRefsOmitted: matchedRefs.length - MAX_MATCHED_REFS }
        : {}),
      outcome,
    },
  });
}

/** The `erase` row of an erasure on request: details {faces} (faces removed). */
export function auditErasure(
  deployment: Deployment,
  actor: string,
  result: { identityRef: string; facesRemoved: number; walTruncated?: boolean },
): AuditRow {
  return deployment.audit.append({
    actor,
    action: 'erase',
    identityRef: result.identityRef,
    details: {
      faces: result.facesRemoved,
      ...(result.walTruncated === false ? { walTruncated: false } : {}),
    },
  });
}

/**
 * A read of identity data: 'read' (one identity's record), 'list' (the identity listing, no
 * identity) or 'export_identity' (a subject access export). Details are empty.
 */
export function auditRead(
  deployment: Deployment,
  actor: string,
  action: 'read' | 'list' | 'export_identity' | 'erase',
  identity?: string,
  details: Record<string, unknown> = {},
): AuditRow {
  return deployment.audit.append({
    actor,
    action,
    identityRef: identity === undefined ? null : deployment.identityRef(identity),
    details,
  });
}

/** `key_create`: details {keyId, roles}. The key id is public and not personal data. */
export function auditKeyCreate(deployment: Deployment, actor: string, key: KeyRecord): AuditRow {
  return deployment.audit.append({
    actor,
    action: 'key_create',
    details: { keyId: key.id, roles: key.roles },
  });
}

/** `key_revoke`: details {keyId, roles}. */
export function auditKeyRevoke(deployment: Deployment, actor: string, key: KeyRecord): AuditRow {
  return deployment.audit.append({
    actor,
    action: 'key_revoke',
    details: { keyId: key.id, roles: key.roles },
  });
}

/**
 * `policy_change`: details {changed: field names, then the new value of each changed field}
 * (keepForSeconds in seconds or null, legalBasis, purpose, thumbnails). Legal basis and
 * purpose describe the processing, not a person.
 */
export function auditPolicyChange(
  deployment: Deployment,
  actor: string,
  changed: readonly (keyof Omit<GalleryPolicy, 'updatedAt'>)[],
  policy: GalleryPolicy,
): AuditRow {
  const details: Record<string, unknown> = { changed: [...changed] };
  for (const field of changed) details[field] = policy[field];
  return deployment.audit.append({ actor, action: 'policy_change', details });
}

/** `gallery_export`: details {identities, faces, encrypted}; never the file's name. */
export function auditGalleryExport(
  deployment: Deployment,
  actor: string,
  summary: ExportSummary,
): AuditRow {
  return deployment.audit.append({
    actor,
    action: 'gallery_export',
    details: {
      identities: summary.identities,
      faces: summary.faces,
      encrypted: summary.encrypted,
    },
  });
}

/** `gallery_import`: details {identities, faces, skippedErased, skippedDuplicate, unreadable}. */
export function auditGalleryImport(
  deployment: Deployment,
  actor: string,
  summary: ImportSummary,
): AuditRow {
  return deployment.audit.append({
    actor,
    action: 'gallery_import',
    details: { ...summary },
  });
}

/**
 * `audit_export`: details {format, rows}. When the export was filtered to one identity, the
 * row carries that identity's reference, so the person's own trail shows who read it.
 */
export function auditAuditExport(
  deployment: Deployment,
  actor: string,
  export_: { format: 'csv' | 'json'; rows: number; identityRef?: string },
): AuditRow {
  return deployment.audit.append({
    actor,
    action: 'audit_export',
    identityRef: export_.identityRef ?? null,
    details: { format: export_.format, rows: export_.rows },
  });
}

/**
 * Runs a read, subject access export or erasure of one identity; when the identity is not
 * enrolled, writes an audit row saying so (details {found: false}) before the error goes on,
 * so that probing for labels leaves a trace. The HTTP API and the CLI both go through here.
 */
export function auditedLookup<T>(
  deployment: Deployment,
  actor: string,
  action: 'read' | 'export_identity' | 'erase',
  identity: string,
  run: () => T,
): T {
  try {
    return run();
  } catch (error) {
    if ((error as { code?: string }).code === 'identity_not_found') {
      auditRead(deployment, actor, action, identity, { found: false });
    }
    throw error;
  }
}
