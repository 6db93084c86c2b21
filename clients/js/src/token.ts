/** Tokens: where they come from and when they expire. */
import { ClientErrorCode, SignalboxError } from "./errors.js";

/**
 * A client token: a JWT string, or a function that returns one (called at every connect,
 * before the token expires, and after a `4001` close).
 */
export type TokenSource = string | (() => string | Promise<string>);

/** Gets a token from `source`, checking what a provider returned. */
export async function obtainToken(source: TokenSource | undefined): Promise<string | undefined> {
  if (source === undefined || typeof source === "string") return source;
  let token: unknown;
  try {
    token = await source();
  } catch (err) {
    throw new SignalboxError(ClientErrorCode.TokenProvider, `the token provider failed: ${describe(err)}`);
  }
  if (typeof token !== "string" || token.length === 0) {
    throw new SignalboxError(ClientErrorCode.TokenProvider, "the token provider must return a non-empty string");
  }
  return token;
}

/**
 * The token's `exp` as milliseconds since the epoch, read from the JWT's payload without
 * checking its signature (the gateway checks it); `undefined` when the token is not a JWT
 * or has no numeric `exp`.
 */
export function tokenExpiresAt(token: string | undefined): number | undefined {
  if (!token) return undefined;
  const parts = token.split(".");
  if (parts.length !== 3 || !parts[1]) return undefined;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    if (claims && typeof claims === "object" && typeof (claims as { exp?: unknown }).exp === "number") {
      return (claims as { exp: number }).exp * 1000;
    }
  } catch {
    // Not a JWT we can read: the client simply does not refresh ahead of time.
  }
  return undefined;
}

/**
 * How long before `expiresAt` to refresh: a fifth of the remaining lifetime, between 1 s
 * and 60 s, so short test tokens and hour-long tokens both refresh in time.
 */
export function refreshDelay(expiresAt: number, now: number): number {
  const remaining = expiresAt - now;
  const margin = Math.min(60_000, Math.max(1_000, remaining / 5));
  return Math.max(0, remaining - margin);
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
