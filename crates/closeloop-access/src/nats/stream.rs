//! The JetStream stream a [`NatsAccessLog`](super::NatsAccessLog) is kept in, and how it is
//! created or brought in line with the configured retention.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};

use super::unavailable;
use crate::{AccessLogError, Retention};

/// What the stream must look like; the rest is left to the operator.
#[derive(Debug, Clone)]
pub(crate) struct Wanted<'a> {
    pub(crate) name: &'a str,
    pub(crate) subject: &'a str,
    pub(crate) replicas: usize,
    pub(crate) retention: Retention,
}

/// The stream's `max_age`: the retention and one more day. JetStream ages messages by when
/// they were stored, which can be a little before an entry's (stamped) time; the extra day
/// keeps every entry at least the retention (the trait allows up to a day more), and
/// [`prune`](crate::AccessLog::prune) removes messages as soon as all their entries are past
/// it.
pub(crate) fn max_age(retention: Retention) -> Duration {
    Duration::from_secs((u64::from(retention.as_days()) + 1) * 24 * 60 * 60)
}

/// The stream `wanted.name`, created with file storage, limits retention and
/// [`max_age`] when missing. An existing one keeps its settings (replicas, limits an operator
/// tuned) except `max_age`, which is set to the configured retention's on every open so that
/// the retention always holds; it must take `wanted.subject`.
pub(crate) async fn ensure(
    js: &Context,
    wanted: &Wanted<'_>,
) -> Result<stream::Stream, AccessLogError> {
    let max_age = max_age(wanted.retention);
    let created = js
        .get_or_create_stream(stream::Config {
            name: wanted.name.to_owned(),
            subjects: vec![wanted.subject.to_owned()],
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            num_replicas: wanted.replicas,
            max_age,
            description: Some(
                "Closeloop's access log: who read personal data, as JSON lines".to_owned(),
            ),
            ..stream::Config::default()
        })
        .await
        .map_err(|err| {
            unavailable(format!(
                "cannot create or open the stream {} (replicas {}): {err}; check that NATS runs \
                 with JetStream enabled and has room for it",
                wanted.name, wanted.replicas
            ))
        })?;
    let config = created.cached_info().config.clone();
    if !config
        .subjects
        .iter()
        .any(|subject| subject == wanted.subject)
    {
        return Err(unavailable(format!(
            "the stream {} exists but does not take the subject {} (it takes {:?}); \
             give the access log another stream name or subject",
            wanted.name, wanted.subject, config.subjects
        )));
    }
    if config.max_age == max_age {
        return Ok(created);
    }
    tracing::info!(
        stream = wanted.name,
        from = ?config.max_age,
        to = ?max_age,
        "setting the access log stream's max_age to the configured retention"
    );
    js.update_stream(stream::Config {
        max_age,
        duplicate_window: config.duplicate_window.min(max_age),
        ..config
    })
    .await
    .map_err(|err| {
        unavailable(format!(
            "cannot set the max_age of the stream {} to the retention: {err}",
            wanted.name
        ))
    })?;
    js.get_stream(wanted.name)
        .await
        .map_err(|err| unavailable(format!("cannot open the stream {}: {err}", wanted.name)))
}
