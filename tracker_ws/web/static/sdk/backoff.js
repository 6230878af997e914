/** Reconnect delays: exponential, capped, jittered (pure functions, no timers). */
export const BACKOFF_DEFAULTS = {
    initialDelayMs: 500,
    maxDelayMs: 30000,
    factor: 2,
    jitter: 0.5,
};
/**
 * The delay before retry number `attempt` (0 for the first retry after a drop).
 * `random` returns a number in [0, 1) (Math.random by default; tests pass their own).
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
    const o = { ...BACKOFF_DEFAULTS, ...options };
    if (!(attempt >= 0))
        throw new RangeError(`attempt must be >= 0, got ${attempt}`);
    const jitter = Math.min(1, Math.max(0, o.jitter));
    // factor^attempt overflows to Infinity for large attempts: the cap still applies.
    const base = Math.min(o.maxDelayMs, o.initialDelayMs * Math.pow(o.factor, attempt));
    const r = Math.min(Math.max(random(), 0), 1);
    return Math.round(base * (1 - jitter) + base * jitter * r);
}
