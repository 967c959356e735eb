//! [`NatsHandle`] as the HTTP API's [`IngestAdmin`]: the NATS side's status for `/readyz`
//! and its dead letters, in the API's own types, so that the API crate needs nothing of
//! this one.

use closeloop_api::ingest::{
    self as api, DeadLetterError as ApiDeadLetterError, IngestAdmin, IngestStatus,
};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::{Connection, DeadLetter, DeadLetterError, NatsHandle, Redriven, Worker};

impl IngestAdmin for NatsHandle {
    fn status(&self, head: u64) -> IngestStatus {
        let status = NatsHandle::status(self, head);
        // The last error stays out: `/readyz` is public, and the error is the server's or the
        // client's own text. The workers log it when it happens.
        IngestStatus {
            connection: connection(status.connection),
            ingest: worker(status.ingest),
            feed: worker(status.feed),
            feed_published_upto: status.feed_published_upto,
            feed_lag: status.feed_lag,
        }
    }

    fn dead_letters(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<api::DeadLetter>, ApiDeadLetterError>> {
        async move {
            let letters = self.dead_letters().list(after, limit).await;
            letters
                .map(|letters| letters.into_iter().map(dead_letter).collect())
                .map_err(error)
        }
        .boxed()
    }

    fn redrive(&self, seq: u64) -> BoxFuture<'_, Result<api::Redriven, ApiDeadLetterError>> {
        async move {
            self.dead_letters()
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
        DeadLetterError::Unavailable(detail) => ApiDeadLetterError::Unavailable(detail),
    }
}
