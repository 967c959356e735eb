//! The author's name, matched with case, accents and apostrophes folded.
//!
//! A name is read as *parts* (runs of letters, digits and combining marks) joined into
//! *words* by apostrophes inside them: "O'Brien" is one word of two parts. The story is read
//! the same way, and three things are marked:
//!
//! 1. Every word or part of the story whose folded form is one of the name's words or parts
//!    of two letters or more ("Jo Bloggs" hides "jo" in "jo's"; "Zoë O'Brien" hides
//!    "Zoe", "O’Brien", "OBRIEN" and the "Brien" of "O Brien").
//! 2. The whole name, as its folded letters in a row across the story's parts, when the
//!    parts are joined only by spaces, hyphens, full stops or apostrophes: this catches
//!    initials and particles with the rest of the name ("A. J. Smith-Jones", "de la Cruz")
//!    and other spacings ("Zoe O Brien", "JoBloggs"). The search is Knuth–Morris–Pratt,
//!    linear in the story and the name.
//! 3. Marks separated only by spaces or hyphens merge, so "Jo Bloggs" becomes one
//!    `[redacted]` rather than two.
//!
//! Words of one letter are not matched alone: an initial identifies no one, and "a" or "I"
//! would be hidden all through the story. Words of two letters are, because many given names
//! and surnames are that short (Jo, Al, Ed, Li, Wu, Ng). Titles ("Mrs", "Dr") are not
//! matched alone, and neither are name particles ("de", "van", "al") after the first word:
//! alone they identify no one and are ordinary words ("the van was late"), while as the
//! first word they are a given name ("Al", "Van").

use std::collections::HashSet;

use super::fold::fold;
use super::scan::{is_hyphen, is_inline_space, is_mark, is_word};

/// Titles and suffixes, folded: never matched alone.
const TITLES: &[&str] = &[
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "rev", "revd", "lord", "lady",
    "jr", "jnr", "sr", "snr", "ii", "iii", "iv",
];

/// Name particles, folded: not matched alone unless they are the name's first word.
const PARTICLES: &[&str] = &[
    "al", "ap", "bin", "bint", "da", "das", "de", "del", "della", "den", "der", "des", "di", "do",
    "dos", "du", "el", "ibn", "la", "le", "st", "te", "ten", "ter", "van", "von",
];

/// The most characters between two parts that still join them (into the whole name, or two
/// marks into one).
const MAX_JOIN: usize = 3;

/// Marks every occurrence of the author's `name` in `chars`.
pub(super) fn find(chars: &[char], name: &[char], spans: &mut Vec<(usize, usize)>) {
    let name_words = words(name);
    let mut keys = HashSet::new();
    let mut whole: Vec<char> = Vec::new();
    let mut first = true;
    for word in &name_words {
        let key = word.key(name);
        if TITLES.contains(&key.as_str()) {
            continue;
        }
        whole.extend(key.chars());
        let mut add = |key: String| {
            let letters = key.chars().filter(|c| c.is_alphabetic()).count();
            let particle = !first && PARTICLES.contains(&key.as_str());
            if letters >= 2 && !particle && !TITLES.contains(&key.as_str()) {
                keys.insert(key);
            }
        };
        add(key);
        if word.parts.len() > 1 {
            for &part in &word.parts {
                add(folded(&name[part.0..part.1]));
            }
        }
        first = false;
    }
    let mut found = Vec::new();
    for word in words(chars) {
        if keys.contains(&word.key(chars)) {
            found.push(word.span());
        } else if word.parts.len() > 1 {
            for &part in &word.parts {
                if keys.contains(&folded(&chars[part.0..part.1])) {
                    found.push(part);
                }
            }
        }
    }
    if whole.iter().filter(|c| c.is_alphabetic()).count() >= 2 {
        whole_name(chars, &whole, &mut found);
    }
    merge_neighbours(chars, &mut found);
    spans.extend(found);
}

/// A word: parts joined by apostrophes, each part a span of characters.
struct Word {
    parts: Vec<(usize, usize)>,
}

impl Word {
    fn span(&self) -> (usize, usize) {
        (self.parts[0].0, self.parts[self.parts.len() - 1].1)
    }

    /// The word's folded letters, apostrophes left out.
    fn key(&self, chars: &[char]) -> String {
        let mut key = String::new();
        for &(start, end) in &self.parts {
            for &c in &chars[start..end] {
                fold(c, &mut |f| key.push(f));
            }
        }
        key
    }
}

fn folded(chars: &[char]) -> String {
    let mut key = String::new();
    for &c in chars {
        fold(c, &mut |f| key.push(f));
    }
    key
}

/// A letter, digit or combining mark; not an apostrophe, although U+02BC (modifier letter
/// apostrophe) counts as a letter in Unicode.
fn is_part_char(c: char) -> bool {
    (is_word(c) || is_mark(c)) && !is_apostrophe(c)
}

/// An apostrophe, or a character typed in its place.
fn is_apostrophe(c: char) -> bool {
    matches!(
        c,
        '\'' | '\u{2019}' | '\u{2018}' | '\u{02BC}' | '`' | '\u{00B4}' | '\u{2032}'
    )
}

/// What may stand between two parts of a name written out: spaces, hyphens, full stops
/// (after initials) and apostrophes.
fn joins_name(c: char) -> bool {
    is_inline_space(c) || is_hyphen(c) || c == '.' || is_apostrophe(c)
}

/// The parts of `chars`, in order.
fn parts(chars: &[char]) -> Vec<(usize, usize)> {
    let mut parts = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        if is_part_char(chars[at]) {
            let start = at;
            while at < chars.len() && is_part_char(chars[at]) {
                at += 1;
            }
            parts.push((start, at));
        } else {
            at += 1;
        }
    }
    parts
}

/// The words of `chars`, in order: parts separated by exactly one apostrophe are one word.
fn words(chars: &[char]) -> Vec<Word> {
    let mut words: Vec<Word> = Vec::new();
    let mut previous_end = None;
    for part in parts(chars) {
        let joined =
            previous_end.is_some_and(|end: usize| part.0 == end + 1 && is_apostrophe(chars[end]));
        match words.last_mut() {
            Some(word) if joined => word.parts.push(part),
            _ => words.push(Word { parts: vec![part] }),
        }
        previous_end = Some(part.1);
    }
    words
}

/// Marks the whole name (`needle`, its folded letters in a row) wherever the story's parts
/// spell it, starting at the start of a part and ending at the end of one, with only
/// [`joins_name`] characters between them.
fn whole_name(chars: &[char], needle: &[char], found: &mut Vec<(usize, usize)>) {
    // The story's folded letters, with where each came from and whether a part starts or
    // ends there; `None` stands for a gap the name cannot cross.
    let mut letters: Vec<Option<char>> = Vec::with_capacity(chars.len());
    let mut origin: Vec<usize> = Vec::with_capacity(chars.len());
    let mut part_starts: Vec<bool> = Vec::with_capacity(chars.len());
    let mut part_ends: Vec<bool> = Vec::with_capacity(chars.len());
    let mut previous_end: Option<usize> = None;
    for (start, end) in parts(chars) {
        if let Some(gap_start) = previous_end {
            let gap = &chars[gap_start..start];
            if gap.len() > MAX_JOIN || !gap.iter().all(|&c| joins_name(c)) {
                letters.push(None);
                origin.push(gap_start);
                part_starts.push(false);
                part_ends.push(false);
            }
        }
        let first = letters.len();
        for (i, &c) in chars.iter().enumerate().take(end).skip(start) {
            fold(c, &mut |f| {
                letters.push(Some(f));
                origin.push(i);
                part_starts.push(false);
                part_ends.push(false);
            });
        }
        if letters.len() > first {
            part_starts[first] = true;
            let last = letters.len() - 1;
            part_ends[last] = true;
        }
        previous_end = Some(end);
    }
    let fail = failure_function(needle);
    let mut matched = 0;
    for (at, &letter) in letters.iter().enumerate() {
        while matched > 0 && letter != Some(needle[matched]) {
            matched = fail[matched - 1];
        }
        if letter == Some(needle[matched]) {
            matched += 1;
        }
        if matched == needle.len() {
            let first = at + 1 - needle.len();
            if part_starts[first] && part_ends[at] {
                let mut end = origin[at] + 1;
                while end < chars.len() && is_mark(chars[end]) {
                    end += 1;
                }
                found.push((origin[first], end));
            }
            matched = fail[matched - 1];
        }
    }
}

/// Knuth–Morris–Pratt's table: for each prefix of `needle`, the length of its longest proper
/// prefix that is also its suffix.
fn failure_function(needle: &[char]) -> Vec<usize> {
    let mut fail = vec![0; needle.len()];
    let mut k = 0;
    for i in 1..needle.len() {
        while k > 0 && needle[i] != needle[k] {
            k = fail[k - 1];
        }
        if needle[i] == needle[k] {
            k += 1;
        }
        fail[i] = k;
    }
    fail
}

/// Sorts `found` and merges marks that overlap or are separated only by up to three spaces
/// or hyphens.
fn merge_neighbours(chars: &[char], found: &mut Vec<(usize, usize)>) {
    found.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(found.len());
    for &(start, end) in found.iter() {
        if let Some(last) = merged.last_mut() {
            let joined = start <= last.1
                || (start - last.1 <= MAX_JOIN
                    && chars[last.1..start]
                        .iter()
                        .all(|&c| is_inline_space(c) || is_hyphen(c)));
            if joined {
                last.1 = last.1.max(end);
                continue;
            }
        }
        merged.push((start, end));
    }
    *found = merged;
}
