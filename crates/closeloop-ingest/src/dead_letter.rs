//! Dead letters: messages that cannot be stored, kept in `FEEDBACK_DLQ` with their reason so
//! an admin can see why, fix the cause and send them through again.
//!
//! A dead letter carries the original payload byte for byte and these headers:
//!
//! | header | value |
//! |---|---|
//! | `Closeloop-Error` | the code: `invalid_json`, `invalid_cloudevent`, `unknown_type`, `invalid_data`, a §1 code such as `unknown_loop` or `loop_closed`, or `unavailable` (the store kept failing until the last delivery) |
//! | `Closeloop-Error-Detail` | one sentence saying what is wrong and what to fix |
//! | `Closeloop-Original-Subject` | the subject it was published on, e.g. `feedback.fft` |
//! | `Closeloop-Original-Sequence` | its sequence in `FEEDBACK` |
//! | `Closeloop-Delivered` | how many times it was delivered |
//! | `Nats-Msg-Id` | `FEEDBACK-<sequence>`, so a redelivery dead-letters it only once |
//!
//! The original's own headers (binary-mode `ce-` attributes, for instance) are kept too, except
//! `Nats-*` headers.

use async_nats::HeaderMap;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{RawMessageError, RawMessageErrorKind};
use async_nats::jetstream::{self, Context};
use base64::Engine as _;
use serde::Serialize;

use crate::cloudevent::DETAIL_MAX_LEN;
use crate::streams::{self, DLQ_SUBJECT, FEEDBACK_SUBJECTS};

/// The header with the error code.
pub const ERROR_HEADER: &str = "Closeloop-Error";
/// The header with the human explanation.
pub const DETAIL_HEADER: &str = "Closeloop-Error-Detail";
/// The header with the subject the message was published on.
pub const ORIGINAL_SUBJECT_HEADER: &str = "Closeloop-Original-Subject";
/// The header with the message's sequence in `FEEDBACK`.
pub const ORIGINAL_SEQUENCE_HEADER: &str = "Closeloop-Original-Sequence";
/// The header with the number of deliveries.
pub const DELIVERED_HEADER: &str = "Closeloop-Delivered";

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The `Closeloop-Error` code.
    pub code: String,
    /// The `Closeloop-Error-Detail` sentence.
    pub detail: String,
}

/// Publishes `message` to the dead-letter stream with `reason` and waits for JetStream to
/// store it. The caller acks the original afterwards.
pub(crate) async fn publish(
    js: &Context,
    message: &jetstream::Message,
    reason: &Reason,
) -> Result<(), async_nats::Error> {
    let mut headers = message
        .headers
        .as_ref()
        .map(publishers_headers)
        .unwrap_or_default();
    headers.insert(ERROR_HEADER, reason.code.as_str());
    headers.insert(DETAIL_HEADER, one_line(&reason.detail).as_str());
    headers.insert(ORIGINAL_SUBJECT_HEADER, message.subject.as_str());
    let mut publish = PublishMessage::build().payload(message.payload.clone());
    if let Ok(info) = message.info() {
        headers.insert(
            ORIGINAL_SEQUENCE_HEADER,
            info.stream_sequence.to_string().as_str(),
        );
        headers.insert(DELIVERED_HEADER, info.delivered.to_string().as_str());
        publish = publish.message_id(format!(
            "{}-{}",
            streams::FEEDBACK_STREAM,
            info.stream_sequence
        ));
    }
    js.send_publish(DLQ_SUBJECT, publish.headers(headers))
        .await?
        .await?;
    Ok(())
}

/// The publisher's own headers of `original` (binary-mode `ce-` attributes, for instance):
/// all but JetStream's and ours.
fn publishers_headers(original: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, values) in original.iter() {
        if is_ours(name.as_ref()) {
            continue;
        }
        for value in values {
            headers.append(name.as_ref(), value.as_str());
        }
    }
    headers
}

/// Headers not copied from the original: JetStream's own and ours.
fn is_ours(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("nats-") || name.starts_with("closeloop-")
}

/// A header value: one line, at most [`DETAIL_MAX_LEN`] characters.
fn one_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(DETAIL_MAX_LEN)
        .collect();
    if text.chars().count() > DETAIL_MAX_LEN {
        line.truncate(
            line.char_indices()
                .nth(DETAIL_MAX_LEN - 3)
                .map_or(line.len(), |(i, _)| i),
        );
        line.push_str("...");
    }
    line
}

/// One dead letter, as `GET /v1/dead-letters` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Its sequence in `FEEDBACK_DLQ`: the `{seq}` of the retry endpoint.
    pub seq: u64,
    /// When it was dead-lettered (RFC 3339).
    pub dead_lettered_at: String,
    /// The `Closeloop-Error` code.
    pub error: String,
    /// The `Closeloop-Error-Detail` sentence.
    pub detail: String,
    /// The subject it was published on.
    pub original_subject: Option<String>,
    /// Its sequence in `FEEDBACK`.
    pub original_sequence: Option<u64>,
    /// The original payload when it is UTF-8 text (it may hold personal data: admins only).
    pub payload: Option<String>,
    /// The original payload in base64 when it is not UTF-8.
    pub payload_base64: Option<String>,
}

/// What re-driving a dead letter did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// The dead letter's sequence, now removed from `FEEDBACK_DLQ`.
    pub seq: u64,
    /// Where the original was published again.
    pub subject: String,
    /// Its new sequence in `FEEDBACK`.
    pub feedback_sequence: u64,
}

/// Why a dead-letter request failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// No dead letter has that sequence (or it was re-driven already).
    #[error("there is no dead letter {0}; list them with GET /v1/dead-letters")]
    NotFound(u64),
    /// The dead letter has no original subject under `feedback.>` to send it back to.
    #[error("dead letter {0} has no original subject under feedback.>, so it cannot be re-driven")]
    NoSubject(u64),
    /// NATS could not be reached or refused the request.
    #[error("NATS is unavailable: {0}")]
    Unavailable(String),
}

/// Lists and re-drives dead letters.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    js: Context,
}

impl DeadLetters {
    pub(crate) fn new(js: Context) -> Self {
        Self { js }
    }

    /// The `FEEDBACK_DLQ` stream, or `None` when ingestion has not created it yet. Reading
    /// dead letters never creates it.
    async fn stream(&self) -> Result<Option<jetstream::stream::Stream>, DeadLetterError> {
        match self.js.get_stream(streams::DLQ_STREAM).await {
            Ok(stream) => Ok(Some(stream)),
            Err(err)
                if matches!(
                    err.kind(),
                    GetStreamErrorKind::JetStream(ref js_err)
                        if js_err.error_code() == ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                Ok(None)
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Up to `limit` dead letters with a sequence above `after`, oldest first.
    ///
    /// # Errors
    /// [`DeadLetterError::Unavailable`] when NATS cannot be asked.
    pub async fn list(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let Some(mut stream) = self.stream().await? else {
            return Ok(Vec::new());
        };
        let state = stream.info().await.map_err(unavailable)?.state.clone();
        let mut letters = Vec::new();
        let mut seq = after.max(state.first_sequence.saturating_sub(1)) + 1;
        while seq <= state.last_sequence && letters.len() < limit {
            match stream.get_raw_message(seq).await {
                Ok(message) => letters.push(describe(&message)),
                Err(err) if is_missing(&err) => {}
                Err(err) => return Err(unavailable(err)),
            }
            seq += 1;
        }
        Ok(letters)
    }

    /// Publishes dead letter `seq` again on its original subject (without its `Closeloop-*`
    /// and `Nats-*` headers, so it is not taken for a JetStream duplicate), then removes it
    /// from `FEEDBACK_DLQ`. Fix the cause first: if it fails again it comes back as a new dead
    /// letter.
    ///
    /// # Errors
    /// [`DeadLetterError`] says why nothing was re-driven.
    pub async fn redrive(&self, seq: u64) -> Result<Redriven, DeadLetterError> {
        let Some(stream) = self.stream().await? else {
            return Err(DeadLetterError::NotFound(seq));
        };
        let message = match stream.get_raw_message(seq).await {
            Ok(message) => message,
            Err(err) if is_missing(&err) => return Err(DeadLetterError::NotFound(seq)),
            Err(err) => return Err(unavailable(err)),
        };
        let subject = header(&message.headers, ORIGINAL_SUBJECT_HEADER)
            .filter(|subject| {
                let prefix = FEEDBACK_SUBJECTS.trim_end_matches('>');
                subject.starts_with(prefix) && subject.len() > prefix.len()
            })
            .ok_or(DeadLetterError::NoSubject(seq))?;
        let headers = publishers_headers(&message.headers);
        let ack = self
            .js
            .send_publish(
                subject.clone(),
                PublishMessage::build()
                    .payload(message.payload.clone())
                    .headers(headers),
            )
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        stream.delete_message(seq).await.map_err(unavailable)?;
        tracing::info!(seq, %subject, "dead letter re-driven");
        Ok(Redriven {
            seq,
            subject,
            feedback_sequence: ack.sequence,
        })
    }
}

fn describe(message: &jetstream::message::StreamMessage) -> DeadLetter {
    let (payload, payload_base64) = match std::str::from_utf8(&message.payload) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&message.payload)),
        ),
    };
    DeadLetter {
        seq: message.sequence,
        dead_lettered_at: jiff::Timestamp::from_nanosecond(message.time.unix_timestamp_nanos())
            .map(|time| time.to_string())
            .unwrap_or_default(),
        error: header(&message.headers, ERROR_HEADER).unwrap_or_default(),
        detail: header(&message.headers, DETAIL_HEADER).unwrap_or_default(),
        original_subject: header(&message.headers, ORIGINAL_SUBJECT_HEADER),
        original_sequence: header(&message.headers, ORIGINAL_SEQUENCE_HEADER)
            .and_then(|seq| seq.parse().ok()),
        payload,
        payload_base64,
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|value| value.as_str().to_owned())
}

/// Whether a message lookup failed because there is no such message.
fn is_missing(err: &RawMessageError) -> bool {
    matches!(err.kind(), RawMessageErrorKind::NoMessageFound)
}

fn unavailable(err: impl std::fmt::Display) -> DeadLetterError {
    DeadLetterError::Unavailable(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_headers_and_jetstreams_are_not_copied() {
        assert!(is_ours("Nats-Msg-Id"));
        assert!(is_ours("closeloop-error"));
        assert!(!is_ours("ce-id"));
        assert!(!is_ours("Content-Type"));
    }

    #[test]
    fn details_become_one_short_line() {
        assert_eq!(one_line("a\r\nb\tc"), "a  b c");
        let long = one_line(&"é".repeat(1000));
        assert_eq!(long.chars().count(), DETAIL_MAX_LEN);
        assert!(long.ends_with("..."));
    }
}
