//! Character classes and small scanners shared by the detectors.

/// The most spaces a detector accepts in one place inside a number or a postcode.
const MAX_SPACES: usize = 3;

/// A letter or a digit: what words and numbers are made of.
pub(super) fn is_word(c: char) -> bool {
    c.is_alphanumeric()
}

/// A combining mark of the common blocks (diacritics written as a separate character, as in
/// a story stored decomposed): part of the word it follows.
pub(super) fn is_mark(c: char) -> bool {
    matches!(
        c,
        '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}'
    )
}

/// A space inside a line: the plain space and the no-break, thin and other fixed-width
/// spaces a word processor puts between the groups of a number.
pub(super) fn is_inline_space(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// A hyphen or dash people put between groups of digits or parts of a name.
pub(super) fn is_hyphen(c: char) -> bool {
    matches!(c, '-' | '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}')
}

/// Whether a word or number may start at `at`: it is the first character or follows a
/// character that is not a letter or digit.
pub(super) fn starts_word(chars: &[char], at: usize) -> bool {
    at == 0 || !is_word(chars[at - 1])
}

/// Whether a word or number may end just before `end`: it is the end of the text or a
/// character that is not a letter or digit.
pub(super) fn ends_word(chars: &[char], end: usize) -> bool {
    chars.get(end).is_none_or(|&c| !is_word(c))
}

/// Whether the character at `i` is an ASCII digit.
pub(super) fn is_digit_at(chars: &[char], i: usize) -> bool {
    chars.get(i).is_some_and(char::is_ascii_digit)
}

/// How many ASCII digits follow from `at`, counting no further than `cap + 1` so that a
/// long run costs no more than a short one.
pub(super) fn digit_run(chars: &[char], at: usize, cap: usize) -> usize {
    chars
        .iter()
        .skip(at)
        .take(cap + 1)
        .take_while(|c| c.is_ascii_digit())
        .count()
}

/// The end of up to three inline spaces from `at`.
pub(super) fn skip_spaces(chars: &[char], at: usize) -> usize {
    let mut i = at;
    while i < at + MAX_SPACES && chars.get(i).is_some_and(|&c| is_inline_space(c)) {
        i += 1;
    }
    i
}

/// The separator between two groups of digits from `at`: up to three spaces, or one hyphen
/// or character of `punctuation` with up to three spaces on either side. Returns where it
/// ends and the punctuation it holds, or `None` when there is no separator at `at`.
pub(super) fn separator(
    chars: &[char],
    at: usize,
    punctuation: &[char],
) -> Option<(usize, Option<char>)> {
    let mut i = skip_spaces(chars, at);
    let mut mark = None;
    if let Some(&c) = chars.get(i)
        && (is_hyphen(c) || punctuation.contains(&c))
    {
        mark = Some(c);
        i = skip_spaces(chars, i + 1);
    }
    (i > at).then_some((i, mark))
}
