//! Closeloop's NATS JetStream side (contract §2).
//!
//! - [`cloudevent`]: decodes CloudEvents 1.0 messages (structured JSON, or binary mode with
//!   `ce-` headers) into the same domain commands the HTTP API records.

pub mod cloudevent;
