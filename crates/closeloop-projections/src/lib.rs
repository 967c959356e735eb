//! Closeloop's read models: everything `GET /v1/loops`, `GET /v1/stats` and the "you said,
//! we did" page show, built **only from the global log**.
//!
//! # Layout
//! - [`ReadModels`] (`model`) is the pure, synchronous core. It holds one compact record per
//!   loop in a *slot* (a dense `u32` handed out as loops are received): a 32-byte hot half that
//!   filters and stats read (`received_at`, stage, channel and interned ids of the org unit,
//!   theme list, tag list and rating set) and a cold half only summaries read (the other
//!   times, the version, the public id; packed into 56 bytes). Names are interned once
//!   (`intern`).
//! - `index` keeps a bitmap of slots per filter value (status, stage, channel, each org unit
//!   *prefix*, theme, seldom-heard tag) and the (`received_at`, `loop_id`) order as a B-tree of
//!   small bitmap buckets. [`ReadModels::list`] intersects bitmaps and walks the order from the
//!   cursor: its cost follows the page and the number of buckets, not the number of loops.
//! - `timing` keeps, per SLA, the instant each open loop becomes overdue and the working days
//!   each took to acknowledge and close, so `overdue` is one comparison with `now`.
//! - [`ReadModels::stats`] (`stats`) sums per-day aggregates kept next to `timing` (per
//!   group a query may ask for: everything, each exact org unit, theme, channel and
//!   seldom-heard tag), so its cost follows the days and groups asked for; the loops of
//!   partial days at the ends of a range, those due today, and a scope's loops when grouping
//!   by theme, channel or tag are counted one by one. One pass over the loops in range is
//!   the reference the aggregates are checked against.
//! - `daily` keeps per-day aggregates (counts, FFT answers and exact histograms of whole
//!   working days to acknowledge and to close) per key — everything, each org unit's subtree,
//!   theme, channel, seldom-heard tag, and a place's themes and tags — next to the
//!   SLA-dependent figures of `timing`, so that a question over a date range sums days, not
//!   loops. [`ReadModels::insights`] (`insights`) answers the patient leaders' insights page
//!   from them, withholding figures drawn from fewer than [`SUPPRESS_BELOW`] loops.
//! - [`ReadModels::published`] (`published`) is the "you said, we did" read model: closed,
//!   consented loops whose latest outcome is a change, newest first, keyed by [`PublicKey`],
//!   with a version for `ETag`s; it holds no story text. Pages filtered by place and theme
//!   ([`PublishedFilter`]) cost their own size, not a scan (`PublishedIndex`).
//!   [`StoryCache`] keeps redacted stories read from the store, bounded, and [`redact`]
//!   scrubs stories before they are shown.
//! - `limits` caps what the read models take from one event ([`MAX_THEMES`] and the rest),
//!   so that events stored before today's input limits cannot make any read expensive.
//! - [`ReadModels::to_snapshot`] / [`ReadModels::from_snapshot`] (`snapshot`) store the records
//!   and the checkpoint together, versioned and checksummed, with the SLA-dependent figures
//!   and the SLA they were computed for; indexes are rebuilt on load, on both cores.
//!   [`SnapshotHeader`] reads a snapshot's checkpoint and entry hash from its first bytes.
//! - [`Projections`] and [`run_projector`] (`runner`) share the models behind a lock and keep
//!   them caught up with an [`EventStore`](closeloop_store::EventStore); [`rebuild`] builds them
//!   from position 0 for the `rebuild` command. [`Projections::load_snapshot_checked`] trusts a
//!   snapshot only when the store's entry at its checkpoint is the one it was built from.
//!
//! # Invariants
//! - **Built only from the global log.** Nothing else feeds the read models, so a rebuild from
//!   position 0 gives exactly what incremental catch-up, with snapshots and restarts in
//!   between, gives (a property test checks this).
//! - **The checkpoint never passes an unapplied event.** Entries are applied strictly at
//!   `checkpoint + 1`; [`ReadModels::apply`] panics on anything else, and the projector stops a
//!   page at a gap and reads again rather than skip. A snapshot stores the data and its
//!   checkpoint in one file, written atomically.
//! - **Queries do not depend on slot numbers**: order is (`received_at`, `loop_id`), groups are
//!   sorted by key, so replaying the same log in any number of steps answers the same.

mod daily;
#[cfg(test)]
mod daily_tests;
mod histogram;
mod index;
mod insights;
mod intern;
mod limits;
mod model;
mod published;
mod query;
mod record;
mod redact;
mod runner;
mod snapshot;
mod stats;
mod story_cache;
#[cfg(test)]
mod test_log;
mod timing;

pub use insights::{
    CLOSE_BIN_DAYS, CLOSE_BINS, CloseBin, Comparison, Disclosed, EXAMPLE_CANDIDATES, Example, Fft,
    Figures, GroupInsight, Headline, INSIGHT_THEMES, InsightChoices, Insights, InsightsQuery,
    MAX_GROUPS, MAX_MONTHS, MAX_PLACE_CHOICES, MAX_THEME_CHOICES, MonthFft, SUPPRESS_BELOW,
    ThemeInsight, whole_percent,
};
pub use limits::{
    MAX_CHANGES_PER_LOOP, MAX_DESCRIPTION_BYTES, MAX_NAME_BYTES, MAX_RATINGS, MAX_TAGS, MAX_THEMES,
};
pub use model::ReadModels;
pub use published::{
    LegacyPublicIds, PublicKey, PublishedFilter, PublishedLoop, PublishedPage,
    install_legacy_public_ids,
};
pub use query::{LoopPage, LoopQuery, LoopSummary, QueryError, StatusFilter};
pub use redact::{REDACTED, redact};
pub use runner::{
    PendingSnapshot, Projections, ProjectionsError, ProjectorOptions, rebuild, run_projector,
};
pub use snapshot::{
    SNAPSHOT_HEADER_MAX_BYTES, SNAPSHOT_VERSION, SnapshotError, SnapshotHeader, tmp_path,
};
pub use stats::{
    ALL_KEY, FFT, GroupBy, NONE_KEY, RatingStats, Stats, StatsGroup, StatsQuery, TOP_THEMES,
    ThemeCount,
};
pub use story_cache::{Epoch, StoryCache};
