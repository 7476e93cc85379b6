//! The SQLSTATEs Infra answers PostgreSQL clients with: a closed set, so a
//! code is chosen from what it means, never typed as a string.
//! (PostgreSQL documentation, Appendix A, "PostgreSQL Error Codes".)

/// A SQLSTATE Infra sends in an `ErrorResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlState {
    /// `08004` sqlserver_rejected_establishment_of_sqlconnection: the
    /// connection cannot be placed (no destination in the server name).
    RejectedConnection,
    /// `08006` connection_failure: the way to the database broke or is
    /// not there (no connector, a tunnel that went away, a time-out).
    ConnectionFailure,
    /// `08P01` protocol_violation: the client sent something that is not
    /// the message expected.
    ProtocolViolation,
    /// `0A000` feature_not_supported: a protocol version other than 3.0.
    FeatureNotSupported,
    /// `28000` invalid_authorization_specification: the credential or the
    /// grant was refused, or TLS was not used where it is required.
    InvalidAuthorization,
}

impl SqlState {
    /// The five-character code.
    pub fn code(self) -> &'static str {
        match self {
            SqlState::RejectedConnection => "08004",
            SqlState::ConnectionFailure => "08006",
            SqlState::ProtocolViolation => "08P01",
            SqlState::FeatureNotSupported => "0A000",
            SqlState::InvalidAuthorization => "28000",
        }
    }
}

impl std::fmt::Display for SqlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// An error that ends the connection: the `ErrorResponse` (severity
/// `FATAL`) a client is sent before it is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub code: SqlState,
    /// Shown to the user: what went wrong and, where it helps, what to do.
    pub message: String,
}

impl Fatal {
    pub fn new(code: SqlState, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The `ErrorResponse` message on the wire.
    pub fn encode(&self) -> Vec<u8> {
        crate::error_response("FATAL", self.code.code(), &self.message)
    }
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}
