/**
 * Retry policy of the OTLP exporter (per the OTLP/HTTP spec): network and TLS errors, 429, 502,
 * 503 and 504 are retried with exponential backoff and jitter, or after the server's Retry-After
 * (seconds or an HTTP date); other 4xx and 5xx are final.
 */
const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);

export function isRetryableStatus(status: number): boolean {
  return RETRYABLE_STATUS.has(status);
}

/** Retry-After in ms from now, or undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, nowMs = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  if (!/[a-z]/i.test(v)) return undefined;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}

export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  /** upper bound for a server's Retry-After */
  maxRetryAfterMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 1000, maxMs: 30_000, maxRetryAfterMs: 300_000 };

/**
 * Delay before retry number `attempt` (0-based): "equal jitter" — half of the exponential
 * step is fixed, half random — so delays grow but clients spread out.
 */
export function backoffDelay(attempt: number, p: BackoffPolicy, random: () => number = Math.random): number {
  const step = Math.min(p.maxMs, p.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(step / 2 + random() * (step / 2));
}

/** The server's Retry-After wins (capped); otherwise the backoff. */
export function retryDelay(attempt: number, retryAfterMs: number | undefined, p: BackoffPolicy, random?: () => number): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, p.maxRetryAfterMs);
  return backoffDelay(attempt, p, random);
}
