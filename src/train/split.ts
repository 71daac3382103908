/**
 * Identity-disjoint train / validation split for the fusion training. Identities, never faces,
 * are assigned, so no validation identity is ever seen in training (the re-identification
 * setting: the gallery holds people the model was not trained on).
 */
import { ReidbError } from '../errors.ts';
import { mulberry32, shuffleInPlace } from './sampler.ts';

export interface IdentitySplit {
  /** Indices into the faces given, of faces used for training (identities with >= 2 faces). */
  train: number[];
  /** Indices of validation faces (every face of every validation identity). */
  val: number[];
  /** Training identities (>= 2 faces each), sorted. */
  trainIdentities: string[];
  /** Validation identities, sorted. */
  valIdentities: string[];
  /**
   * Identities drawn for training that have a single face: left out of training altogether
   * (see splitByIdentity), sorted.
   */
  droppedIdentities: string[];
}

/**
 * Splits faces by identity: round(valShare * identities) identities go to validation, the rest
 * to training, drawn by a seeded shuffle of the sorted identity names, so the split depends only
 * on the set of identities and the seed, not on the order of the faces.
 *
 * Identities with fewer than 2 faces cannot be triplet anchors (no positive) and would be a
 * classifier class with one example to memorise, so on the training side they are dropped
 * (listed in `droppedIdentities`). On the validation side they are kept: their one face is a
 * distractor in the leave-one-out gallery and, having no match, is not scored as a query.
 * At least one identity goes to each side when valShare is in (0, 1) and there are >= 2.
 *
 * valShare: share of identities in [0, 1). Throws invalid_argument otherwise.
 */
export function splitByIdentity(
  faces: ReadonlyArray<{ identity: string }>,
  valShare: number,
  seed: number,
): IdentitySplit {
  if (!(valShare >= 0 && valShare < 1)) {
    throw new ReidbError('invalid_argument', `valShare must be in [0, 1), got ${valShare}`, {
      input: 'valShare',
    });
  }

  // Count faces per identity; draw the validation identities.
  const counts = new Map<string, number>();
  for (const face of faces) counts.set(face.identity, (counts.get(face.identity) ?? 0) + 1);
  const identities = [...counts.keys()].sort();
  let valCount = Math.round(valShare * identities.length);
  if (valShare > 0 && identities.length >= 2) {
    valCount = Math.min(Math.max(valCount, 1), identities.length - 1);
  }
  const shuffled = shuffleInPlace([...identities], mulberry32(seed));
  const valSet = new Set(shuffled.slice(0, valCount));

  // Assign faces; single-face training identities are dropped.
  const split: IdentitySplit = {
    train: [],
    val: [],
    trainIdentities: [],
    valIdentities: [],
    droppedIdentities: [],
  };
  for (const identity of identities) {
    if (valSet.has(identity)) split.valIdentities.push(identity);
    else if (counts.get(identity)! >= 2) split.trainIdentities.push(identity);
    else split.droppedIdentities.push(identity);
  }
  const trainSet = new Set(split.trainIdentities);
  faces.forEach((face, index) => {
    if (valSet.has(face.identity)) split.val.push(index);
    else if (trainSet.has(face.identity)) split.train.push(index);
  });
  return split;
}
