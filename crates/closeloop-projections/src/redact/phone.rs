//! Phone numbers: UK national numbers and international ones, in the groupings people write.

use super::scan::{digit_run, is_digit_at, is_word, separator, skip_spaces};

/// What may separate two groups of digits besides spaces and hyphens.
const PUNCTUATION: &[char] = &['.', '/'];

/// Marks every phone number in `chars`.
///
/// A number starts where a word may start (and not right after a `+`); from there
/// [`number_at`] reads at most 16 digits and the short separators between them, so the scan
/// is linear.
pub(super) fn find(chars: &[char], spans: &mut Vec<(usize, usize)>) {
    let mut at = 0;
    while at < chars.len() {
        let boundary = at == 0 || !(is_word(chars[at - 1]) || chars[at - 1] == '+');
        if boundary && let Some(end) = number_at(chars, at) {
            spans.push((at, end));
            at = end;
        } else {
            at += 1;
        }
    }
}

/// How a number is written, which sets how many digits it may have.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `0…`: 10 or 11 digits with the leading 0, the first group of 3 digits or more (an area
    /// code), so that dates like `01/02/2026 14` are not taken for numbers.
    National,
    /// `+…` or `00…`: 8 to 15 digits after the prefix (E.164's longest), and one group in
    /// brackets, such as the `(0)` of `+44 (0)20 …`, after the country code.
    International,
}

impl Kind {
    fn digits(self) -> std::ops::RangeInclusive<usize> {
        match self {
            Kind::National => 10..=11,
            Kind::International => 8..=15,
        }
    }
}

/// The end of a phone number starting at `start`, if one does.
fn number_at(chars: &[char], start: usize) -> Option<usize> {
    let at = |i: usize| chars.get(i).copied();
    let mut i = start;
    let kind = match at(i)? {
        '+' => {
            i += 1;
            if at(i) == Some(' ') {
                i += 1;
            }
            Kind::International
        }
        '0' if at(i + 1) == Some('0') => {
            i += 2;
            Kind::International
        }
        '0' | '(' => Kind::National,
        _ => return None,
    };
    // A country code never starts with 0, nor does an international call's prefix.
    if kind == Kind::International && (!is_digit_at(chars, i) || at(i) == Some('0')) {
        return None;
    }
    let max = *kind.digits().end();
    let mut digits = 0;
    let mut groups = 0;
    let mut brackets_used = false;
    let mut slashes = 0;
    // Where the number could end, after each group, with the digits read so far.
    let mut ends: Vec<(usize, usize)> = Vec::new();
    loop {
        // National numbers may bracket their first group, `(0113) 496 0000`; international
        // ones one group after the country code.
        let may_open = !brackets_used
            && match kind {
                Kind::National => groups == 0,
                Kind::International => groups > 0,
            };
        let opened = may_open && at(i) == Some('(');
        if opened {
            i += 1;
            brackets_used = true;
        }
        let group = digit_run(chars, i, max);
        if group == 0 || digits + group > max {
            break;
        }
        if kind == Kind::National && groups == 0 && (group < 3 || at(i) != Some('0')) {
            return None;
        }
        i += group;
        if opened {
            if at(i) != Some(')') {
                break;
            }
            i += 1;
        }
        digits += group;
        groups += 1;
        ends.push((i, digits));
        // After a closing bracket the separator is optional (`(0113)4960000`,
        // `+44(0)7700…`); between plain groups one is needed.
        let next = match separator(chars, i, PUNCTUATION) {
            Some((next, mark)) => {
                if mark == Some('/') {
                    slashes += 1;
                }
                next
            }
            None if opened => skip_spaces(chars, i),
            None if at(i) == Some('(') => i,
            None => break,
        };
        // Two slashes make a date (`07/03/2026`), not a number.
        if slashes > 1 {
            break;
        }
        let more = is_digit_at(chars, next)
            || (at(next) == Some('(') && !brackets_used && kind == Kind::International);
        if !more {
            break;
        }
        i = next;
    }
    // The longest reading that has the right number of digits and ends a word: in
    // `+353 1 234 5678 2pm` the number ends before the `2` of `2pm`.
    ends.into_iter().rev().find_map(|(end, digits)| {
        let followed_by_word = at(end).is_some_and(|c| is_word(c) || c == '@');
        (kind.digits().contains(&digits) && !followed_by_word).then_some(end)
    })
}
