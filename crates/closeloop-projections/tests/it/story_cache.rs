//! `StoryCache`: bounded in entries and bytes, least recently used out first, and an
//! invalidation is never undone by a story read before it.

use std::sync::Arc;

use closeloop_projections::{PublicKey, StoryCache};

fn key(raw: &str) -> PublicKey {
    PublicKey::of_loop(raw)
}

fn story(text: &str) -> Arc<str> {
    Arc::from(text)
}

fn get(cache: &StoryCache, raw: &str) -> Option<String> {
    cache.get(&key(raw)).map(|s| s.to_string())
}

#[test]
fn holds_at_most_its_capacity_and_drops_the_least_recently_used() {
    let cache = StoryCache::new(2, 1_000);
    assert!(cache.insert(key("a"), story("story a"), cache.epoch()));
    assert!(cache.insert(key("b"), story("story b"), cache.epoch()));
    // Using `a` makes `b` the least recently used.
    assert_eq!(get(&cache, "a").as_deref(), Some("story a"));
    assert!(cache.insert(key("c"), story("story c"), cache.epoch()));
    assert_eq!(cache.len(), 2);
    assert_eq!(get(&cache, "b"), None);
    assert_eq!(get(&cache, "a").as_deref(), Some("story a"));
    assert_eq!(get(&cache, "c").as_deref(), Some("story c"));
    // Replacing a story keeps one entry for its key.
    assert!(cache.insert(key("c"), story("story c2"), cache.epoch()));
    assert_eq!(
        (cache.len(), get(&cache, "c").as_deref()),
        (2, Some("story c2"))
    );
}

#[test]
fn holds_at_most_its_bytes() {
    let cache = StoryCache::new(100, 10);
    assert!(cache.insert(key("a"), story("12345"), cache.epoch()));
    assert!(cache.insert(key("b"), story("12345"), cache.epoch()));
    assert_eq!(cache.bytes(), 10);
    assert!(cache.insert(key("c"), story("123"), cache.epoch()));
    assert!(cache.bytes() <= 10);
    assert_eq!(get(&cache, "a"), None, "the oldest made room");
    // A story larger than the whole cache is not kept, and evicts nothing.
    assert!(!cache.insert(key("d"), story("12345678901"), cache.epoch()));
    assert_eq!(get(&cache, "d"), None);
    assert_eq!(cache.len(), 2);
}

#[test]
fn invalidate_and_clear_forget_stories() {
    let cache = StoryCache::new(10, 1_000);
    for raw in ["a", "b", "c"] {
        assert!(cache.insert(key(raw), story(raw), cache.epoch()));
    }
    cache.invalidate(&key("b"));
    assert_eq!(get(&cache, "b"), None);
    assert_eq!(get(&cache, "a").as_deref(), Some("a"));
    cache.clear();
    assert!(cache.is_empty());
    assert_eq!(cache.bytes(), 0);
    assert_eq!(get(&cache, "a"), None);
}

#[test]
fn a_story_read_before_an_invalidation_is_not_put_back() {
    let cache = StoryCache::new(10, 1_000);
    // A request reads the story from the store...
    let epoch = cache.epoch();
    // ...an erasure invalidates it meanwhile...
    cache.invalidate(&key("a"));
    // ...and the story read before it must not come back.
    assert!(!cache.insert(key("a"), story("erased story"), epoch));
    assert_eq!(get(&cache, "a"), None);
    let epoch = cache.epoch();
    cache.clear();
    assert!(!cache.insert(key("a"), story("erased story"), epoch));
    assert!(cache.insert(key("a"), story("[erased]"), cache.epoch()));
}
