import test from 'ava';

import { int, num, oneOf, parseArgs, required } from '../../src/cli/args.ts';
import { ReidbError } from '../../src/errors.ts';

const spec = { db: true, json: false, 'top-k': true };

test('parses values, switches, = forms and positionals', (t) => {
  const a = parseArgs(['--db', 'g', '--json', '--top-k=3', 'a.jpg', 'b.jpg'], spec);
  t.deepEqual(a.flags, { db: 'g', json: true, 'top-k': '3' });
  t.deepEqual(a.positionals, ['a.jpg', 'b.jpg']);
});

test('everything after -- is positional', (t) => {
  const a = parseArgs(['--db', 'g', '--', '--json'], spec);
  t.deepEqual(a.positionals, ['--json']);
  t.false('json' in a.flags);
});

test('unknown flag, missing value and value on a switch are invalid_argument', (t) => {
  for (const argv of [['--nope'], ['--db'], ['--db', '--json'], ['--json=1']]) {
    const e = t.throws(() => parseArgs(argv, spec), { instanceOf: ReidbError });
    t.is(e?.code, 'invalid_argument', argv.join(' '));
  }
});

test('typed getters check range and name the flag', (t) => {
  const a = parseArgs(['--top-k', '0', '--db', 'x'], { ...spec, align: true });
  const e = t.throws(() => int(a, 'top-k', 1, 1000), { instanceOf: ReidbError });
  t.regex(e!.message, /--top-k must be an integer from 1 to 1000, got '0'/);
  t.is(required(a, 'db'), 'x');
  t.throws(() => required(a, 'align'), { message: /--align is required/ });
  t.is(oneOf(a, 'align', ['mesh', 'raw']), undefined);
  t.is(num(parseArgs(['--top-k', '0.5'], spec), 'top-k', 0, 1), 0.5);
  t.throws(() => oneOf(parseArgs(['--db', 'bad'], spec), 'db', ['mesh', 'raw']), {
    message: /must be one of mesh, raw, got 'bad'/,
  });
});
