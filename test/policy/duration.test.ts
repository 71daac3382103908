import test from 'ava';

import { ReidbError } from '../../src/errors.ts';
import { formatDuration, MAX_DURATION_SECONDS, parseDuration } from '../../src/policy/duration.ts';

test('parseDuration reads each unit in seconds', (t) => {
  t.is(parseDuration('90s'), 90);
  t.is(parseDuration('15m'), 900);
  t.is(parseDuration('12h'), 43_200);
  t.is(parseDuration('30d'), 2_592_000);
  t.is(parseDuration('52w'), 31_449_600);
  t.is(parseDuration('1s'), 1);
  t.is(parseDuration('36525d'), MAX_DURATION_SECONDS, '100 years is the limit');
  t.is(MAX_DURATION_SECONDS, 3_155_760_000);
});

test('parseDuration refuses every other form, naming the input and the accepted forms', (t) => {
  const bad: unknown[] = [
    '',
    '90',
    's',
    '0s',
    '00s',
    '09s',
    '-5m',
    '+5m',
    '1.5h',
    '1,5h',
    '1h30m',
    '90S',
    '90sec',
    '90 s',
    ' 90s',
    '90s ',
    '90s\n',
    '1y',
    '1e3s',
    '٣s',
    '１s',
    'Infinity',
    '0x10s',
    undefined,
    90,
    null,
  ];
  for (const text of bad) {
    const error = t.throws(() => parseDuration(text as string, 'keep-for'), {
      instanceOf: ReidbError,
    });
    t.is(error?.code, 'invalid_argument', String(text));
    t.is(error?.input, 'keep-for');
    t.regex(
      error!.message,
      /^keep-for .* is not a duration: use .*'90s', '15m', '12h', '30d' or '52w'/,
    );
  }
  t.is(t.throws(() => parseDuration('1x'))?.message.startsWith('duration '), true);
});

test('parseDuration refuses more than 100 years, however written', (t) => {
  for (const text of ['36526d', '5218w', '876601h', '3155760001s', '99999999999999999w']) {
    const error = t.throws(() => parseDuration(text, 'retention'), { instanceOf: ReidbError });
    t.is(error?.code, 'invalid_argument', text);
    t.is(error?.input, 'retention');
    t.regex(error!.message, /longer than 100 years/);
  }
  t.is(parseDuration('5217w'), 5217 * 604_800);
});

test('formatDuration uses the largest exact unit and reads back', (t) => {
  const cases: [number, string][] = [
    [90, '90s'],
    [900, '15m'],
    [3600, '1h'],
    [90_000, '25h'],
    [86_400, '1d'],
    [2_592_000, '30d'],
    [604_800, '1w'],
    [31_449_600, '52w'],
    [61, '61s'],
    [0, '0s'],
  ];
  for (const [seconds, text] of cases) {
    t.is(formatDuration(seconds), text);
    if (seconds > 0) t.is(parseDuration(text), seconds);
  }

  for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.is(t.throws(() => formatDuration(bad), { instanceOf: ReidbError })?.code, 'invalid_argument');
  }
});
