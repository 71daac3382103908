import test from 'ava';

import { main } from '../../src/cli/main.ts';

/** Runs the CLI in-process and captures its output. */
async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) });
  return { code, stdout, stderr };
}

test('no command prints help and exits 2', async (t) => {
  const r = await run([]);
  t.is(r.code, 2);
  t.regex(r.stdout, /usage: reidb <command>/);
});

test('unknown command is a usage error with one JSON document', async (t) => {
  const r = await run(['frobnicate', '--json']);
  t.is(r.code, 2);
  const doc = JSON.parse(r.stdout);
  t.is(doc.error.code, 'invalid_argument');
  t.regex(doc.error.message, /unknown command 'frobnicate'/);
});

test('missing --identity, unknown flag and bad --top-k exit 2 and name the flag', async (t) => {
  const cases: [string[], RegExp][] = [
    [['erase', '--db', 'g', '--json'], /--identity is required/],
    [['search', '--db', 'g', '--bogus', 'a.jpg', '--json'], /unknown option --bogus/],
    [['search', '--db', 'g', '--top-k', '0', 'a.jpg', '--json'], /--top-k must be an integer/],
    [['enroll', '--db', 'g', '--json'], /enroll needs --layout folder ROOT or --identity/],
    [['enroll', '--db', 'g', '--identity', 'a', '--json'], /needs at least one FILE/],
    [['enroll', '--db', 'g', '--layout', 'market1501', 'x', '--json'], /--layout must be 'folder'/],
    [
      ['enroll', '--db', 'g', '--identity', '', 'a.jpg', '--json'],
      /--identity: identity must not be empty/,
    ],
    [['enroll', '--db', 'g', '--identity', 'a\nb', 'a.jpg', '--json'], /--identity: identity/],
    [['search', '--db', 'g', '--min-score=', 'a.jpg', '--json'], /--min-score must be a number/],
    [['search', '--db', 'g', '--top-k', '0x3', 'a.jpg', '--json'], /--top-k must be an integer/],
  ];
  for (const [argv, message] of cases) {
    const r = await run(argv);
    t.is(r.code, 2, argv.join(' '));
    t.regex(JSON.parse(r.stdout).error.message, message);
    t.regex(r.stderr, /^reidb: /);
  }
});

test('help for one command exits 0', async (t) => {
  const r = await run(['search', '--help']);
  t.is(r.code, 0);
  t.regex(r.stdout, /reidb search \[--db DIR\]/);
});
