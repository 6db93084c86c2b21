//! The error codes clients and backends see (SPEC §3, §6).

/// A protocol error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Missing, invalid or expired token.
    Authentication,
    /// Not allowed to do this with this topic.
    Authorization,
    /// Malformed JSON, missing field, wrong type, bad topic.
    Validation,
    /// No built-in action or route matches.
    UnknownAction,
    /// Message over the size limit.
    PayloadTooLarge,
    /// Too many messages.
    RateLimitExceeded,
    /// A routed message could not be handed to its sink.
    SinkUnavailable,
    /// The broker cannot be reached.
    BrokerUnavailable,
    /// No such connection or resource (HTTP API).
    NotFound,
    /// The server is full or draining (HTTP API, upgrades).
    ServiceUnavailable,
    /// A bug on our side.
    Internal,
}

impl ErrorCode {
    /// Every code, for metrics registration.
    pub const ALL: &'static [ErrorCode] = &[
        Self::Authentication,
        Self::Authorization,
        Self::Validation,
        Self::UnknownAction,
        Self::PayloadTooLarge,
        Self::RateLimitExceeded,
        Self::SinkUnavailable,
        Self::BrokerUnavailable,
        Self::NotFound,
        Self::ServiceUnavailable,
        Self::Internal,
    ];

    /// The code as sent on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "AUTHENTICATION_ERROR",
            Self::Authorization => "AUTHORIZATION_ERROR",
            Self::Validation => "VALIDATION_ERROR",
            Self::UnknownAction => "UNKNOWN_ACTION",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            Self::SinkUnavailable => "SINK_UNAVAILABLE",
            Self::BrokerUnavailable => "BROKER_UNAVAILABLE",
            Self::NotFound => "NOT_FOUND",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::Internal => "INTERNAL_ERROR",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
