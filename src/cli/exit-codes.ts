import type { ErrorCode } from '../errors.ts';

/** Exit codes of the `reidb` command: 0 done, 2 usage error, 1 anything else. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** The one place that maps error codes to exit codes. */
export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case 'invalid_argument':
    case 'invalid_identity':
      return EXIT_USAGE;
    default:
      return EXIT_FAILURE;
  }
}
