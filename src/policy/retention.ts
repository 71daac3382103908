import type { Gallery } from '../gallery/gallery.ts';

/** What one retention run did. */
export interface RetentionSummary {
  /** The moment the run judged expiry against, ISO-8601. */
  checkedAt: string;
  /** Faces that were due (all erased unless dryRun). */
  facesDue: number;
  /** Identities that had at least one face due. */
  identitiesDue: number;
  /** Faces erased by this run (0 for a dry run). */
  facesErased: number;
  /** Identities removed whole because their last face expired (0 for a dry run). */
  identitiesErased: number;
  dryRun: boolean;
  /** Per identity, by pseudonymous reference: faces erased and whether it went whole. */
  erased: { identityRef: string; faces: number; whole: boolean }[];
}

export interface RetentionOptions {
  /** The moment to judge expiry against; default now. */
  now?: Date;
  /** Audit actor; default 'system:retention'. */
  actor?: string;
  /** Report what is due without erasing. */
  dryRun?: boolean;
  /** Called after each identity: identities done and the total due. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Erases every face whose keep-for has run out (the shorter of the identity's and the
 * gallery's) as an erasure does (ledger, secure delete, index overwrite), with one
 * `retention_erase` audit row per identity. Idempotent: what it erased is gone, so a second
 * run at the same moment finds nothing due. A crash mid-run loses nothing: the next run (or
 * the ledger at the next open) finishes the work.
 */
export function runRetention(gallery: Gallery, options: RetentionOptions = {}): RetentionSummary {
  const now = options.now ?? new Date();
  const actor = options.actor ?? 'system:retention';
  const due = gallery.expiredFaces(now);

  const byIdentity = new Map<string, string[]>();
  for (const face of due) {
    const list = byIdentity.get(face.identity);
    if (list === undefined) byIdentity.set(face.identity, [face.uid]);
    else list.push(face.uid);
  }

  const summary: RetentionSummary = {
    checkedAt: now.toISOString(),
    facesDue: due.length,
    identitiesDue: byIdentity.size,
    facesErased: 0,
    identitiesErased: 0,
    dryRun: options.dryRun === true,
    erased: [],
  };
  // Nothing due: leave both databases alone (no checkpoint, no index save).
  if (summary.dryRun || due.length === 0) return summary;

  // One erasure for the whole run: one WAL truncation and one index rewrite, however many
  // identities are due. The ledger gets every uid before any row is deleted.
  const removed = gallery.eraseFaces(
    due.map((face) => face.uid),
    { actor, reason: 'retention' },
  );
  const removedWhole = new Set(removed.identities);

  let done = 0;
  for (const [identity, uids] of byIdentity) {
    const identityRef = gallery.deployment.identityRef(identity);
    const whole = removedWhole.has(identity);
    gallery.deployment.audit.append({
      actor,
      action: 'retention_erase',
      identityRef,
      details: { faces: uids.length, identityRemoved: whole },
    });
    summary.erased.push({ identityRef, faces: uids.length, whole });
    options.onProgress?.(++done, byIdentity.size);
  }
  summary.facesErased = removed.faceIds.length;
  summary.identitiesErased = removedWhole.size;
  return summary;
}
