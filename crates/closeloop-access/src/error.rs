//! [`AccessLogError`]: how recording or reading the access log can fail.

use std::path::PathBuf;

/// Why the access log could not record or answer. Recording fails closed: a caller that
/// cannot record a read of personal data must not show the data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessLogError {
    /// The queue to the writer stayed full for the whole wait: the disk is slower than the
    /// reads. Nothing was recorded; try again in a moment.
    #[error(
        "the access log is behind (its queue stayed full); nothing was recorded, try again in a moment"
    )]
    Busy,
    /// A write or fsync failed, so the writer stopped: nothing more is recorded until the
    /// service is restarted on a working disk. The text is the operating system's; log it,
    /// never show it to a client.
    #[error(
        "the access log stopped after a failed write ({0}); fix the disk and restart the service"
    )]
    Failed(String),
    /// The log was closed (the service is shutting down).
    #[error("the access log is closed; the service is shutting down")]
    Closed,
    /// The store that keeps the log elsewhere (NATS JetStream, for a `NatsAccessLog`) did not
    /// answer in time, refused a request, or is set up in a way the log cannot use; the text
    /// says which. Entries of a failed record count as not recorded (some may still have
    /// reached the store, which errs on the side of recording); try again once it answers.
    #[error(
        "the access log's store cannot be used ({0}); treat the entries as not recorded and try again once it answers"
    )]
    Unavailable(String),
    /// Another process holds the access log's lock file.
    #[error(
        "another process is writing the access log in {0}; stop it first (one process writes it at a time)"
    )]
    Locked(PathBuf),
    /// A file of the log could not be read, created or removed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done, e.g. `read`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl AccessLogError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
