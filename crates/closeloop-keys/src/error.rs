//! The one error type of the key store, with messages that say what to do next.

use std::path::PathBuf;

/// Everything that can go wrong opening or using a key store.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The store's files were wrapped under another master key.
    #[error(
        "the key store was created under another master key: set CLOSELOOP_MASTER_KEY to the key this data directory was created with"
    )]
    WrongMasterKey,
    /// The store was opened without a master key, so it can tell which keys exist and which were
    /// destroyed, but can neither unwrap nor create any.
    #[error(
        "the key store is sealed (opened without a master key): set CLOSELOOP_MASTER_KEY or CLOSELOOP_MASTER_KEY_FILE to read or write personal data"
    )]
    Sealed,
    /// Reading or writing a key store file failed.
    #[error(
        "key store I/O failed on {path}: {source}; check the disk and the data directory's permissions"
    )]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A key store file does not hold what it should.
    #[error(
        "the key store is corrupt: {detail}; keep a copy of the directory, restore the key store from a backup taken under the same master key, then re-run every erasure recorded since the backup (see docs/security.md)"
    )]
    Corrupt {
        /// What was found where.
        detail: String,
    },
    /// The master key given is not 32 bytes written as 64 hex characters.
    #[error(
        "invalid master key: {0}; give 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`"
    )]
    InvalidMasterKey(String),
    /// Ciphertext did not authenticate under this key and associated data.
    #[error(
        "decryption failed: the data was sealed with another key or other associated data, or was altered"
    )]
    Decrypt,
    /// A loop id outside the contract's 1–128 characters of `[A-Za-z0-9._:-]`.
    #[error(
        "invalid loop id: a loop id is 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'"
    )]
    InvalidLoopId,
    /// A contact longer than the key store indexes.
    #[error("contact too long: {len} bytes, at most {max} are accepted; shorten it")]
    ContactTooLong {
        /// The contact's length in bytes.
        len: usize,
        /// The most accepted.
        max: usize,
    },
    /// Another process (or another handle in this one) has the key store open.
    #[error(
        "the key store {path} is in use by another Closeloop process: stop it first, or run this command against it"
    )]
    Locked {
        /// The key file.
        path: PathBuf,
    },
    /// An earlier write or fsync failed; nothing can be trusted about what reached the disk, so
    /// the store refuses every write until it is reopened.
    #[error(
        "the key store stopped writing after an earlier failure ({detail}); fix the disk and restart Closeloop, which recovers from what is on disk"
    )]
    Failed {
        /// The first failure.
        detail: String,
    },
}

impl KeyError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KeyError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(detail: impl Into<String>) -> Self {
        KeyError::Corrupt {
            detail: detail.into(),
        }
    }
}
