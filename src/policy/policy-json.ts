import type { GalleryPolicy } from '../gallery/gallery.ts';
import { formatDuration } from './duration.ts';

/** A gallery policy as the CLI and the API show it: its fields plus keep-for as a duration. */
export function policyJson(policy: GalleryPolicy): GalleryPolicy & { keepFor: string | null } {
  return {
    ...policy,
    keepFor: policy.keepForSeconds === null ? null : formatDuration(policy.keepForSeconds),
  };
}
