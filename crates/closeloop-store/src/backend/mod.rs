//! What every [`EventStore`](crate::EventStore) backend shares, so that no reader can tell the
//! stores apart: the bytes of an [`entry`], the in-memory [`index`] of loops, keys and Merkle
//! roots, and the group-commit steps of [`commit`] — validate and encode appends on the
//! caller's task, seal their personal data ahead of the writer ([`intake`]), stage a batch
//! against the index. A backend only decides how the staged entries reach durable storage.

pub mod commit;
pub mod entry;
pub mod index;
pub mod intake;
pub(crate) mod key_recovery;
