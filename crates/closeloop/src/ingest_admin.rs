//! The NATS side as the HTTP API's [`IngestAdmin`]: its status for `/readyz` and its dead
//! letters, translated into the API's own types. It lives here, in the binary that wires the
//! two, so that neither adapter crate depends on the other.

use closeloop_api::ingest::{
    self as api, DeadLetterError as ApiDeadLetterError, IngestAdmin, IngestStatus,
};
use closeloop_ingest::{Connection, DeadLetter, DeadLetterError, NatsHandle, Redriven, Worker};
use futures::FutureExt;
use futures::future::BoxFuture;

/// [`NatsHandle`] seen through [`IngestAdmin`].
#[derive(Debug, Clone)]
pub struct NatsAdmin(pub NatsHandle);

impl IngestAdmin for NatsAdmin {
    fn status(&self, head: u64) -> IngestStatus {
        let status = self.0.status(head);
        // Both texts are plain phrases (the NATS side keeps the client's and server's own
        // error text for its log), so they may be shown on the public `/readyz`.
        IngestStatus {
            connection: connection(status.connection),
            ingest: worker(status.ingest),
            ingest_paused: status.ingest_paused,
            feed: worker(status.feed),
            feed_published_upto: status.feed_published_upto,
            feed_lag: status.feed_lag,
            last_error: status.last_error,
            feed_lease: status.feed_lease.map(|lease| api::FeedLease {
                replica: lease.replica,
                leader: lease.leader,
                holder: lease.holder,
            }),
        }
    }

    fn dead_letters(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<api::DeadLetter>, ApiDeadLetterError>> {
        async move {
            let letters = self.0.dead_letters().list(after, limit).await;
            letters
                .map(|letters| letters.into_iter().map(dead_letter).collect())
                .map_err(error)
        }
        .boxed()
    }

    fn redrive(&self, seq: u64) -> BoxFuture<'_, Result<api::Redriven, ApiDeadLetterError>> {
        async move {
            self.0
                .dead_letters()
                .redrive(seq)
                .await
                .map(redriven)
                .map_err(error)
        }
        .boxed()
    }
}

fn connection(connection: Connection) -> api::Connection {
    match connection {
        Connection::Connecting => api::Connection::Connecting,
        Connection::Connected => api::Connection::Connected,
        Connection::Disconnected => api::Connection::Disconnected,
    }
}

fn worker(worker: Worker) -> api::Worker {
    match worker {
        Worker::Starting => api::Worker::Starting,
        Worker::Running => api::Worker::Running,
        Worker::Stopped => api::Worker::Stopped,
        Worker::Paused => api::Worker::Paused,
    }
}

fn dead_letter(letter: DeadLetter) -> api::DeadLetter {
    api::DeadLetter {
        seq: letter.seq,
        dead_lettered_at: letter.dead_lettered_at,
        error: letter.error,
        detail: letter.detail,
        original_subject: letter.original_subject,
        original_sequence: letter.original_sequence,
        payload: letter.payload,
        payload_base64: letter.payload_base64,
        truncated: letter.truncated,
        original_size: letter.original_size,
        original_sha256: letter.original_sha256,
    }
}

fn redriven(redriven: Redriven) -> api::Redriven {
    api::Redriven {
        seq: redriven.seq,
        subject: redriven.subject,
        feedback_sequence: redriven.feedback_sequence,
    }
}

fn error(err: DeadLetterError) -> ApiDeadLetterError {
    match err {
        DeadLetterError::NotFound(seq) => ApiDeadLetterError::NotFound(seq),
        DeadLetterError::NoSubject(seq) => ApiDeadLetterError::NoSubject(seq),
        DeadLetterError::Truncated(seq) => ApiDeadLetterError::Truncated(seq),
        DeadLetterError::Unavailable(detail) => ApiDeadLetterError::Unavailable(detail),
    }
}
