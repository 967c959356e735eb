//! Erasing dead letters before they reach their `max_age`.
//!
//! A dead letter holds the original message, personal data included. JetStream removes it at
//! the stream's `max_age`, but a removal by age does not overwrite its bytes: they stay in the
//! stream's block file until every message of that block is gone, which for a quiet
//! dead-letter stream can be months later. So Closeloop deletes each dead letter itself shortly
//! before `max_age`, through JetStream's message-delete API, which overwrites the message's
//! bytes in the block file with random data. JetStream's own expiry stays as the backstop.
//!
//! A sweep runs at start and then every [`sweep_interval`] (an hour with the default 30 days),
//! and erases every dead letter older than `max_age` less two intervals, so each is erased
//! between two and one intervals before its `max_age`.

use std::time::Duration;

use async_nats::jetstream::stream::{DeleteMessageErrorKind, RawMessageErrorKind};
use async_nats::jetstream::{Context, ErrorCode};
use jiff::Timestamp;
use tokio::sync::watch;

use crate::streams::{self, DLQ_STREAM};

/// How often dead letters are swept: a tenth of `max_age`, at most an hour, at least a second.
#[must_use]
pub(crate) fn sweep_interval(max_age: Duration) -> Duration {
    (max_age / 10).clamp(Duration::from_secs(1), Duration::from_secs(60 * 60))
}

/// The age at which a sweep erases a dead letter.
fn erase_age(max_age: Duration) -> Duration {
    max_age.saturating_sub(sweep_interval(max_age) * 2)
}

/// Sweeps until `shutdown` turns true. A failed sweep (NATS away) is tried again within a
/// minute.
pub(crate) async fn run(js: Context, max_age: Duration, mut shutdown: watch::Receiver<bool>) {
    let interval = sweep_interval(max_age);
    while !*shutdown.borrow() {
        let pause = match sweep(&js, erase_age(max_age)).await {
            Ok(0) => interval,
            Ok(erased) => {
                tracing::info!(
                    erased,
                    stream = DLQ_STREAM,
                    "erased dead letters about to reach their max_age"
                );
                metrics::counter!("closeloop_dead_letters_erased_total").increment(erased);
                interval
            }
            Err(err) => {
                tracing::warn!(%err, "cannot erase old dead letters now; trying again shortly");
                interval.min(Duration::from_secs(60))
            }
        };
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Erases every dead letter at least `age` old; returns how many.
///
/// # Errors
/// When NATS cannot be asked; what was erased stays erased.
pub(crate) async fn sweep(js: &Context, age: Duration) -> Result<u64, async_nats::Error> {
    let Some(mut stream) = streams::existing(js, DLQ_STREAM).await? else {
        return Ok(0);
    };
    let state = stream.info().await?.state.clone();
    let cutoff = Timestamp::now().as_nanosecond() - i128::try_from(age.as_nanos())?;
    let mut erased = 0;
    // Dead letters are in the order they were written, so the first young one ends the sweep.
    for seq in state.first_sequence..=state.last_sequence {
        let message = match stream.get_raw_message(seq).await {
            Ok(message) => message,
            Err(err) if matches!(err.kind(), RawMessageErrorKind::NoMessageFound) => continue,
            Err(err) => return Err(err.into()),
        };
        if message.time.unix_timestamp_nanos() > cutoff {
            break;
        }
        // The delete API overwrites the message's bytes unless asked not to.
        match stream.delete_message(seq).await {
            Ok(_) => erased += 1,
            // Re-driven by an admin meanwhile.
            Err(err)
                if matches!(
                    err.kind(),
                    DeleteMessageErrorKind::JetStream(ref js_err)
                        if js_err.error_code() == ErrorCode::NO_MESSAGE_FOUND
                ) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(erased)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    #[test]
    fn thirty_days_are_swept_hourly_and_each_letter_erased_in_its_last_two_hours() {
        assert_eq!(sweep_interval(30 * DAY), Duration::from_secs(3600));
        assert_eq!(erase_age(30 * DAY), 30 * DAY - Duration::from_secs(7200));
    }

    #[test]
    fn short_ages_are_swept_at_a_tenth_of_them_but_not_more_than_once_a_second() {
        assert_eq!(
            sweep_interval(Duration::from_secs(60)),
            Duration::from_secs(6)
        );
        assert_eq!(erase_age(Duration::from_secs(60)), Duration::from_secs(48));
        assert_eq!(
            sweep_interval(Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(erase_age(Duration::from_secs(5)), Duration::from_secs(3));
    }
}
