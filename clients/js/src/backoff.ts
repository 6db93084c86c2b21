/** Reconnect timing: exponential backoff with full jitter. */

/** How long to wait between reconnect attempts. */
export interface ReconnectOptions {
  /** The shortest wait, and the base of the exponential growth (default 250 ms). */
  minDelayMs?: number;
  /** The longest wait (default 30 s). */
  maxDelayMs?: number;
}

/** The defaults of `ReconnectOptions`. */
export const DEFAULT_RECONNECT = { minDelayMs: 250, maxDelayMs: 30_000 } as const;

/**
 * The wait before reconnect attempt `attempt` (0 for the first): uniformly random between
 * `minDelayMs` and `min(maxDelayMs, minDelayMs × 2^(attempt+1))`. The whole window is
 * random ("full jitter"), so thousands of clients dropped by one gateway restart spread
 * their reconnects instead of arriving together.
 */
export function reconnectDelay(attempt: number, options: Required<ReconnectOptions>, random: () => number = Math.random): number {
  const min = Math.max(0, options.minDelayMs);
  const max = Math.max(min, options.maxDelayMs);
  const exponent = Math.min(Math.max(0, attempt) + 1, 30);
  const ceiling = Math.min(max, min * 2 ** exponent);
  return Math.round(min + random() * (ceiling - min));
}
