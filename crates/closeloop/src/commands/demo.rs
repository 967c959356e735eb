//! `closeloop demo`: a realistic, reproducible data set, recorded through the real write path.
//!
//! Several thousand loops across three trusts (wards, clinics, emergency departments and
//! community services), every channel, Friends and Family Test ratings that agree with what
//! people wrote, seldom-heard community tags at realistic (low) rates, and stories as patients
//! and carers write them ([`catalogue`] holds them all).
//!
//! What happens to each loop reads true: each story has a theme and fits the kind of place it
//! was told at; the change that closes a loop answers its story (a change of the same theme,
//! made at the same place), and a change is made at a place once, on a day, for every loop
//! waiting for it (one `change_id`, as `POST /v1/changes` would record it); praise is answered with
//! thanks passed on, and the complaints nothing could be done about with an honest no-change.
//! Some stories name staff or relatives, or end with the author's contact details, so the
//! public page's redaction and (with `CLOSELOOP_PUBLISH_REQUIRES_APPROVAL`) its moderation
//! both show; some of those were approved with the names taken out.
//!
//! Loops stand at every stage: fresh ones, acknowledged ones, answered ones, ones waiting for
//! a planned change, closed ones with a change or a no-change, reopened ones (some closed again
//! with a further change, some with a no-change, some still open), and overdue ones. Event ids
//! are derived from the seed, so loading the same set twice stores nothing new.

mod catalogue;

use std::path::Path;
use std::process::ExitCode;
use std::sync::LazyLock;

use anyhow::Context;
use closeloop_domain::{Command, EventType, LoopEvent, LoopId};
use closeloop_store::EventStore;
use closeloop_store::write::{self, Origin, WriteError};
use futures::StreamExt;
use jiff::tz::Offset;
use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use self::catalogue::{
    Change, Community, PLACES, Place, REOPEN_REASONS, STORIES, Setting, Story, THANKS_PASSED_ON,
    Theme, Tone,
};
use super::backends::{self, ClosableStore};
use crate::config::{DemoArgs, MasterKeyArgs, StoreKind};

/// The `source` of every demo event.
const DEMO_SOURCE: &str = "urn:closeloop:demo";
/// How many loops are recorded at once.
const CONCURRENCY: usize = 64;
/// The people who give their name, with their contact: `Name = contact` a line.
const AUTHORS_FILE: &str = include_str!("demo-authors.txt");
/// How often a place makes the changes it has planned for a theme: every loop waiting for
/// one is closed on that day with the same change.
const CHANGE_ROUND: SignedDuration = SignedDuration::from_hours(14 * 24);

/// The named authors of [`AUTHORS_FILE`].
static AUTHORS: LazyLock<Vec<Author>> = LazyLock::new(|| {
    AUTHORS_FILE
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, contact) = line
                .split_once('=')
                .expect("demo-authors.txt: each line is `Name = contact`");
            Author {
                name: name.trim(),
                contact: contact.trim(),
            }
        })
        .collect()
});

/// Someone who gave their name and a way to reach them.
#[derive(Debug, Clone, Copy)]
struct Author {
    name: &'static str,
    contact: &'static str,
}

impl Author {
    fn by_email(self) -> bool {
        self.contact.contains('@')
    }
}

/// Loads the demo data set into the store; returns how many loops it holds afterwards.
pub async fn load(
    store: &impl EventStore,
    loops: usize,
    seed: u64,
    now: Timestamp,
) -> anyhow::Result<usize> {
    let plans: Vec<Vec<(Command, Origin)>> = (0..loops).map(|n| plan_loop(seed, n, now)).collect();
    let mut results = futures::stream::iter(plans)
        .map(|steps| async move {
            for (command, origin) in steps {
                match write::record(store, command, origin, None).await {
                    // The plans obey the rules (the tests check it): a step is refused only
                    // when the set is loaded over one planned at another time, whose loops
                    // exist already.
                    Ok(_) | Err(WriteError::Rejected { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
            Ok(())
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(result) = results.next().await {
        result.context("recording the demo data failed")?;
    }
    Ok(loops)
}

/// `closeloop demo`: loads the data set into the data directory's store, or into the
/// JetStream log (`--store jetstream`).
pub async fn run(
    data_dir: &Path,
    master: &MasterKeyArgs,
    args: &DemoArgs,
) -> anyhow::Result<ExitCode> {
    if let Some(contradiction) = args.backend.contradiction() {
        eprintln!("error: {contradiction}");
        return Ok(ExitCode::from(super::EXIT_CONFIG));
    }
    let master = super::master_key_or_demo(master, true)?.context(super::NO_MASTER_KEY)?;
    match args.backend.store {
        StoreKind::Sled => {
            let keys = super::open_keys(data_dir, Some(&master))?;
            let store = super::open_store(data_dir, Some(keys))?;
            load_and_close(store, args).await
        }
        // The log and the keys only: the access log (and its retention, which opening it
        // would set) is serve's.
        StoreKind::Jetstream => {
            let log = backends::jetstream_log(
                &args.backend.nats_url,
                usize::from(args.backend.nats_replicas),
                &master,
            )
            .await?;
            load_and_close(log.store, args).await
        }
    }
}

async fn load_and_close<S: ClosableStore>(store: S, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let result = load(&store, args.loops, args.seed, Timestamp::now()).await;
    let head = store.head();
    store.close().await;
    let loops = result?;
    eprintln!(
        "demo data: {loops} loops, the log now holds {head} events ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// The steps of demo loop `n`, with times between 120 days ago and now.
fn plan_loop(seed: u64, n: usize, now: Timestamp) -> Vec<(Command, Origin)> {
    let mut rng = StdRng::seed_from_u64(seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let loop_id = LoopId::parse(&format!("demo-{n:06}")).expect("valid demo loop id");
    let age_hours = rng.random_range(1..120 * 24);
    let received_at = now - SignedDuration::from_hours(age_hours);
    let mut plan = Plan {
        seed,
        n,
        loop_id,
        now,
        at: received_at,
        steps: Vec::new(),
    };

    let feedback = Feedback::draw(&mut rng);
    plan.step(
        EventType::FeedbackReceived,
        feedback.data(&mut rng, received_at),
    );

    // How far the loop has come grows with its age, so old loops are mostly closed and a few
    // are left overdue.
    let progress = (age_hours as f64 / (30.0 * 24.0)).min(1.0) * rng.random_range(0.75..1.6);
    if progress < 0.15 {
        return plan.steps;
    }
    if rng.random_bool(0.85) {
        plan.wait(&mut rng, 96);
        plan.step(
            EventType::Acknowledged,
            json!({"by": "pals", "message": "Thank you, we have logged your feedback."}),
        );
    }
    if progress < 0.35 {
        return plan.steps;
    }
    let team = responder(feedback.place.setting);
    plan.wait(&mut rng, 200);
    plan.step(
        EventType::Responded,
        json!({"by": team, "text": catalogue::reply(feedback.story.tone)}),
    );
    if feedback.consent && feedback.told.is_some() && rng.random_bool(0.6) {
        plan.wait(&mut rng, 48);
        plan.step(EventType::StoryApproved, feedback.approval());
    }
    if progress < 0.55 {
        return plan.steps;
    }
    let wants_change = match feedback.story.tone {
        Tone::Praise => false,
        Tone::Mixed => rng.random_bool(0.65),
        Tone::Complaint => rng.random_bool(0.8),
    };
    let first_change = if wants_change {
        let Some(change) = plan.change(&mut rng, &feedback, progress, None) else {
            return plan.steps;
        };
        Some(change)
    } else {
        if progress < 0.75 {
            return plan.steps;
        }
        plan.wait(&mut rng, 300);
        plan.no_change(&mut rng, &feedback);
        None
    };
    if progress < 0.9 {
        return plan.steps;
    }
    plan.wait(&mut rng, 100);
    plan.report_back(&feedback, first_change);

    // A few come back: the problem happened again. Some are closed again with a further change,
    // some with a no-change (the public page then shows the loop no more), some are still open.
    if !rng.random_bool(0.06) {
        return plan.steps;
    }
    plan.wait(&mut rng, 10 * 24);
    plan.step(
        EventType::Reopened,
        json!({"by": "pals", "reason": *REOPEN_REASONS.choose(&mut rng).expect("reasons")}),
    );
    match rng.random_range(0..10) {
        0..4 => {
            let Some(change) = plan.change(&mut rng, &feedback, 1.0, first_change) else {
                return plan.steps;
            };
            plan.wait(&mut rng, 100);
            plan.report_back(&feedback, Some(change));
        }
        4..8 => {
            plan.wait(&mut rng, 200);
            plan.no_change(&mut rng, &feedback);
            plan.wait(&mut rng, 100);
            plan.report_back(&feedback, None);
        }
        _ => {}
    }
    plan.steps
}

/// The loop's feedback, as drawn.
#[derive(Debug)]
struct Feedback {
    place: &'static Place,
    story: &'static Story,
    /// The story's text as the person wrote it, when they wrote one (some only gave ratings).
    told: Option<String>,
    /// Whether `told` ends with their name or contact details (a moderator takes them out).
    signed: bool,
    themes: Vec<&'static str>,
    communities: Vec<Community>,
    author: Option<Author>,
    consent: bool,
}

impl Feedback {
    fn draw(rng: &mut StdRng) -> Self {
        let place = PLACES
            .choose_weighted(rng, |place| place.weight)
            .expect("places");
        let setting = place.setting;
        let communities: Vec<Community> = Community::ALL
            .into_iter()
            .filter(|community| rng.random_bool(community.rate(setting)))
            .collect();
        let story = pick_story(rng, setting, &communities);
        let told = rng.random_bool(0.85);
        // Staff code what a story touches on; ratings alone get the theme they were asked about.
        let mut themes = vec![story.theme.name()];
        if told {
            themes.extend(story.also.iter().map(|theme| theme.name()));
        }
        let author =
            (told && rng.random_bool(0.55)).then(|| *AUTHORS.choose(rng).expect("authors"));
        let mut signed = false;
        let told = told.then(|| match author {
            Some(author) if rng.random_bool(0.25) => {
                signed = true;
                format!("{} {}", story.text, sign_off(rng, author))
            }
            _ => story.text.to_owned(),
        });
        let consent = rng.random_bool(if told.is_some() { 0.7 } else { 0.05 });
        Self {
            place,
            story,
            told,
            signed,
            themes,
            communities,
            author,
            consent,
        }
    }

    /// The `feedback.received` data.
    fn data(&self, rng: &mut StdRng, received_at: Timestamp) -> Value {
        let channel = if !self.communities.is_empty() && rng.random_bool(0.5) {
            "community_partner"
        } else if self.told.is_none() {
            *["survey", "survey", "sms", "sms", "paper"]
                .choose(rng)
                .expect("channels")
        } else {
            CHANNELS
                .choose_weighted(rng, |(_, weight)| *weight)
                .expect("channels")
                .0
        };
        let fft = match self.story.tone {
            Tone::Praise => *[1, 1, 1, 1, 2].choose(rng).expect("answers"),
            Tone::Mixed => *[2, 2, 3, 3, 4].choose(rng).expect("answers"),
            Tone::Complaint if rng.random_bool(0.03) => 6,
            Tone::Complaint => *[3, 4, 4, 5, 5, 5].choose(rng).expect("answers"),
        };
        let tags: Vec<&str> = self.communities.iter().map(|c| c.tag()).collect();
        let mut data = json!({
            "org_unit": self.place.org_unit, "channel": channel,
            "received_at": received_at.to_string(), "ratings": {"fft": fft},
            "themes": self.themes, "seldom_heard": tags,
            "consent_to_publish": self.consent, "language": "en",
        });
        if rng.random_bool(0.3) {
            let cleanliness = match self.story.tone {
                _ if self.story.theme == Theme::Cleanliness => rng.random_range(1..=2),
                Tone::Praise => rng.random_range(4..=5),
                Tone::Mixed => rng.random_range(3..=4),
                Tone::Complaint => rng.random_range(2..=4),
            };
            data["ratings"]["cleanliness"] = json!(cleanliness);
        }
        if let Some(text) = &self.told {
            data["story"] = json!(text);
            data["author"] = match self.author {
                Some(author) => json!({"name": author.name, "contact": author.contact}),
                None => json!({"anonymous": true}),
            };
        }
        data
    }

    /// A moderator's approval: the story as told, or without the names of staff and relatives
    /// and the sign-off when it has them.
    fn approval(&self) -> Value {
        match (self.story.moderated, self.signed) {
            (Some(moderated), _) => {
                json!({"by": "patient experience team", "story": moderated})
            }
            (None, true) => json!({"by": "patient experience team", "story": self.story.text}),
            (None, false) => json!({"by": "patient experience team"}),
        }
    }

    /// The changes that answer the story where it was told.
    fn answers(&self) -> Vec<&'static Change> {
        let setting = self.place.setting;
        let mut changes: Vec<&'static Change> = catalogue::changes_for(self.story.theme, setting)
            .filter(|change| {
                self.story.answered_by.is_empty() || self.story.answered_by.contains(&change.key)
            })
            .collect();
        if changes.is_empty() {
            // The catalogue's tests make sure this never happens; a theme's changes still fit.
            changes = catalogue::changes_for(self.story.theme, setting).collect();
        }
        changes
    }
}

/// How people gave feedback, and how often, when they wrote a story.
const CHANNELS: &[(&str, u32)] = &[
    ("web", 20),
    ("survey", 16),
    ("sms", 12),
    ("paper", 10),
    ("email", 9),
    ("in_person", 9),
    ("phone", 8),
    ("community_partner", 4),
    ("social", 3),
    ("other", 2),
];

/// A story told at `setting`: often one of a tagged community's own when the teller is of one.
fn pick_story(rng: &mut StdRng, setting: Setting, communities: &[Community]) -> &'static Story {
    let own: Vec<&Story> = STORIES
        .iter()
        .filter(|story| {
            story.settings.has(setting)
                && story
                    .community
                    .is_some_and(|community| communities.contains(&community))
        })
        .collect();
    if !own.is_empty() && rng.random_bool(0.6) {
        return own.choose(rng).expect("own stories");
    }
    let (praise, concerns): (Vec<&Story>, Vec<&Story>) = STORIES
        .iter()
        .filter(|story| story.settings.has(setting) && story.community.is_none())
        .partition(|story| story.tone == Tone::Praise);
    let from = if concerns.is_empty() || (!praise.is_empty() && rng.random_bool(PRAISE_SHARE)) {
        praise
    } else {
        concerns
    };
    from.choose(rng).expect("every setting has stories")
}

/// How much of the feedback without a community's own story is praise. Most people who answer
/// the Friends and Family Test had a good experience (NHS England publishes 80–95% good or
/// very good answers), so most demo loops thank staff, and the rest raise concerns.
const PRAISE_SHARE: f64 = 0.75;

/// How a story may end: the author's name or how to reach them, which the public page
/// redacts.
fn sign_off(rng: &mut StdRng, author: Author) -> String {
    let contact = if author.by_email() {
        format!(
            "My email is {} if you want to talk about it.",
            author.contact
        )
    } else {
        format!("You can ring me on {}.", author.contact)
    };
    match rng.random_range(0..3) {
        0 => format!("{} {contact}", author.name),
        1 => contact,
        _ => format!("Thank you, {}.", author.name),
    }
}

/// Who answers feedback at each kind of place.
fn responder(setting: Setting) -> &'static str {
    match setting {
        Setting::Ward => "ward manager",
        Setting::Maternity => "maternity matron",
        Setting::Children => "children's ward sister",
        Setting::Emergency => "emergency department manager",
        Setting::Clinic => "clinic manager",
        Setting::DistrictNursing | Setting::HealthVisiting | Setting::MentalHealth => "team leader",
    }
}

/// The steps of one loop, as they are planned.
struct Plan {
    seed: u64,
    n: usize,
    loop_id: LoopId,
    now: Timestamp,
    /// The time of the last step.
    at: Timestamp,
    steps: Vec<(Command, Origin)>,
}

impl Plan {
    /// Moves the clock on by up to `max_hours`, never past now.
    fn wait(&mut self, rng: &mut StdRng, max_hours: i64) {
        self.at =
            (self.at + SignedDuration::from_hours(rng.random_range(1..max_hours))).min(self.now);
    }

    /// Adds a step at the current time.
    fn step(&mut self, event_type: EventType, data: Value) {
        let payload = LoopEvent::from_data(event_type, data).expect("demo data is valid");
        let origin = Origin {
            source: DEMO_SOURCE.to_owned(),
            event_id: format!("{}-{}-{}", self.seed, self.n, self.steps.len()),
            request: None,
            actor: Some(DEMO_SOURCE.to_owned()),
        };
        self.steps.push((
            Command {
                loop_id: self.loop_id.clone(),
                at: self.at,
                payload,
            },
            origin,
        ));
    }

    /// Plans a change that answers the story (not `before`, the change made the last time)
    /// and, once the loop has come that far, records it on the day the place makes it. `None`
    /// when the loop stops before the change is made.
    fn change(
        &mut self,
        rng: &mut StdRng,
        feedback: &Feedback,
        progress: f64,
        before: Option<&'static Change>,
    ) -> Option<&'static Change> {
        let answers: Vec<&'static Change> = feedback
            .answers()
            .into_iter()
            .filter(|change| before.is_none_or(|before| before.key != change.key))
            .collect();
        let team = responder(feedback.place.setting);
        if answers.is_empty() {
            // Nothing else answers it: say so honestly.
            self.wait(rng, 200);
            self.no_change(rng, feedback);
            return None;
        }
        let planned_at = rng.random_bool(0.7).then(|| {
            self.wait(rng, 200);
            self.at
        });
        self.wait(rng, 300);
        let ready = self.at;
        let round = ChangeRound::after(feedback.place, feedback.story.theme, ready, self.now);
        let change = answers[round.map_or(0, |round| round.index) as usize % answers.len()];
        if let Some(planned_at) = planned_at {
            self.at = planned_at;
            let due = Offset::UTC
                .to_datetime(planned_at + SignedDuration::from_hours(28 * 24))
                .date();
            self.step(
                EventType::ActionPlanned,
                json!({"by": team, "description": change.plan, "owner": change.owner, "due": due.to_string()}),
            );
            self.at = ready;
        }
        let round = round.filter(|_| progress >= 0.75)?;
        self.at = round.at;
        self.step(
            EventType::ChangeMade,
            json!({"by": team, "description": change.done, "change_id": round.change_id(feedback.place, change)}),
        );
        Some(change)
    }

    /// Records an honest no-change: thanks passed on for praise, otherwise why the theme's
    /// problem could not be changed here.
    fn no_change(&mut self, rng: &mut StdRng, feedback: &Feedback) {
        let reason = if feedback.story.tone == Tone::Praise {
            *THANKS_PASSED_ON.choose(rng).expect("thanks")
        } else {
            let reasons: Vec<_> =
                catalogue::no_changes_for(feedback.story.theme, feedback.place.setting).collect();
            reasons
                .choose(rng)
                .expect("every theme has a no-change")
                .reason
        };
        let team = responder(feedback.place.setting);
        self.step(EventType::NoChange, json!({"by": team, "reason": reason}));
    }

    /// Reports the outcome back, the way the person can be reached.
    fn report_back(&mut self, feedback: &Feedback, change: Option<&'static Change>) {
        let (channel, how) = match feedback.author {
            Some(author) if author.by_email() => ("email", "We wrote to tell you"),
            Some(_) => ("phone", "We rang to tell you"),
            None if feedback.consent => ("web", "We published"),
            None => ("paper", "We put on the noticeboard"),
        };
        let message = match change {
            Some(change) => format!("{how} what changed: {}", change.done),
            None => format!("{how} why nothing could change, and what we did instead."),
        };
        self.step(
            EventType::ReportedBack,
            json!({"by": "patient experience team", "message": message, "channel": channel}),
        );
    }
}

/// A day on which a place makes the changes it planned for a theme.
#[derive(Debug, Clone, Copy)]
struct ChangeRound {
    /// How many rounds before the latest it is (0: the latest).
    index: u64,
    at: Timestamp,
}

impl ChangeRound {
    /// The first round for `theme` at `place` at or after `ready`; `None` when it is still to
    /// come. Each place and theme has its own day in the fortnight.
    fn after(place: &Place, theme: Theme, ready: Timestamp, now: Timestamp) -> Option<Self> {
        let hash = fnv1a(place.org_unit.as_bytes()) ^ fnv1a(theme.name().as_bytes());
        let offset_hours = (hash % (CHANGE_ROUND.as_hours() as u64)) as i64;
        let latest = now - SignedDuration::from_hours(offset_hours);
        if ready > latest {
            return None;
        }
        let index = latest.duration_since(ready).as_hours() / CHANGE_ROUND.as_hours();
        Some(Self {
            index: index as u64,
            at: latest - CHANGE_ROUND * index as i32,
        })
    }

    /// The `change_id` every loop this change closes on this day shares.
    fn change_id(self, place: &Place, change: &Change) -> String {
        let day = Offset::UTC.to_datetime(self.at).date();
        format!("demo:{}:{}:{day}", place.org_unit, change.key)
    }
}

/// FNV-1a: a hash that is the same on every platform and release, for reproducible rounds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use closeloop_domain::{Event, LoopState, Sla, Stage, decide};

    use super::catalogue::{CHANGES, NO_CHANGES, theme_of_change};
    use super::*;

    /// The seed and size `serve --demo` loads.
    const SEED: u64 = 2015;
    const LOOPS: usize = 5000;

    fn now() -> Timestamp {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    /// One planned loop: its events as `decide` accepted them, and its final state.
    struct Planned {
        events: Vec<Event>,
        state: LoopState,
    }

    impl Planned {
        fn received(&self) -> &closeloop_domain::event::FeedbackReceived {
            match &self.events[0].payload {
                LoopEvent::FeedbackReceived(data) => data,
                other => panic!("a loop starts with its feedback, not {other:?}"),
            }
        }

        /// The changes recorded on it, with their times.
        fn changes(
            &self,
        ) -> impl Iterator<Item = (Timestamp, &closeloop_domain::event::ChangeMade)> {
            self.events.iter().filter_map(|event| match &event.payload {
                LoopEvent::ChangeMade(data) => Some((event.time, data)),
                _ => None,
            })
        }

        fn types(&self) -> Vec<EventType> {
            self.events.iter().map(Event::event_type).collect()
        }

        /// The text of its latest story approval (`Some(None)`: approved as told).
        fn approved_as(&self) -> Option<Option<String>> {
            self.events
                .iter()
                .rev()
                .find_map(|event| match &event.payload {
                    LoopEvent::StoryApproved(approval) => Some(approval.story.clone()),
                    _ => None,
                })
        }
    }

    /// Every loop of the data set `serve --demo` loads, each step decided as the write path
    /// decides it: none may be refused.
    fn demo_set() -> Vec<Planned> {
        (0..LOOPS)
            .map(|n| {
                let mut state = None;
                let mut events = Vec::new();
                for (command, origin) in plan_loop(SEED, n, now()) {
                    let time = command.at;
                    let decided = decide(state.as_ref(), command)
                        .unwrap_or_else(|rejection| panic!("loop {n}: step refused: {rejection}"));
                    for payload in decided {
                        let event = Event {
                            event_id: origin.event_id.clone(),
                            source: origin.source.clone(),
                            time,
                            payload,
                            actor: None,
                        };
                        state = closeloop_domain::apply(state, &event);
                        events.push(event);
                    }
                }
                Planned {
                    events,
                    state: state.expect("every loop is received"),
                }
            })
            .collect()
    }

    #[test]
    fn plans_are_reproducible_and_never_in_the_future() {
        for n in 0..500 {
            let plan = plan_loop(7, n, now());
            assert_eq!(plan, plan_loop(7, n, now()));
            assert!(plan.iter().all(|(command, _)| command.at <= now()));
            assert!(plan.windows(2).all(|w| w[0].0.at <= w[1].0.at));
            assert_eq!(plan[0].0.payload.event_type(), EventType::FeedbackReceived);
        }
    }

    #[test]
    fn every_change_answers_the_theme_of_the_loops_it_closes_at_their_place() {
        let mut closed_with_change = 0;
        for planned in demo_set() {
            let received = planned.received();
            let setting = PLACES
                .iter()
                .find(|place| place.org_unit == received.org_unit.as_str())
                .expect("a demo place")
                .setting;
            for (_, change) in planned.changes() {
                let theme = theme_of_change(&change.description)
                    .unwrap_or_else(|| panic!("{:?} is not in the catalogue", change.description));
                assert!(
                    received.themes.iter().any(|t| t == theme.name()),
                    "{:?} answers {:?}, but the loop is about {:?}",
                    change.description,
                    theme.name(),
                    received.themes
                );
                let listed = CHANGES
                    .iter()
                    .find(|c| c.done == change.description)
                    .unwrap();
                assert!(
                    listed.settings.has(setting),
                    "{:?} at {:?}",
                    listed.key,
                    setting
                );
            }
            if planned.state.stage == Stage::Closed && planned.changes().next().is_some() {
                closed_with_change += 1;
            }
        }
        assert!(closed_with_change > LOOPS / 10, "{closed_with_change}");
    }

    #[test]
    fn a_change_closes_its_loops_at_one_place_on_one_day() {
        let mut groups: BTreeMap<String, BTreeSet<(String, String, Timestamp)>> = BTreeMap::new();
        let mut loops_per_change: BTreeMap<String, usize> = BTreeMap::new();
        for planned in demo_set() {
            for (at, change) in planned.changes() {
                let id = change
                    .change_id
                    .clone()
                    .expect("every demo change has a change_id");
                groups.entry(id.clone()).or_default().insert((
                    planned.received().org_unit.as_str().to_owned(),
                    change.description.clone(),
                    at,
                ));
                *loops_per_change.entry(id).or_default() += 1;
            }
        }
        for (id, members) in &groups {
            assert_eq!(
                members.len(),
                1,
                "{id} groups different places or changes: {members:?}"
            );
        }
        assert!(
            loops_per_change.values().any(|&loops| loops >= 5),
            "some changes close several loops at once: {loops_per_change:?}"
        );
    }

    #[test]
    fn the_catalogue_answers_every_story_wherever_it_is_told() {
        for story in STORIES {
            for key in story.answered_by {
                let change = CHANGES
                    .iter()
                    .find(|change| change.key == *key)
                    .unwrap_or_else(|| panic!("no change {key:?}"));
                assert_eq!(change.theme, story.theme, "{key:?} for {:?}", story.text);
            }
            for setting in PLACES.iter().map(|place| place.setting) {
                if !story.settings.has(setting) || story.tone == Tone::Praise {
                    continue;
                }
                assert!(
                    catalogue::changes_for(story.theme, setting)
                        .any(|change| story.answered_by.is_empty()
                            || story.answered_by.contains(&change.key)),
                    "no change answers {:?} at {setting:?}",
                    story.text
                );
                assert!(
                    catalogue::no_changes_for(story.theme, setting)
                        .next()
                        .is_some(),
                    "no honest no-change for {:?} at {setting:?}",
                    story.theme
                );
            }
            assert!(
                PLACES.iter().any(|place| story.settings.has(place.setting)),
                "{:?} fits no demo place",
                story.text
            );
        }
        let keys: BTreeSet<_> = CHANGES.iter().map(|change| change.key).collect();
        assert_eq!(keys.len(), CHANGES.len(), "change keys are unique");
        assert!(NO_CHANGES.iter().all(|reason| !reason.reason.is_empty()));
    }

    #[test]
    fn some_stories_name_staff_or_relatives_and_their_moderated_text_does_not() {
        let naming: Vec<&Story> = STORIES.iter().filter(|s| !s.names.is_empty()).collect();
        for story in &naming {
            let moderated = story
                .moderated
                .expect("a story that names someone has a moderated text");
            for name in story.names {
                assert!(story.text.contains(name), "{name} in {:?}", story.text);
                assert!(!moderated.contains(name), "{name} in {moderated:?}");
            }
        }
        assert!(naming.iter().any(|s| s.text.contains("Nurse ")));
        assert!(naming.iter().any(|s| s.text.contains("Dr ")));
        assert!(
            naming
                .iter()
                .any(|s| s.text.contains("my husband") || s.text.contains("my sister"))
        );
        assert!(
            STORIES
                .iter()
                .all(|s| s.names.is_empty() == s.moderated.is_none())
        );

        // In the data set: stories naming staff, some approved with the names taken out, some
        // waiting for a moderator; stories signed with the author's contact details.
        let set = demo_set();
        let story_of = |p: &Planned| p.received().story.clone().unwrap_or_default();
        let named: Vec<&Planned> = set
            .iter()
            .filter(|p| naming.iter().any(|s| story_of(p).starts_with(s.text)))
            .collect();
        let moderated = named
            .iter()
            .filter(|p| {
                p.approved_as()
                    .flatten()
                    .is_some_and(|text| naming.iter().any(|s| s.moderated == Some(text.as_str())))
            })
            .count();
        let waiting = named
            .iter()
            .filter(|p| p.received().consent_to_publish && p.approved_as().is_none())
            .count();
        assert!(
            moderated >= 20,
            "{moderated} named stories approved with the names taken out"
        );
        assert!(
            waiting >= 20,
            "{waiting} named stories wait for a moderator"
        );
        let signed = set
            .iter()
            .filter(|p| AUTHORS.iter().any(|a| story_of(p).contains(a.contact)))
            .count();
        assert!(
            signed >= 50,
            "{signed} stories end with the author's contact details"
        );
    }

    #[test]
    fn every_stage_is_there_and_some_loops_are_overdue() {
        let set = demo_set();
        let sla = Sla::default();
        let count = |f: &dyn Fn(&Planned) -> bool| set.iter().filter(|p| f(p)).count();
        use EventType as E;
        for stage in [
            Stage::Received,
            Stage::Acknowledged,
            Stage::Responded,
            Stage::ActionPlanned,
            Stage::OutcomeRecorded,
            Stage::Closed,
        ] {
            let loops = count(&|p| p.state.stage == stage);
            assert!(loops >= 20, "{loops} loops at {stage:?}");
        }
        let closed_with = |last_outcome: E| {
            move |p: &Planned| {
                p.state.stage == Stage::Closed
                    && p.types()
                        .iter()
                        .rev()
                        .find(|t| matches!(t, E::ChangeMade | E::NoChange))
                        == Some(&last_outcome)
            }
        };
        assert!(count(&closed_with(E::ChangeMade)) >= 500);
        assert!(count(&closed_with(E::NoChange)) >= 200);
        let reopened_then = |tail: &'static [E]| {
            move |p: &Planned| {
                // What came after the reopening, a planned action aside.
                let types = p.types();
                types
                    .iter()
                    .position(|t| *t == E::Reopened)
                    .is_some_and(|at| {
                        types[at + 1..]
                            .iter()
                            .filter(|t| **t != E::ActionPlanned)
                            .eq(tail)
                    })
            }
        };
        assert!(count(&reopened_then(&[E::NoChange, E::ReportedBack])) >= 5);
        assert!(count(&reopened_then(&[E::ChangeMade, E::ReportedBack])) >= 5);
        assert!(count(&reopened_then(&[])) >= 3);
        let overdue = count(&|p| sla.is_overdue(&p.state, now()));
        assert!((50..LOOPS / 3).contains(&overdue), "{overdue} overdue");
    }

    #[test]
    fn most_consented_loops_have_a_story_and_praise_rates_well() {
        let set = demo_set();
        let consented: Vec<&Planned> = set
            .iter()
            .filter(|p| p.received().consent_to_publish)
            .collect();
        let told = consented
            .iter()
            .filter(|p| p.received().story.is_some())
            .count();
        assert!(
            told * 100 >= consented.len() * 95,
            "{told} of {} consented loops have a story",
            consented.len()
        );
        for planned in &set {
            let Some(story) = &planned.received().story else {
                continue;
            };
            let fft = planned.received().ratings["fft"].as_u64().unwrap();
            let tone = STORIES
                .iter()
                .find(|s| story.starts_with(s.text))
                .unwrap()
                .tone;
            match tone {
                Tone::Praise => assert!(fft <= 2, "{story:?} rated {fft}"),
                Tone::Complaint => assert!(fft >= 3, "{story:?} rated {fft}"),
                Tone::Mixed => {}
            }
        }
    }

    #[test]
    fn seldom_heard_groups_are_rare_and_one_is_under_ten() {
        let mut groups: BTreeMap<String, usize> = BTreeMap::new();
        for planned in demo_set() {
            for tag in &planned.received().seldom_heard {
                *groups.entry(tag.clone()).or_default() += 1;
            }
        }
        assert_eq!(groups.len(), Community::ALL.len(), "{groups:?}");
        let shown = groups.values().filter(|&&loops| loops >= 10).count();
        let under_ten = groups.values().filter(|&&loops| loops < 10).count();
        assert!(shown >= 4 && under_ten >= 1, "{groups:?}");
        assert!(groups.values().sum::<usize>() < LOOPS / 10, "{groups:?}");
    }
}
