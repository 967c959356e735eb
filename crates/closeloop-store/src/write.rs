//! The one write path: read a loop, decide, append with the version read.
//!
//! Every entrance (the HTTP API, NATS ingestion) turns its request into domain
//! [`Command`]s and calls [`record`] or [`record_many`]. They:
//!
//! 1. recognise a repeated idempotency key (`source`, `event_id`) and return the original;
//! 2. read the loop's events and fold them into its [`LoopState`];
//! 3. check the caller's expected version (HTTP `If-Match`), if any;
//! 4. [`decide`] — the rules of the contract — and append the events expecting exactly the
//!    version read, so a concurrent write in between is noticed;
//! 5. on such a race, with no expected version from the caller, read and decide again.

use closeloop_domain::{Command, Event, LoopEvent, LoopId, LoopState, Rejection, decide};

use crate::{
    AppendError, AppendRequest, Committed, EventStore, ExpectedVersion, LoopAppend, RequestDigest,
    StoreError,
};

/// How many times a command is decided again after losing a race to another writer. Each
/// round lets at least one of the racing writers through (the store takes appends one at a
/// time), so `n` writers racing on one loop need up to `n` rounds: this bounds how many
/// concurrent writers one loop can take before some hear 409 "try again".
const RACE_RETRIES: usize = 64;

/// Who says so: the idempotency key of the event a command records, and the request it is
/// bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The publisher, e.g. `urn:trust:rxx:fft-kiosk` or `urn:closeloop:api`.
    pub source: String,
    /// The event's id within its source.
    pub event_id: String,
    /// The request the key stands for (HTTP: credential, method, path and body; NATS: type,
    /// subject and data). The key sent again with another request is refused as
    /// [`WriteError::KeyReused`]; `None` binds nothing (any repeat is a repeat).
    pub request: Option<RequestDigest>,
    /// Who is acting, as authenticated: the HTTP credential's name (or a short digest of its
    /// token), or the NATS publisher's `source`. Stored in every event (see [`Event::actor`]).
    pub actor: Option<String>,
}

impl Origin {
    /// Whether `original`, stored under this origin's key, was stored for another request.
    fn conflicts_with(&self, original: &Committed) -> bool {
        RequestDigest::conflict(original.request, self.request)
    }
}

/// What a successful command stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The loop.
    pub loop_id: LoopId,
    /// The loop's version after the event.
    pub version: u64,
    /// The event's global position.
    pub position: u64,
    /// `true` when the idempotency key was already used: nothing new was stored, and this
    /// describes the original.
    pub duplicate: bool,
}

/// Why a command was not recorded. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A rule of the contract refused it (HTTP 404 for `unknown_loop`, 422 otherwise).
    #[error("{rejection}")]
    Rejected {
        /// The loop the rule was about.
        loop_id: LoopId,
        /// Which rule.
        rejection: Rejection,
    },
    /// The caller expected another version of the loop (HTTP 409 `version_conflict`): read the
    /// loop again and decide again.
    #[error(
        "loop {loop_id} is at version {actual}, but the request expected version {expected}; read it again"
    )]
    VersionConflict {
        /// The loop.
        loop_id: LoopId,
        /// What the caller expected.
        expected: u64,
        /// Where the loop is.
        actual: u64,
    },
    /// Too many concurrent writers kept changing the loop (HTTP 409); try again.
    #[error("loop {0} kept changing while this request was decided; try again")]
    Contended(LoopId),
    /// The request reused an idempotency key for something else (HTTP 422).
    #[error("{0}")]
    KeyReused(String),
    /// The store failed (HTTP 503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records one command: see the [module docs](self).
///
/// # Errors
/// [`WriteError`] says why nothing was stored.
#[tracing::instrument(
    name = "record",
    skip_all,
    fields(
        loop_id = %command.loop_id,
        event_type = command.payload.event_type().suffix(),
        position = tracing::field::Empty,
        duplicate = tracing::field::Empty,
    )
)]
pub async fn record<S: EventStore>(
    store: &S,
    command: Command,
    origin: Origin,
    expected: Option<u64>,
) -> Result<Recorded, WriteError> {
    let results = record_many(store, vec![(command, expected)], &[origin]).await?;
    let recorded = results.into_iter().next().expect("one command, one result");
    let span = tracing::Span::current();
    span.record("position", recorded.position);
    span.record("duplicate", recorded.duplicate);
    Ok(recorded)
}

/// Records several commands, each for a different loop, atomically: all are stored or none
/// (`POST /v1/changes`). `origins[i]` is the idempotency key of `commands[i]`'s event.
///
/// # Errors
/// [`WriteError`] for the first command that cannot be recorded; then nothing is stored.
///
/// # Panics
/// When `commands` and `origins` differ in length (a caller bug).
#[tracing::instrument(
    name = "record_many",
    skip_all,
    fields(
        loops = commands.len(),
        event_type = commands.first().map(|(command, _)| command.payload.event_type().suffix()),
        last_position = tracing::field::Empty,
    )
)]
pub async fn record_many<S: EventStore>(
    store: &S,
    commands: Vec<(Command, Option<u64>)>,
    origins: &[Origin],
) -> Result<Vec<Recorded>, WriteError> {
    assert_eq!(commands.len(), origins.len(), "one origin per command");
    if let Some(originals) = originals(store, origins).await? {
        return Ok(originals);
    }
    for _ in 0..RACE_RETRIES {
        let mut loops = Vec::with_capacity(commands.len());
        for ((command, expected), origin) in commands.iter().zip(origins) {
            let state = current_state(store, &command.loop_id).await?;
            let version = state.as_ref().map_or(0, |s| s.version);
            if let Some(expected) = *expected
                && expected != version
            {
                return Err(WriteError::VersionConflict {
                    loop_id: command.loop_id.clone(),
                    expected,
                    actual: version,
                });
            }
            let payloads = decide(state.as_ref(), command.clone()).map_err(|rejection| {
                WriteError::Rejected {
                    loop_id: command.loop_id.clone(),
                    rejection,
                }
            })?;
            let events = events_of(origin, command, payloads);
            loops.push(LoopAppend {
                loop_id: command.loop_id.clone(),
                expected: if version == 0 {
                    ExpectedVersion::NoLoop
                } else {
                    ExpectedVersion::Exactly(version)
                },
                requests: vec![origin.request; events.len()],
                events,
            });
        }
        let loop_of_event: Vec<LoopId> = loops
            .iter()
            .flat_map(|append| append.events.iter().map(|_| append.loop_id.clone()))
            .collect();
        match store.append(AppendRequest { loops }).await {
            Ok(outcome) => {
                if let Some(last) = outcome.committed.last() {
                    tracing::Span::current().record("last_position", last.position);
                }
                // One event per command: the committed list lines up with the commands.
                return Ok(outcome
                    .committed
                    .into_iter()
                    .map(|committed| recorded(committed, outcome.duplicate))
                    .collect());
            }
            Err(AppendError::Conflict {
                loop_id, actual, ..
            }) => {
                let caller_expected = commands
                    .iter()
                    .find(|(command, _)| command.loop_id == loop_id)
                    .and_then(|(_, expected)| *expected);
                if let Some(expected) = caller_expected {
                    return Err(WriteError::VersionConflict {
                        loop_id,
                        expected,
                        actual,
                    });
                }
                // Someone else wrote to the loop between our read and our append: decide again.
            }
            Err(too_large @ AppendError::TooLarge { event_index, .. }) => {
                return Err(WriteError::Rejected {
                    loop_id: loop_of_event[event_index].clone(),
                    rejection: Rejection::invalid(too_large.to_string()),
                });
            }
            Err(AppendError::IdempotencyMismatch { .. } | AppendError::Invalid(_))
                if origins.len() > 1 =>
            {
                return Err(WriteError::KeyReused(
                    "some of these idempotency keys were already used for other events".to_owned(),
                ));
            }
            Err(AppendError::IdempotencyMismatch { .. }) => {
                // A concurrent duplicate won the race: report the original.
                if let Some(originals) = originals(store, origins).await? {
                    return Ok(originals);
                }
            }
            Err(AppendError::Invalid(detail)) => return Err(WriteError::KeyReused(detail)),
            Err(AppendError::Store(err)) => return Err(err.into()),
        }
    }
    Err(WriteError::Contended(commands[0].0.loop_id.clone()))
}

/// Records several commands for one loop, in the order given, as one atomic append.
///
/// Each command is decided against the state the commands before it leave, exactly as if
/// they were recorded one by one; but the accepted events go to the store together, so a
/// whole run of one loop's commands costs one durable write instead of one each (NATS
/// ingestion records a batch this way). Each command gets its own result: a rule that refuses
/// one does not stop the others, and a command whose idempotency key was used before — in
/// the store or earlier in `commands` — gets the original as a duplicate.
///
/// # Errors
/// [`StoreError`] when the store fails; then nothing of `commands` was stored.
///
/// # Panics
/// When a command is for another loop than `loop_id` (a caller bug).
#[tracing::instrument(
    name = "record_in_order",
    skip_all,
    fields(
        loop_id = %loop_id,
        commands = commands.len(),
        last_position = tracing::field::Empty,
    )
)]
pub async fn record_in_order<S: EventStore>(
    store: &S,
    loop_id: &LoopId,
    commands: Vec<(Command, Origin)>,
) -> Result<Vec<Result<Recorded, WriteError>>, StoreError> {
    assert!(
        commands
            .iter()
            .all(|(command, _)| &command.loop_id == loop_id),
        "every command must be for loop {loop_id}"
    );
    // Commands whose event the store refused as too large, with the store's reason: they are
    // refused as invalid data, and the rest are decided again without them.
    let mut too_large: Vec<(usize, String)> = Vec::new();
    for _ in 0..RACE_RETRIES {
        // What each command is: a repeat of a stored key, a repeat of a key earlier in this
        // call, or one to decide.
        let mut plan = Vec::with_capacity(commands.len());
        for (n, (_, origin)) in commands.iter().enumerate() {
            // The earlier command that holds the key in this call: not one refused for reusing
            // it, which holds nothing (a redelivery after a reuse is still a repeat of the
            // stored original, not of the reuse).
            let earlier = commands[..n]
                .iter()
                .zip(&plan)
                .position(|((_, o), planned)| {
                    o.source == origin.source
                        && o.event_id == origin.event_id
                        && !matches!(planned, Planned::Done(Err(WriteError::KeyReused(_))))
                });
            let refused = too_large.iter().find(|(at, _)| *at == n);
            plan.push(match (earlier, refused) {
                (Some(first), _)
                    if RequestDigest::conflict(commands[first].1.request, origin.request) =>
                {
                    Planned::Done(Err(key_reused(origin)))
                }
                (Some(first), _) => Planned::RepeatOf(first),
                (None, Some((_, reason))) => Planned::Done(Err(WriteError::Rejected {
                    loop_id: loop_id.clone(),
                    rejection: Rejection::invalid(reason.clone()),
                })),
                (None, None) => match store.lookup(&origin.source, &origin.event_id).await? {
                    Some(original) if origin.conflicts_with(&original) => {
                        Planned::Done(Err(key_reused(origin)))
                    }
                    Some(original) => Planned::Done(Ok(recorded(original, true))),
                    None => Planned::Decide,
                },
            });
        }

        let mut state = current_state(store, loop_id).await?;
        let version = state.as_ref().map_or(0, |s| s.version);
        let mut events = Vec::new();
        let mut requests = Vec::new();
        // The command each event of `events` comes from.
        let mut owners = Vec::new();
        for (n, ((command, origin), planned)) in commands.iter().zip(&mut plan).enumerate() {
            if !matches!(planned, Planned::Decide) {
                continue;
            }
            match decide(state.as_ref(), command.clone()) {
                Ok(payloads) => {
                    let first = events.len();
                    for event in events_of(origin, command, payloads) {
                        state = closeloop_domain::apply(state, &event);
                        events.push(event);
                        requests.push(origin.request);
                        owners.push(n);
                    }
                    *planned = Planned::Appended(first);
                }
                Err(rejection) => {
                    *planned = Planned::Done(Err(WriteError::Rejected {
                        loop_id: loop_id.clone(),
                        rejection,
                    }));
                }
            }
        }
        if events.is_empty() {
            return Ok(resolve(plan, &[]));
        }
        let expected = if version == 0 {
            ExpectedVersion::NoLoop
        } else {
            ExpectedVersion::Exactly(version)
        };
        let request = AppendRequest {
            loops: vec![LoopAppend {
                loop_id: loop_id.clone(),
                expected,
                events,
                requests,
            }],
        };
        match store.append(request).await {
            Ok(outcome) => {
                if let Some(last) = outcome.committed.last() {
                    tracing::Span::current().record("last_position", last.position);
                }
                return Ok(resolve(plan, &outcome.committed));
            }
            // Another writer got in between (a write to the loop, or one of our keys): look
            // again and decide again.
            Err(AppendError::Conflict { .. } | AppendError::IdempotencyMismatch { .. }) => {}
            Err(err @ AppendError::TooLarge { event_index, .. }) => {
                too_large.push((owners[event_index], err.to_string()));
            }
            Err(AppendError::Invalid(detail)) => {
                return Ok(commands
                    .iter()
                    .map(|_| Err(WriteError::KeyReused(detail.clone())))
                    .collect());
            }
            Err(AppendError::Store(err)) => return Err(err),
        }
    }
    Ok(commands
        .iter()
        .map(|_| Err(WriteError::Contended(loop_id.clone())))
        .collect())
}

/// How [`record_in_order`] handles one command.
#[derive(Debug)]
enum Planned {
    /// Settled without appending: a stored duplicate or a refusal.
    Done(Result<Recorded, WriteError>),
    /// Uses the same key as the command at this index.
    RepeatOf(usize),
    /// To be decided.
    Decide,
    /// Its first event is at this index of the append.
    Appended(usize),
}

/// Each command's result once the append (whose entries are `committed`) is done.
fn resolve(plan: Vec<Planned>, committed: &[Committed]) -> Vec<Result<Recorded, WriteError>> {
    let mut results: Vec<Result<Recorded, WriteError>> = Vec::with_capacity(plan.len());
    for planned in plan {
        let result = match planned {
            Planned::Done(result) => result,
            Planned::Appended(first) => Ok(recorded(committed[first].clone(), false)),
            Planned::RepeatOf(first) => match &results[first] {
                Ok(original) => Ok(Recorded {
                    duplicate: true,
                    ..original.clone()
                }),
                Err(err) => Err(repeat_of(err)),
            },
            Planned::Decide => unreachable!("every command is decided before the append"),
        };
        results.push(result);
    }
    results
}

/// The result for a repeat of a command that was not recorded: the same refusal.
fn repeat_of(err: &WriteError) -> WriteError {
    match err {
        WriteError::Rejected { loop_id, rejection } => WriteError::Rejected {
            loop_id: loop_id.clone(),
            rejection: rejection.clone(),
        },
        other => WriteError::KeyReused(format!("a repeat of a request that failed: {other}")),
    }
}

/// The events `payloads` become under `origin`'s key: the first takes the key itself, any
/// further ones `<event_id>#<n>`. A new loop gets its random public id here.
fn events_of(origin: &Origin, command: &Command, payloads: Vec<LoopEvent>) -> Vec<Event> {
    payloads
        .into_iter()
        .enumerate()
        .map(|(n, mut payload)| {
            if let LoopEvent::FeedbackReceived(data) = &mut payload {
                data.public_id = Some(new_public_id());
            }
            Event {
                event_id: if n == 0 {
                    origin.event_id.clone()
                } else {
                    format!("{}#{n}", origin.event_id)
                },
                source: origin.source.clone(),
                time: command.at,
                payload,
                actor: origin.actor.clone(),
            }
        })
        .collect()
}

/// A loop's public id: 128 random bits as 32 lowercase hex digits. Random, not derived from
/// the loop id, so nobody can recompute it from a guessed case number.
fn new_public_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The original outcomes when every key was used before; `None` when none was.
async fn originals<S: EventStore>(
    store: &S,
    origins: &[Origin],
) -> Result<Option<Vec<Recorded>>, WriteError> {
    let mut found = Vec::with_capacity(origins.len());
    for origin in origins {
        let original = store.lookup(&origin.source, &origin.event_id).await?;
        if let Some(original) = &original
            && origin.conflicts_with(original)
        {
            return Err(key_reused(origin));
        }
        found.push(original);
    }
    if found.iter().all(Option::is_none) {
        return Ok(None);
    }
    if found.iter().any(Option::is_none) {
        return Err(WriteError::KeyReused(
            "some of these idempotency keys were already used and some were not; use a new key for a new request"
                .to_owned(),
        ));
    }
    Ok(Some(
        found
            .into_iter()
            .flatten()
            .map(|committed| recorded(committed, true))
            .collect(),
    ))
}

fn key_reused(origin: &Origin) -> WriteError {
    WriteError::KeyReused(format!(
        "the idempotency key {:?} was already used for a different request; send a new key with a new request",
        origin.event_id
    ))
}

fn recorded(committed: Committed, duplicate: bool) -> Recorded {
    Recorded {
        loop_id: committed.loop_id,
        version: committed.version,
        position: committed.position,
        duplicate,
    }
}

/// The loop's state folded from its durable events; `None` when it was never received.
///
/// # Errors
/// When the store cannot be read or holds an event this build cannot decode.
pub async fn current_state<S: EventStore>(
    store: &S,
    loop_id: &LoopId,
) -> Result<Option<LoopState>, StoreError> {
    let entries = store.read_loop(loop_id).await?;
    let mut events = Vec::with_capacity(entries.len());
    for entry in &entries {
        events.push(entry.event().map_err(|err| StoreError::Corrupt {
            position: entry.position,
            detail: err.to_string(),
        })?);
    }
    Ok(LoopState::replay(&events))
}
