/** Reconnect delays: exponential, capped, jittered (pure functions, no timers). */

export interface BackoffOptions {
  /** Delay before the first retry, before jitter (ms). Default 500. */
  initialDelayMs?: number;
  /** Largest delay, before jitter (ms). Default 30 000. */
  maxDelayMs?: number;
  /** Growth per attempt. Default 2. */
  factor?: number;
  /**
   * Share of each delay that is random, 0…1. Default 0.5: a delay is uniformly drawn from
   * [base·(1 − jitter), base], so a fleet of clients cut at once does not come back in step.
   */
  jitter?: number;
}

export const BACKOFF_DEFAULTS: Required<BackoffOptions> = {
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  factor: 2,
  jitter: 0.5,
};

/**
 * The delay before retry number `attempt` (0 for the first retry after a drop).
 * `random` returns a number in [0, 1) (Math.random by default; tests pass their own).
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const o = { ...BACKOFF_DEFAULTS, ...options };
  if (!(attempt >= 0)) throw new RangeError(`attempt must be >= 0, got ${attempt}`);
  const jitter = Math.min(1, Math.max(0, o.jitter));
  // factor^attempt overflows to Infinity for large attempts: the cap still applies.
  const base = Math.min(o.maxDelayMs, o.initialDelayMs * Math.pow(o.factor, attempt));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(base * (1 - jitter) + base * jitter * r);
}
