//! The JetStream calls the store makes, each bounded by the store's timeout, with failures turned
//! into [`KeyError`]s that say what to do.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::stream::{
    Config, DeleteMessageErrorKind, LastRawMessageErrorKind, RetentionPolicy, StorageType, Stream,
};
use async_nats::jetstream::{self, Context};

use super::NatsKeyStoreOptions;
use super::subjects::ALL;
use crate::KeyError;

/// What a fenced publish answered.
#[derive(Debug)]
pub(super) enum Published {
    /// Stored at this stream sequence.
    At(u64),
    /// A fence did not hold: the stream (or the subject) moved on since the writer last looked.
    Conflict,
}

/// The key stream and how to reach it.
#[derive(Debug, Clone)]
pub(super) struct KeyStream {
    context: Context,
    stream: Stream,
    name: String,
    timeout: Duration,
}

impl KeyStream {
    /// Opens the stream named in `options`, creating it when `create` is set and it is missing.
    /// Answers `None` when it is missing and `create` is not set.
    pub(super) async fn open(
        client: async_nats::Client,
        options: &NatsKeyStoreOptions,
        create: bool,
    ) -> Result<Option<Self>, KeyError> {
        let context = jetstream::ContextBuilder::new()
            .timeout(options.timeout)
            .build(client);
        let name = options.stream.clone();
        let what = format!("opening the JetStream stream {name}");
        let stream = if create {
            let config = Config {
                name: name.clone(),
                subjects: vec![ALL.to_owned()],
                storage: StorageType::File,
                num_replicas: options.replicas,
                // The store erases messages one by one; nothing else may remove them.
                deny_purge: true,
                description: Some(
                    "Closeloop's key store: wrapped data keys, contact index and erasures"
                        .to_owned(),
                ),
                ..Config::default()
            };
            let created = within(
                options.timeout,
                &name,
                &what,
                context.get_or_create_stream(config),
            )
            .await?;
            created.map_err(|e| unavailable(&name, &what, e))?
        } else {
            match within(options.timeout, &name, &what, context.get_stream(&name)).await? {
                Ok(stream) => stream,
                Err(error) => match error.kind() {
                    GetStreamErrorKind::JetStream(e)
                        if e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                    {
                        return Ok(None);
                    }
                    _ => return Err(unavailable(&name, &what, error)),
                },
            }
        };
        check_config(&name, &stream.cached_info().config, options.replicas)?;
        Ok(Some(KeyStream {
            context,
            stream,
            name,
            timeout: options.timeout,
        }))
    }

    /// The stream's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The stream handle, for the consumer that follows it.
    pub(super) fn stream(&self) -> &Stream {
        &self.stream
    }

    /// How long one call may take.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Publishes `payload` on `subject`, stored only if the stream's last sequence is
    /// `last_in_stream` and, when given, the subject's last sequence is `last_on_subject` (0: no
    /// message on it).
    pub(super) async fn publish(
        &self,
        subject: String,
        payload: Vec<u8>,
        last_in_stream: u64,
        last_on_subject: Option<u64>,
    ) -> Result<Published, KeyError> {
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .expected_last_sequence(last_in_stream);
        if let Some(last) = last_on_subject {
            message = message.expected_last_subject_sequence(last);
        }
        let what = "publishing to the key stream";
        let acked = within(self.timeout, &self.name, what, async {
            self.context.send_publish(subject, message).await?.await
        })
        .await?;
        match acked {
            Ok(ack) => Ok(Published::At(ack.sequence)),
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                Ok(Published::Conflict)
            }
            Err(error) => Err(unavailable(&self.name, what, error)),
        }
    }

    /// Deletes the message at `seq` and has the server overwrite its bytes in the stream's files.
    /// A message already gone (erased by another handle) counts as erased.
    ///
    /// `Stream::delete_message` of async-nats 0.51 sends `{"seq": N}` without `no_erase`, which
    /// the server takes as "erase": it overwrites the message in its block file with random bytes
    /// rather than only marking it deleted. The store's raw-byte test checks this stays so.
    pub(super) async fn erase(&self, seq: u64) -> Result<(), KeyError> {
        let what = "erasing a message of the key stream";
        match within(
            self.timeout,
            &self.name,
            what,
            self.stream.delete_message(seq),
        )
        .await?
        {
            Ok(_) => Ok(()),
            Err(error) => match error.kind() {
                DeleteMessageErrorKind::JetStream(e)
                    if [ErrorCode::NO_MESSAGE_FOUND, ErrorCode::SEQUENCE_NOT_FOUND]
                        .contains(&e.error_code()) =>
                {
                    Ok(())
                }
                _ => Err(unavailable(&self.name, what, error)),
            },
        }
    }

    /// The stream's last sequence and how many messages it holds.
    pub(super) async fn state(&self) -> Result<(u64, u64), KeyError> {
        let what = "reading the key stream's state";
        let info = within(self.timeout, &self.name, what, self.stream.get_info())
            .await?
            .map_err(|e| unavailable(&self.name, what, e))?;
        Ok((info.state.last_sequence, info.state.messages))
    }

    /// The first message at or after `seq`, read from the stream leader (so it reflects every
    /// write acknowledged so far), or `None` when there is none.
    pub(super) async fn next_from(&self, seq: u64) -> Result<Option<StreamMessage>, KeyError> {
        let what = "reading the key stream";
        let read = within(
            self.timeout,
            &self.name,
            what,
            self.stream.get_first_raw_message_by_subject(ALL, seq),
        )
        .await?;
        match read {
            Ok(message) => Ok(Some(message)),
            Err(error) if matches!(error.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                Ok(None)
            }
            Err(error) => match error.kind() {
                LastRawMessageErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::NO_MESSAGE_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(unavailable(&self.name, what, error)),
            },
        }
    }
}

/// Refuses a stream whose configuration would lose keys behind the store's back or keep
/// destroyed ones: limits or a retention policy that removes messages (without erasing them),
/// deletes denied, or subjects other than the store's.
fn check_config(name: &str, config: &Config, replicas: usize) -> Result<(), KeyError> {
    let mut problems = Vec::new();
    if config.subjects != [ALL] {
        problems.push(format!(
            "its subjects are {:?}, not [\"{ALL}\"]",
            config.subjects
        ));
    }
    if config.deny_delete {
        problems.push("it denies deletes, so erasures cannot erase keys".to_owned());
    }
    if config.retention != RetentionPolicy::Limits {
        problems.push("its retention removes messages once consumed".to_owned());
    }
    if config.max_messages > 0
        || config.max_bytes > 0
        || config.max_messages_per_subject > 0
        || !config.max_age.is_zero()
    {
        problems.push(
            "it has limits (messages, bytes, per subject or age) that would drop keys".to_owned(),
        );
    }
    if config.num_replicas != replicas {
        tracing::warn!(
            stream = name,
            configured = replicas,
            actual = config.num_replicas,
            "the key stream exists with another number of replicas than configured; it keeps its own"
        );
    }
    if config.storage != StorageType::File {
        tracing::warn!(
            stream = name,
            "the key stream keeps its messages in memory only: keys do not survive a restart of the NATS servers"
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(misconfigured(name, &problems.join("; ")))
    }
}

/// Runs `call` for at most `timeout`.
pub(super) async fn within<T>(
    timeout: Duration,
    stream: &str,
    what: &str,
    call: impl Future<Output = T>,
) -> Result<T, KeyError> {
    tokio::time::timeout(timeout, call).await.map_err(|_| {
        unavailable(
            stream,
            what,
            format_args!("no answer within {} ms", timeout.as_millis()),
        )
    })
}

/// The error for a NATS call that failed or timed out: the store is unreachable for now.
pub(super) fn unavailable(stream: &str, what: &str, error: impl Display) -> KeyError {
    KeyError::Io {
        path: stream_path(stream),
        source: io::Error::other(format!(
            "{what} failed: {error}; check that the NATS servers are running and reachable with JetStream enabled, then retry"
        )),
    }
}

/// The error for a stream configured so the store cannot keep its promises.
fn misconfigured(stream: &str, detail: &str) -> KeyError {
    KeyError::Io {
        path: stream_path(stream),
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the stream cannot hold keys: {detail}; fix its configuration or give the key store a stream of its own"
            ),
        ),
    }
}

/// What [`KeyError::Io`] names as the place that failed.
pub(super) fn stream_path(stream: &str) -> PathBuf {
    PathBuf::from(format!("NATS JetStream stream {stream}"))
}
