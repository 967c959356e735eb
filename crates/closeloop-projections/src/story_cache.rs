//! [`StoryCache`]: redacted stories of the public page, bounded in entries and bytes.
//!
//! The "you said, we did" read model keeps no story text. The public page reads a loop's
//! story from the store, redacts it and keeps the result here, so that repeated requests do
//! not read the store again. An erasure must not leave a story behind, so the cache can drop
//! one entry or all of them, and a story read before an erasure cannot be put back after it
//! (see [`StoryCache::epoch`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::published::PublicKey;

/// A bounded cache of redacted stories by [`PublicKey`], least recently used out first.
///
/// It is shared between requests (`&self` methods, one short lock each). A story is kept
/// only while the cache holds at most `max_entries` stories and `max_bytes` bytes of story
/// text; a story larger than `max_bytes` on its own is not kept at all.
#[derive(Debug)]
pub struct StoryCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each story and the tick it was last used at.
    stories: HashMap<PublicKey, (Arc<str>, u64)>,
    /// Keys by the tick they were last used at: the first is the next to go.
    by_use: BTreeMap<u64, PublicKey>,
    bytes: usize,
    tick: u64,
    /// Moves on every invalidation, so that an insert based on an earlier read is dropped.
    epoch: u64,
}

/// Which invalidations a story read from the store has seen; from [`StoryCache::epoch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(u64);

impl StoryCache {
    /// An empty cache of at most `max_entries` stories and `max_bytes` bytes of story text.
    #[must_use]
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The story cached for `key`, if any; marks it as just used.
    pub fn get(&self, key: &PublicKey) -> Option<Arc<str>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (story, used) = inner.stories.get_mut(key)?;
        let (story, old) = (Arc::clone(story), std::mem::replace(used, tick));
        inner.by_use.remove(&old);
        inner.by_use.insert(tick, key.clone());
        Some(story)
    }

    /// The current epoch: take it **before** reading a story from the store and pass it to
    /// [`insert`](Self::insert), which drops the story if an invalidation came in between.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.lock().epoch)
    }

    /// Keeps `story` (already redacted) for `key`, read from the store at `epoch`. Evicts the
    /// least recently used stories to stay within bounds. Returns whether it was kept: not
    /// when it is larger than the whole cache, or when an invalidation happened since `epoch`
    /// (the story may be one that was just erased).
    pub fn insert(&self, key: PublicKey, story: Arc<str>, epoch: Epoch) -> bool {
        if self.max_entries == 0 || story.len() > self.max_bytes {
            return false;
        }
        let mut inner = self.lock();
        if inner.epoch != epoch.0 {
            return false;
        }
        inner.remove(&key);
        while inner.stories.len() >= self.max_entries || inner.bytes + story.len() > self.max_bytes
        {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            inner.remove(&oldest);
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.bytes += story.len();
        inner.by_use.insert(tick, key.clone());
        inner.stories.insert(key, (story, tick));
        true
    }

    /// Forgets the story of `key` (after an erasure, for example).
    pub fn invalidate(&self, key: &PublicKey) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.remove(key);
    }

    /// Forgets every story.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.clear();
    }

    /// How many stories are cached.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().stories.len()
    }

    /// Whether no story is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many bytes of story text are cached.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The lock. A panic while it was held may have left the maps out of step, and a cache
    /// can always start again empty, so a poisoned cache is cleared rather than trusted.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => {
                let mut inner = poisoned.into_inner();
                inner.epoch += 1;
                inner.clear();
                self.inner.clear_poison();
                inner
            }
        }
    }
}

impl Inner {
    fn remove(&mut self, key: &PublicKey) {
        if let Some((story, tick)) = self.stories.remove(key) {
            self.by_use.remove(&tick);
            self.bytes -= story.len();
        }
    }

    fn clear(&mut self) {
        self.stories.clear();
        self.by_use.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> PublicKey {
        PublicKey::of_loop(raw)
    }

    fn story(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    #[test]
    fn a_poisoned_cache_starts_again_empty() {
        let cache = Arc::new(StoryCache::new(4, 100));
        assert!(cache.insert(key("a"), story("x"), cache.epoch()));
        let shared = Arc::clone(&cache);
        let _ = std::thread::spawn(move || {
            let _guard = shared.inner.lock();
            panic!("poison the cache");
        })
        .join();
        assert!(cache.inner.is_poisoned());
        assert_eq!(cache.get(&key("a")), None);
        assert!(!cache.inner.is_poisoned());
        assert!(cache.insert(key("a"), story("y"), cache.epoch()));
        assert_eq!(cache.get(&key("a")).as_deref(), Some("y"));
    }
}
