//! What the read models take from one event at most.
//!
//! The write path refuses oversized input, but the log may hold events stored before those
//! limits existed, and the read models must be buildable from any stored log. So the
//! projections cap what they keep from each event themselves: a loop with 60,000 themes in the
//! log is projected with its first [`MAX_THEMES`], and every read's cost stays bounded by these
//! numbers whatever the log holds. Events within today's limits are projected unchanged.

/// The most themes kept per loop (the first ones, in the order given).
pub const MAX_THEMES: usize = 50;
/// The most seldom-heard tags kept per loop (the first ones, in the order given).
pub const MAX_TAGS: usize = 20;
/// The most ratings kept per loop (the first ones by name).
pub const MAX_RATINGS: usize = 20;
/// The longest theme, tag or rating name kept, in bytes; longer ones are cut on a character
/// boundary.
pub const MAX_NAME_BYTES: usize = 100;
/// The longest change description kept for the public page, in bytes; longer ones are cut
/// on a character boundary.
pub const MAX_DESCRIPTION_BYTES: usize = 20_000;
/// The most change descriptions kept per loop for the public page (the first ones recorded
/// since the loop was received or last reopened).
pub const MAX_CHANGES_PER_LOOP: usize = 20;

/// `text` cut to at most `max` bytes, on a character boundary.
#[must_use]
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "é" is two bytes: cutting inside it keeps the text before it.
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("aé", 3), "aé");
        assert_eq!(truncate("日本", 4), "日");
        assert_eq!(truncate("", 0), "");
    }
}
