import type { ErrorCode } from '../errors.ts';

/** The one place that maps error codes to HTTP status codes. */
export function httpStatusFor(code: ErrorCode): number {
  switch (code) {
    case 'empty_file':
    case 'not_an_image':
    case 'corrupt_image':
    case 'invalid_argument':
    case 'invalid_identity':
    case 'export_invalid':
      return 400;
    case 'unauthorized':
      return 401;
    case 'forbidden':
      return 403;
    case 'identity_not_found':
    case 'key_not_found':
    case 'not_found':
    case 'file_not_found':
    case 'gallery_not_found':
      return 404;
    case 'conflict':
    case 'gallery_mismatch':
    case 'port_in_use':
    case 'gallery_locked':
      return 409;
    case 'payload_too_large':
    case 'image_too_large':
      return 413;
    case 'unsupported_image':
    case 'unsupported_media_type':
      return 415;
    case 'no_face':
    case 'ambiguous_face':
      return 422;
    case 'rate_limited':
      return 429;
    case 'overloaded':
    case 'shutting_down':
    case 'closed':
    case 'auth_required':
      return 503;
    default:
      return 500;
  }
}
