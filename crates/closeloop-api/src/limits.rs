//! Concurrency limits for the expensive classes of request: a few run at once, a few more
//! wait their turn, and the rest are shed at once with 503 and `Retry-After`, so that a crowd
//! of auditors cannot starve the cheap requests (health checks, writes) of CPU and disk.
//!
//! The defaults suit a 2-core machine: each class may keep about one core busy, and the
//! queue is short enough that a waiting request starts well within the request timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A class of expensive request with its own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// `GET /v1/audit/verify`: walks the whole log.
    Verify,
    /// `GET /v1/audit/proof/*`: reads a few blocks of the log and hashes them.
    Proof,
    /// `GET /v1/events`: streams the log.
    Export,
    /// `GET /v1/audit/access`: reads the access log's day files until it has its page.
    AccessLog,
    /// `GET /v1/you-said-we-did` and the pages `/you-said-we-did` (with its printable view,
    /// Atom feed and snippet): unauthenticated, and a page
    /// whose stories are not cached reads the store once per entry. The handler takes its
    /// turn itself, after answering a matching `If-None-Match` with 304, so a request that
    /// costs nothing never waits or is shed ([`Class::admitted_by_handler`]).
    Public,
}

impl Class {
    /// The class in words, for messages.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Class::Verify => "audit verification",
            Class::Proof => "audit proof",
            Class::Export => "event export",
            Class::AccessLog => "access log query",
            Class::Public => "public page",
        }
    }

    /// Whether the handler, not the route guard, takes the request's turn: the guard hands it
    /// the class's limiter instead, so that the handler can first answer what needs no turn.
    #[must_use]
    pub fn admitted_by_handler(self) -> bool {
        matches!(self, Class::Public)
    }
}

/// How many requests of one class run at once, how many may wait, and what a shed request is
/// told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassLimit {
    /// Requests running at once.
    pub concurrent: usize,
    /// Requests waiting for a turn; one more is shed.
    pub queue: usize,
    /// The `Retry-After` of a shed request, in seconds (at least 1).
    pub retry_after: u64,
}

/// Verifications running at once by default: a verify of 200,000 events keeps one core busy
/// for a few seconds.
pub const VERIFY_LIMIT: ClassLimit = ClassLimit {
    concurrent: 2,
    queue: 4,
    retry_after: 5,
};
/// Proofs running at once by default: each reads a handful of 256-entry blocks.
pub const PROOF_LIMIT: ClassLimit = ClassLimit {
    concurrent: 4,
    queue: 8,
    retry_after: 1,
};
/// Exports running at once by default: each streams the log for as long as the client reads.
pub const EXPORT_LIMIT: ClassLimit = ClassLimit {
    concurrent: 2,
    queue: 4,
    retry_after: 5,
};

/// Access log queries running at once by default: a query with a filter that matches little
/// reads every day file of the retention (a few hundred MB at most for a busy trust).
pub const ACCESS_LOG_LIMIT: ClassLimit = ClassLimit {
    concurrent: 2,
    queue: 4,
    retry_after: 2,
};

/// Public pages built at once by default. A page is cheap when its stories are cached and
/// costs up to one store read per entry (at most 100) when they are not; eight at once keep
/// those reads to a fraction of the blocking pool, and 32 waiting absorb a burst of readers
/// (each waits for at most a few page builds). A shed reader may try again after a second.
pub const PUBLIC_LIMIT: ClassLimit = ClassLimit {
    concurrent: 8,
    queue: 32,
    retry_after: 1,
};

/// One limiter per [`Class`].
#[derive(Debug, Clone)]
pub struct Limits {
    verify: Limiter,
    proof: Limiter,
    export: Limiter,
    access_log: Limiter,
    public: Limiter,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(VERIFY_LIMIT, PROOF_LIMIT, EXPORT_LIMIT)
    }
}

impl Limits {
    /// Limits with these settings for the audit classes, and [`ACCESS_LOG_LIMIT`] and
    /// [`PUBLIC_LIMIT`] for access log queries and the public page (see [`with`](Self::with)).
    #[must_use]
    pub fn new(verify: ClassLimit, proof: ClassLimit, export: ClassLimit) -> Self {
        Self {
            verify: Limiter::new(verify),
            proof: Limiter::new(proof),
            export: Limiter::new(export),
            access_log: Limiter::new(ACCESS_LOG_LIMIT),
            public: Limiter::new(PUBLIC_LIMIT),
        }
    }

    /// These limits with `limit` for `class` instead.
    #[must_use]
    pub fn with(mut self, class: Class, limit: ClassLimit) -> Self {
        let limiter = Limiter::new(limit);
        match class {
            Class::Verify => self.verify = limiter,
            Class::Proof => self.proof = limiter,
            Class::Export => self.export = limiter,
            Class::AccessLog => self.access_log = limiter,
            Class::Public => self.public = limiter,
        }
        self
    }

    /// The limiter of one class.
    #[must_use]
    pub fn of(&self, class: Class) -> &Limiter {
        match class {
            Class::Verify => &self.verify,
            Class::Proof => &self.proof,
            Class::Export => &self.export,
            Class::AccessLog => &self.access_log,
            Class::Public => &self.public,
        }
    }
}

/// Admits requests of one class: up to `concurrent` at once, up to `queue` waiting.
#[derive(Debug, Clone)]
pub struct Limiter {
    running: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    limit: ClassLimit,
}

/// A turn to run; the next waiting request starts when it is dropped.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

impl Limiter {
    /// A limiter with these settings.
    #[must_use]
    pub fn new(limit: ClassLimit) -> Self {
        Self {
            running: Arc::new(Semaphore::new(limit.concurrent)),
            waiting: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// The settings.
    #[must_use]
    pub fn limit(&self) -> ClassLimit {
        self.limit
    }

    /// A turn now, if one is free and nobody is waiting.
    #[must_use]
    pub fn try_acquire(&self) -> Option<Permit> {
        Arc::clone(&self.running)
            .try_acquire_owned()
            .ok()
            .map(Permit)
    }

    /// A turn, waiting in line if the queue has room; `None` when it has not: shed the
    /// request. Dropping the future leaves the line.
    pub async fn acquire(&self) -> Option<Permit> {
        if let Some(permit) = self.try_acquire() {
            return Some(permit);
        }
        let mut waiting = self.waiting.load(Ordering::Acquire);
        loop {
            if waiting >= self.limit.queue {
                return None;
            }
            match self.waiting.compare_exchange_weak(
                waiting,
                waiting + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => waiting = now,
            }
        }
        let _in_line = InLine(&self.waiting);
        // The semaphore is never closed, so this waits for a turn; it is fair (first come,
        // first served), so a request in line is not overtaken by later ones.
        Arc::clone(&self.running)
            .acquire_owned()
            .await
            .ok()
            .map(Permit)
    }

    /// How many requests are waiting for a turn.
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// Counts a request out of the line when it gets its turn or gives up.
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use futures::FutureExt;
    use futures::poll;

    use super::*;

    #[tokio::test]
    async fn requests_run_then_wait_then_are_shed() {
        let limiter = Limiter::new(ClassLimit {
            concurrent: 1,
            queue: 1,
            retry_after: 1,
        });
        let running = limiter.acquire().await.expect("a free turn");
        let mut waiting = pin!(limiter.acquire());
        assert!(poll!(waiting.as_mut()).is_pending(), "the second one waits");
        assert_eq!(limiter.waiting(), 1);
        assert!(
            limiter
                .acquire()
                .now_or_never()
                .expect("answers at once")
                .is_none(),
            "the third one is shed: the line is full"
        );
        drop(running);
        let second = waiting.await.expect("the waiting one gets its turn");
        assert_eq!(limiter.waiting(), 0);
        drop(second);
        assert!(limiter.try_acquire().is_some());
    }

    #[tokio::test]
    async fn a_request_that_gives_up_leaves_the_line() {
        let limiter = Limiter::new(ClassLimit {
            concurrent: 1,
            queue: 1,
            retry_after: 1,
        });
        let _running = limiter.acquire().await.expect("a free turn");
        {
            let mut waiting = pin!(limiter.acquire());
            assert!(poll!(waiting.as_mut()).is_pending());
            assert_eq!(limiter.waiting(), 1);
        }
        assert_eq!(limiter.waiting(), 0, "a dropped request is out of the line");
        let mut again = pin!(limiter.acquire());
        assert!(poll!(again.as_mut()).is_pending(), "so another may wait");
    }
}
