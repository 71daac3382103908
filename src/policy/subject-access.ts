import type { Gallery } from '../gallery/gallery.ts';
import type { AuditRow } from './types.ts';

/** One face as a subject access report shows it. */
export interface SubjectAccessFace {
  faceId: number;
  uid: string;
  source: string;
  camera: string | null;
  capturedAt: string | null;
  enrolledAt: string;
  /** When retention erases it, ISO-8601; null when it is kept until erased. */
  expiresAt: string | null;
  /** Pixels of the source image. */
  box: { x: number; y: number; width: number; height: number };
  /** Degrees. */
  pose: { yaw: number; pitch: number; roll: number };
  quality: number;
  detectorScore: number;
  meshScore: number;
  /** Base64 JPEG, when the gallery stores thumbnails. */
  thumbnailJpeg?: string;
  /** Only when asked for: the stored vectors as numbers. */
  vectors?: { appearance: number[]; geometry: number[]; fused: number[] };
}

/** Everything reidb holds about one identity (GDPR Art. 15). */
export interface SubjectAccessReport {
  generatedAt: string;
  identity: string;
  /** The pseudonym the audit trail and the erasure ledger use for this identity. */
  identityRef: string;
  createdAt: string;
  metadata: Record<string, unknown>;
  /** Purpose, legal basis and retention that apply, and whether the identity set them. */
  processing: {
    purpose: string | null;
    legalBasis: string | null;
    keepForSeconds: number | null;
    setBy: { purpose: Source; legalBasis: Source; keepForSeconds: Source };
  };
  faces: SubjectAccessFace[];
  /** Audit rows about this identity, oldest first. */
  audit: AuditRow[];
}

type Source = 'identity' | 'gallery' | 'none';

/**
 * The subject access report of an identity: its metadata, the processing record that applies
 * to it, every face with its enrolment data and expiry, its thumbnails when stored, and the
 * audit rows about it. Vectors are left out unless `vectors` is set: they mean nothing to a
 * person and are the most sensitive part. Throws identity_not_found.
 */
export function subjectAccessReport(
  gallery: Gallery,
  identity: string,
  options: { vectors?: boolean } = {},
): SubjectAccessReport {
  const { record, faces } = gallery.identityData(identity);
  const policy = gallery.policy();
  const identityRef = gallery.deployment.identityRef(identity);

  const pick = <T>(own: T | null, gallery: T | null): [T | null, Source] =>
    own !== null ? [own, 'identity'] : gallery !== null ? [gallery, 'gallery'] : [null, 'none'];
  const [purpose, purposeBy] = pick(record.policy.purpose, policy.purpose);
  const [legalBasis, legalBy] = pick(record.policy.legalBasis, policy.legalBasis);
  // The shorter keep-for applies (the gallery's is a ceiling), as retention applies it.
  const own = record.policy.keepForSeconds;
  const [keepFor, keepBy] =
    own !== null && policy.keepForSeconds !== null && policy.keepForSeconds < own
      ? [policy.keepForSeconds, 'gallery' as Source]
      : pick(own, policy.keepForSeconds);

  return {
    generatedAt: new Date().toISOString(),
    identity,
    identityRef,
    createdAt: record.createdAt,
    metadata: record.metadata,
    processing: {
      purpose,
      legalBasis,
      keepForSeconds: keepFor,
      setBy: { purpose: purposeBy, legalBasis: legalBy, keepForSeconds: keepBy },
    },
    faces: faces.map((face) => ({
      faceId: face.faceId,
      uid: face.uid,
      source: face.source,
      camera: face.camera ?? null,
      capturedAt: face.capturedAt ?? null,
      enrolledAt: face.enrolledAt,
      expiresAt:
        keepFor === null
          ? null
          : new Date(Date.parse(face.enrolledAt) + keepFor * 1000).toISOString(),
      box: face.box,
      pose: face.pose,
      quality: face.quality,
      detectorScore: face.detectorScore,
      meshScore: face.meshScore,
      ...(face.thumbnail ? { thumbnailJpeg: face.thumbnail.toString('base64') } : {}),
      ...(options.vectors
        ? {
            vectors: {
              appearance: Array.from(face.appearance),
              geometry: Array.from(face.geometry),
              fused: Array.from(face.fused),
            },
          }
        : {}),
    })),
    audit: gallery.deployment.audit.rows({ identityRef }),
  };
}
