//! UK postcodes: an outward code (`LS1`, `SW1A`) and an inward code (`4AP`), any case, with
//! or without the space between.

use super::scan::{ends_word, skip_spaces, starts_word};

/// Marks every full UK postcode in `chars`, following Royal Mail's format: the outward code
/// is `A9`, `A99`, `A9A`, `AA9`, `AA99` or `AA9A` (no Q, V or X first, no I, J or Z second),
/// the inward code is a digit and two letters other than C, I, K, M, O and V; `GIR 0AA` too.
/// The letter rules keep times such as `2pm` from completing a postcode.
pub(super) fn find(chars: &[char], spans: &mut Vec<(usize, usize)>) {
    for start in 0..chars.len() {
        if chars[start].is_ascii_alphabetic()
            && starts_word(chars, start)
            && let Some(end) = postcode_at(chars, start)
        {
            spans.push((start, end));
        }
    }
}

/// The end of a postcode starting at `start`, if one does.
fn postcode_at(chars: &[char], start: usize) -> Option<usize> {
    let at = |i: usize| chars.get(i).map(char::to_ascii_uppercase);
    let is_in = |i: usize, allowed: &str| at(i).is_some_and(|c| allowed.contains(c));
    const LETTERS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const DIGITS: &str = "0123456789";
    if (at(start), at(start + 1), at(start + 2)) == (Some('G'), Some('I'), Some('R')) {
        return inward_at(chars, start + 3);
    }
    if !is_in(start, "ABCDEFGHIJKLMNOPRSTUWYZ") {
        return None;
    }
    let two_letters = is_in(start + 1, LETTERS);
    if two_letters && !is_in(start + 1, "ABCDEFGHKLMNOPQRSTUVWXY") {
        return None;
    }
    let digit = start + 1 + usize::from(two_letters);
    if !is_in(digit, DIGITS) {
        return None;
    }
    // The outward code may end with one more digit or letter; which one it is can only be
    // told from what follows (`LS14AP` is `LS1 4AP`, `SW1A1AA` is `SW1A 1AA`).
    let last_letters = if two_letters {
        "ABEHMNPRVWXY"
    } else {
        "ABCDEFGHJKPSTUW"
    };
    let longer = (is_in(digit + 1, DIGITS) || is_in(digit + 1, last_letters))
        .then(|| inward_at(chars, digit + 2))
        .flatten();
    longer.or_else(|| inward_at(chars, digit + 1))
}

/// The end of an inward code after up to three spaces from `at`, if one is there and ends
/// the word.
fn inward_at(chars: &[char], at: usize) -> Option<usize> {
    const INWARD_LETTERS: &str = "ABDEFGHJLNPQRSTUWXYZ";
    let i = skip_spaces(chars, at);
    let ok = chars.get(i).is_some_and(char::is_ascii_digit)
        && (1..3).all(|k| {
            chars
                .get(i + k)
                .is_some_and(|c| INWARD_LETTERS.contains(c.to_ascii_uppercase()))
        });
    (ok && ends_word(chars, i + 3)).then_some(i + 3)
}
