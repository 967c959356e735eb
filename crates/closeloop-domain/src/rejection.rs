//! Why a command was refused.

/// Why a command was refused; nothing is stored when this is returned.
///
/// Each variant has a stable machine-readable [`code`](Rejection::code) (contract §1) that the
/// HTTP API returns in problem+json and NATS ingestion puts in the `Closeloop-Error` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `invalid_data` (HTTP 422): a field is missing, ill-typed or out of range.
    #[error("{0}")]
    InvalidData(String),
    /// `unknown_loop` (HTTP 404): the loop was never received.
    #[error("loop {0:?} does not exist; record its feedback first")]
    UnknownLoop(String),
    /// `loop_exists` (HTTP 422): feedback was already received under this loop id.
    #[error("loop {0:?} already exists; use a new loop_id or omit it to get a generated one")]
    LoopExists(String),
    /// `loop_closed` (HTTP 422): a closed loop accepts only `loop.reopened`.
    #[error("the loop is closed; reopen it before recording anything else")]
    LoopClosed,
    /// `already_acknowledged` (HTTP 422): a loop is acknowledged once.
    #[error("the loop was already acknowledged")]
    AlreadyAcknowledged,
    /// `no_outcome` (HTTP 422): reporting back needs a change or a no-change recorded first.
    #[error(
        "nothing to report back yet: record a change or a no-change for this loop first (since it was received or last reopened)"
    )]
    NoOutcome,
    /// `not_closed` (HTTP 422): only a closed loop can be reopened. (An extension of the
    /// contract: it names no code for this case.)
    #[error("the loop is still open; only a closed loop can be reopened")]
    NotClosed,
}

impl Rejection {
    /// An [`Rejection::InvalidData`] with the given explanation.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Rejection::InvalidData(detail.into())
    }

    /// The contract's code for this rejection.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InvalidData(_) => "invalid_data",
            Rejection::UnknownLoop(_) => "unknown_loop",
            Rejection::LoopExists(_) => "loop_exists",
            Rejection::LoopClosed => "loop_closed",
            Rejection::AlreadyAcknowledged => "already_acknowledged",
            Rejection::NoOutcome => "no_outcome",
            Rejection::NotClosed => "not_closed",
        }
    }
}
