/**
 * The one error type the client raises or rejects with.
 *
 * Codes from the gateway are passed through unchanged (SPEC §3: `AUTHENTICATION_ERROR`,
 * `AUTHORIZATION_ERROR`, `VALIDATION_ERROR`, `UNKNOWN_ACTION`, `PAYLOAD_TOO_LARGE`,
 * `RATE_LIMIT_EXCEEDED`, `SINK_UNAVAILABLE`, `BROKER_UNAVAILABLE`, `INTERNAL_ERROR`); the
 * client adds its own for what never reached a reply (`TIMEOUT`, `DISCONNECTED`, `CLOSED`,
 * `TOKEN_PROVIDER_ERROR`, `BAD_FRAME`, `SLOW_CONSUMER`).
 */
export class SignalboxError extends Error {
  /** A gateway error code, or one of the client's own (see the class doc). */
  readonly code: string;
  /** The `requestId` of the message this error answers, when it answers one. */
  readonly requestId: string | undefined;

  constructor(code: string, message: string, requestId?: string) {
    super(message);
    this.name = "SignalboxError";
    this.code = code;
    this.requestId = requestId;
  }

  /** Builds the error from a gateway `{"type":"error","code","message"}` frame. */
  static fromFrame(frame: Record<string, unknown>): SignalboxError {
    const code = typeof frame.code === "string" ? frame.code : "INTERNAL_ERROR";
    const message = typeof frame.message === "string" ? frame.message : "the gateway answered an error";
    const requestId = typeof frame.requestId === "string" ? frame.requestId : undefined;
    return new SignalboxError(code, message, requestId);
  }
}

/** Codes the client itself produces (never sent by the gateway). */
export const ClientErrorCode = {
  /** No reply within the request's timeout. */
  Timeout: "TIMEOUT",
  /** The connection dropped after the message was sent and before its reply: it may or may not have been carried out. */
  Disconnected: "DISCONNECTED",
  /** `close()` was called. */
  Closed: "CLOSED",
  /** The token provider threw or returned something that is not a non-empty string. */
  TokenProvider: "TOKEN_PROVIDER_ERROR",
  /** The gateway sent a frame that is not JSON. */
  BadFrame: "BAD_FRAME",
  /** Resumes kept being cut with 4008 (the replay overflows the send queue): topics were subscribed afresh. */
  SlowConsumer: "SLOW_CONSUMER",
  /** A bad argument to a client method (the gateway's own code for the same mistake). */
  Validation: "VALIDATION_ERROR",
} as const;
