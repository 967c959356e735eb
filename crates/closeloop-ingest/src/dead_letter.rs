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
//! | `Nats-Msg-Id` | `FEEDBACK-<sequence>-<publish time>` (nanoseconds since 1970), so a redelivery dead-letters it only once, while a message of a recreated `FEEDBACK` that reuses the sequence is not mistaken for it |
//!
//! The original's own headers (binary-mode `ce-` attributes, for instance) are kept too, except
//! `Nats-*` headers.
//!
//! A message near the server's `max_payload` cannot be dead-lettered whole: the headers above
//! push it over the limit. Such a dead letter is *truncated* — its payload cut to fit — and
//! carries three more headers, so that it is still kept, listed and acknowledged instead of
//! being delivered again for ever:
//!
//! | header | value |
//! |---|---|
//! | `Closeloop-Truncated` | `true` |
//! | `Closeloop-Original-Size` | the original payload's size in bytes |
//! | `Closeloop-Original-Sha256` | the original payload's SHA-256, lowercase hex |
//!
//! If even the publisher's headers leave no room, they are left out too. A truncated dead
//! letter cannot be re-driven (the original is gone); the publisher sends it again instead.

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{RawMessageError, RawMessageErrorKind};
use async_nats::jetstream::{self, Context};
use base64::Engine as _;
use serde::Serialize;

use closeloop_store::Hash;

use crate::cloudevent::DETAIL_MAX_LEN;
use crate::feed::wire_size;
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
/// The header set to `true` on a dead letter whose payload was cut to fit the server's
/// `max_payload`.
pub const TRUNCATED_HEADER: &str = "Closeloop-Truncated";
/// The header with the original payload's size in bytes, on a truncated dead letter.
pub const ORIGINAL_SIZE_HEADER: &str = "Closeloop-Original-Size";
/// The header with the original payload's SHA-256 (lowercase hex), on a truncated dead
/// letter.
pub const ORIGINAL_SHA256_HEADER: &str = "Closeloop-Original-Sha256";

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The `Closeloop-Error` code.
    pub code: String,
    /// The `Closeloop-Error-Detail` sentence.
    pub detail: String,
}

/// Publishes `message` to the dead-letter stream with `reason` and waits for JetStream to
/// store it, truncated when it would not fit whole. The caller acks the original afterwards.
pub(crate) async fn publish(
    js: &Context,
    message: &jetstream::Message,
    reason: &Reason,
) -> Result<(), async_nats::Error> {
    let origin = Origin {
        subject: message.subject.as_str(),
        headers: message.headers.as_ref(),
        delivery: message.info().ok().map(|info| Delivery {
            sequence: info.stream_sequence,
            delivered: info.delivered,
            published: info.published.unix_timestamp_nanos(),
        }),
    };
    send(js, &origin, &message.payload, reason).await
}

/// Publishes a message read from `FEEDBACK` (not delivered by the consumer, so
/// `Closeloop-Delivered` is 0) to the dead-letter stream with `reason`, as [`publish`] does.
pub(crate) async fn publish_stored(
    js: &Context,
    message: &jetstream::message::StreamMessage,
    reason: &Reason,
) -> Result<(), async_nats::Error> {
    let origin = Origin {
        subject: message.subject.as_str(),
        headers: Some(&message.headers),
        delivery: Some(Delivery {
            sequence: message.sequence,
            delivered: 0,
            published: message.time.unix_timestamp_nanos(),
        }),
    };
    send(js, &origin, &message.payload, reason).await
}

async fn send(
    js: &Context,
    origin: &Origin<'_>,
    payload: &[u8],
    reason: &Reason,
) -> Result<(), async_nats::Error> {
    let (headers, kept) = compose(origin, payload, reason, js.client().max_payload());
    if headers.get(TRUNCATED_HEADER).is_some() {
        tracing::warn!(
            subject = %origin.subject,
            size = payload.len(),
            kept = kept.len(),
            "a dead letter is too big for the NATS server's max_payload; keeping it truncated"
        );
    }
    js.send_publish(
        DLQ_SUBJECT,
        PublishMessage::build()
            .payload(kept.into())
            .headers(headers),
    )
    .await?
    .await?;
    Ok(())
}

/// Where a message to dead-letter came from.
struct Origin<'a> {
    /// The subject it was published on.
    subject: &'a str,
    /// Its headers, if any.
    headers: Option<&'a HeaderMap>,
    /// How JetStream delivered it, when known.
    delivery: Option<Delivery>,
}

/// How JetStream delivered a message to dead-letter.
struct Delivery {
    /// Its sequence in `FEEDBACK`.
    sequence: u64,
    /// How many times it was delivered.
    delivered: i64,
    /// When JetStream stored it, in nanoseconds since 1970.
    published: i128,
}

/// The dead letter's headers and payload: the original whole when that fits in
/// `max_payload`, else truncated (see the module docs).
fn compose(
    origin: &Origin<'_>,
    payload: &[u8],
    reason: &Reason,
    max_payload: usize,
) -> (HeaderMap, Vec<u8>) {
    let ours = |keep_publishers: bool| {
        let mut headers = if keep_publishers {
            origin.headers.map(publishers_headers).unwrap_or_default()
        } else {
            HeaderMap::new()
        };
        headers.insert(ERROR_HEADER, reason.code.as_str());
        headers.insert(DETAIL_HEADER, one_line(&reason.detail).as_str());
        headers.insert(ORIGINAL_SUBJECT_HEADER, origin.subject);
        if let Some(delivery) = &origin.delivery {
            headers.insert(
                ORIGINAL_SEQUENCE_HEADER,
                delivery.sequence.to_string().as_str(),
            );
            headers.insert(DELIVERED_HEADER, delivery.delivered.to_string().as_str());
            // The same message dead-lettered twice (a lost ack) is stored once. The publish
            // time tells apart two messages with one sequence: a `FEEDBACK` recreated by the
            // migration to work-queue retention numbers its messages from 1 again.
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!(
                    "{}-{}-{}",
                    streams::FEEDBACK_STREAM,
                    delivery.sequence,
                    delivery.published
                )
                .as_str(),
            );
        }
        headers
    };
    let headers = ours(true);
    if wire_size(&headers, payload.len()) <= max_payload {
        return (headers, payload.to_vec());
    }
    let truncated = |mut headers: HeaderMap| {
        headers.insert(TRUNCATED_HEADER, "true");
        headers.insert(ORIGINAL_SIZE_HEADER, payload.len().to_string().as_str());
        headers.insert(ORIGINAL_SHA256_HEADER, Hash::of(payload).to_hex().as_str());
        headers
    };
    let mut headers = truncated(headers);
    if wire_size(&headers, 0) > max_payload {
        // The publisher's headers alone fill the message: keep ours, which say what it was.
        headers = truncated(ours(false));
    }
    let room = max_payload.saturating_sub(wire_size(&headers, 0));
    (headers, payload[..room.min(payload.len())].to_vec())
}

/// The publisher's own headers of `original` (binary-mode `ce-` attributes, for instance):
/// all but JetStream's and ours.
pub(crate) fn publishers_headers(original: &HeaderMap) -> HeaderMap {
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
    /// Whether the payload was cut to fit the server's `max_payload`: then `payload` (or
    /// `payload_base64`) holds its beginning only, and the letter cannot be re-driven.
    pub truncated: bool,
    /// The original payload's size in bytes, when truncated.
    pub original_size: Option<u64>,
    /// The original payload's SHA-256 (lowercase hex), when truncated.
    pub original_sha256: Option<String>,
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
    /// The dead letter was truncated to fit the server's `max_payload`: the original is gone,
    /// so it cannot be sent again from here.
    #[error(
        "dead letter {0} was truncated to fit the NATS server's max_payload, so the original is not kept and cannot be re-driven; ask its publisher to send it again (smaller), then delete the dead letter"
    )]
    Truncated(u64),
    /// NATS could not be reached or refused the request. The field holds the client's error
    /// for the log; the message shown to callers never includes it.
    #[error("NATS is unavailable; try again once GET /readyz reports it connected")]
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
        streams::existing(&self.js, streams::DLQ_STREAM)
            .await
            .map_err(unavailable)
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
        if message.headers.get(TRUNCATED_HEADER).is_some() {
            return Err(DeadLetterError::Truncated(seq));
        }
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
    let truncated = header(&message.headers, TRUNCATED_HEADER).is_some_and(|value| value == "true");
    let (payload, payload_base64) = match std::str::from_utf8(&message.payload) {
        Ok(text) => (Some(text.to_owned()), None),
        // Cutting a truncated payload may split its last character: the text before it is
        // still text.
        Err(err) if truncated && err.error_len().is_none() => (
            Some(String::from_utf8_lossy(&message.payload[..err.valid_up_to()]).into_owned()),
            None,
        ),
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
        truncated,
        original_size: header(&message.headers, ORIGINAL_SIZE_HEADER)
            .and_then(|size| size.parse().ok()),
        original_sha256: header(&message.headers, ORIGINAL_SHA256_HEADER),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|value| value.as_str().to_owned())
}

/// Whether a message lookup failed because there is no such message.
fn is_missing(err: &RawMessageError) -> bool {
    matches!(err.kind(), RawMessageErrorKind::NoMessageFound)
}

/// NATS failed: the log gets its error, callers a plain sentence.
fn unavailable(err: impl std::fmt::Display) -> DeadLetterError {
    tracing::warn!(%err, "cannot reach the dead letters in NATS");
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

    fn reason() -> Reason {
        Reason {
            code: "invalid_json".to_owned(),
            detail: "the message is not JSON: expected value at line 1 column 1".to_owned(),
        }
    }

    fn publishers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("ce-id", "fb-1");
        headers.insert("Nats-Msg-Id", "theirs");
        headers
    }

    fn origin(headers: &HeaderMap) -> Origin<'_> {
        Origin {
            subject: "feedback.fft",
            headers: Some(headers),
            delivery: Some(Delivery {
                sequence: 42,
                delivered: 1,
                published: 1_764_000_000_000_000_000,
            }),
        }
    }

    fn value(headers: &HeaderMap, name: &str) -> Option<String> {
        headers.get(name).map(|value| value.as_str().to_owned())
    }

    #[test]
    fn a_dead_letter_that_fits_keeps_the_original_whole() {
        let publishers = publishers();
        let (headers, payload) = compose(&origin(&publishers), b"{not json", &reason(), 65_536);
        assert_eq!(payload, b"{not json");
        assert_eq!(value(&headers, TRUNCATED_HEADER), None);
        assert_eq!(value(&headers, "ce-id").as_deref(), Some("fb-1"));
        assert_eq!(
            value(&headers, "Nats-Msg-Id").as_deref(),
            Some("FEEDBACK-42-1764000000000000000")
        );
        assert_eq!(
            value(&headers, ERROR_HEADER).as_deref(),
            Some("invalid_json")
        );
    }

    #[test]
    fn a_dead_letter_too_big_to_publish_is_truncated_to_fit_with_its_size_and_digest() {
        let max_payload = 65_536;
        let original = vec![b'x'; max_payload - 100];
        let publishers = publishers();
        let (headers, payload) = compose(&origin(&publishers), &original, &reason(), max_payload);
        assert_eq!(
            wire_size(&headers, payload.len()),
            max_payload,
            "as much as fits"
        );
        assert!(original.starts_with(&payload));
        assert_eq!(value(&headers, TRUNCATED_HEADER).as_deref(), Some("true"));
        assert_eq!(
            value(&headers, ORIGINAL_SIZE_HEADER),
            Some(original.len().to_string())
        );
        assert_eq!(
            value(&headers, ORIGINAL_SHA256_HEADER),
            Some(Hash::of(&original).to_hex())
        );
        assert_eq!(value(&headers, "ce-id").as_deref(), Some("fb-1"));
        assert_eq!(
            value(&headers, "Nats-Msg-Id").as_deref(),
            Some("FEEDBACK-42-1764000000000000000")
        );
    }

    #[test]
    fn publishers_headers_that_leave_no_room_are_dropped_and_ours_kept() {
        let max_payload = 4_096;
        let mut publishers = publishers();
        publishers.insert("ce-huge", "h".repeat(max_payload).as_str());
        let (headers, payload) = compose(&origin(&publishers), b"{}", &reason(), max_payload);
        assert!(wire_size(&headers, payload.len()) <= max_payload);
        assert_eq!(value(&headers, "ce-huge"), None);
        assert_eq!(value(&headers, TRUNCATED_HEADER).as_deref(), Some("true"));
        assert_eq!(
            value(&headers, ERROR_HEADER).as_deref(),
            Some("invalid_json")
        );
        assert_eq!(payload, b"{}", "the payload itself still fits");
    }

    #[test]
    fn an_unavailable_nats_is_told_without_the_clients_error_text() {
        let err = unavailable("connection refused (os error 111)");
        assert!(!err.to_string().contains("os error"), "{err}");
        assert!(matches!(err, DeadLetterError::Unavailable(detail) if detail.contains("os error")));
    }

    #[test]
    fn details_become_one_short_line() {
        assert_eq!(one_line("a\r\nb\tc"), "a  b c");
        let long = one_line(&"é".repeat(1000));
        assert_eq!(long.chars().count(), DETAIL_MAX_LEN);
        assert!(long.ends_with("..."));
    }
}
