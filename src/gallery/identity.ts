import { ReidbError } from '../errors.ts';

/** Longest identity label accepted, in UTF-16 code units (JavaScript string length). */
export const MAX_IDENTITY_LENGTH = 128;

// C0 controls, DEL and C1 controls. Other Unicode (letters, marks, emoji) is allowed, but see
// BIDI_CONTROL and the white-space rule below.
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/u;

// Bidirectional overrides and isolates can make a label display as another one.
const BIDI_CONTROL = /[\u202a-\u202e\u2066-\u2069\u200e\u200f]/u;

// Invisible characters that make two labels look the same: every default-ignorable code point
// and format character (zero-width space, word joiner, soft hyphen, Hangul fillers, tags, ...),
// the blank Braille pattern, line and paragraph separators, the object replacement character
// and noncharacters. Zero-width (non-)joiners and variation selectors stay allowed: scripts
// and emoji need them.
const INVISIBLE =
  /(?![\u200c\u200d\ufe00-\ufe0f\u{e0100}-\u{e01ef}])[\p{Default_Ignorable_Code_Point}\p{Cf}\u2028\u2029\u2800\ufffc\p{Noncharacter_Code_Point}]/u;

/**
 * The first invisible character of `text` (see INVISIBLE) with its position, or null. Used for
 * identity labels and for the legal basis and purpose texts.
 */
export function findInvisible(text: string): { code: string; index: number } | null {
  const found = INVISIBLE.exec(text);
  if (found === null) return null;
  return { code: found[0].codePointAt(0)!.toString(16).padStart(4, '0'), index: found.index };
}

// A surrogate without its partner cannot be stored as UTF-8; SQLite would replace it.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Checks an identity label as the user gives it: a string, not empty, at most 128 characters
 * and free of control characters. Returns the label unchanged (no trimming or case folding:
 * "Ana" and "ana " are different identities); throws invalid_identity naming the input.
 */
export function validateIdentity(identity: unknown): string {
  if (typeof identity !== 'string') {
    throw new ReidbError('invalid_identity', `identity must be a string, got ${typeof identity}`, {
      input: String(identity),
    });
  }

  if (identity.length === 0) {
    throw new ReidbError('invalid_identity', 'identity must not be empty', { input: identity });
  }

  if (identity.length > MAX_IDENTITY_LENGTH) {
    throw new ReidbError(
      'invalid_identity',
      `identity is ${identity.length} characters long; at most ${MAX_IDENTITY_LENGTH} are allowed`,
      {
        input: identity.slice(0, MAX_IDENTITY_LENGTH) + '...',
        details: { max: MAX_IDENTITY_LENGTH },
      },
    );
  }

  const control = CONTROL_CHARACTER.exec(identity);
  if (control !== null) {
    const code = control[0].codePointAt(0)!.toString(16).padStart(4, '0');
    throw new ReidbError(
      'invalid_identity',
      `identity contains the control character U+${code} at position ${control.index}`,
      { input: identity },
    );
  }

  if (identity.trim().length === 0) {
    throw new ReidbError('invalid_identity', 'identity must not be only white space', {
      input: identity,
    });
  }

  const bidi = BIDI_CONTROL.exec(identity);
  if (bidi !== null) {
    const code = bidi[0].codePointAt(0)!.toString(16).padStart(4, '0');
    throw new ReidbError(
      'invalid_identity',
      `identity contains the bidirectional control U+${code} at position ${bidi.index}, ` +
        'which can make it display as another label',
      { input: identity },
    );
  }

  const invisible = findInvisible(identity);
  if (invisible !== null) {
    const { code } = invisible;
    throw new ReidbError(
      'invalid_identity',
      `identity contains the invisible character U+${code} at position ${invisible.index}, ` +
        'which makes it look like another label',
      { input: identity },
    );
  }

  if (LONE_SURROGATE.test(identity)) {
    const message = 'identity is not well-formed Unicode (it has a lone surrogate)';
    throw new ReidbError('invalid_identity', message, { input: identity });
  }

  return identity;
}
