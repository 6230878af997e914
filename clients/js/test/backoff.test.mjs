// The reconnect delays (pure): exponential, capped, jittered.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { BACKOFF_DEFAULTS, backoffDelay } from '../dist/index.js';

test('without jitter the delay doubles from initialDelayMs up to maxDelayMs', () => {
  const o = { initialDelayMs: 500, maxDelayMs: 30_000, jitter: 0 };
  const delays = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((a) => backoffDelay(a, o));
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
});

test('the jitter draws each delay from [base * (1 - jitter), base]', () => {
  const o = { initialDelayMs: 1000, maxDelayMs: 8000, jitter: 0.5 };
  assert.equal(backoffDelay(2, o, () => 0), 2000);
  assert.equal(backoffDelay(2, o, () => 0.5), 3000);
  assert.equal(backoffDelay(2, o, () => 0.999999), 4000);
  assert.equal(backoffDelay(10, o, () => 0), 4000); // capped base 8000, half of it at least
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(3, o);
    assert.ok(d >= 4000 && d <= 8000, `${d}`);
    seen.add(d);
  }
  assert.ok(seen.size > 50, 'Math.random jitter spreads the delays');
});

test('huge attempt numbers stay at the cap (no Infinity, no NaN)', () => {
  for (const attempt of [60, 1100, 1e6]) {
    const d = backoffDelay(attempt, {}, () => 1);
    assert.equal(d, BACKOFF_DEFAULTS.maxDelayMs);
  }
  assert.equal(BACKOFF_DEFAULTS.maxDelayMs, 30_000);
  assert.throws(() => backoffDelay(-1), RangeError);
  assert.throws(() => backoffDelay(Number.NaN), RangeError);
});
