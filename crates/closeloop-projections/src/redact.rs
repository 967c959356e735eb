//! Redaction of a story before it is shown in public: the author's name, e-mail addresses and
//! phone numbers become `[redacted]`, and characters that could hide or reorder text on the
//! page are removed.
//!
//! Every detector marks character spans on the original text; overlapping spans merge and each
//! is replaced once, so a replacement is never matched again.

/// What a redacted span becomes.
pub const REDACTED: &str = "[redacted]";

/// `story` with the author's name, e-mail addresses and phone numbers replaced by
/// `[redacted]`.
///
/// - Control characters other than newline and tab, and the bidirectional embedding,
///   override and isolate characters (U+202A–U+202E, U+2066–U+2069), are removed first: they
///   could reorder or hide text on the public page, and removing them before the detectors
///   run means none can split a name or a number to slip it through.
/// - The name matches case-insensitively on word boundaries, whole and word by word (each
///   word of two letters or more: "Jo Bloggs" also hides "Bloggs" and "jo").
/// - E-mail addresses: `local@domain.tld`.
/// - Phone numbers in UK styles: `07700 900123`, `07700900123`, `+44 7700 900123`,
///   `+44 (0)20 7946 0000`, `020 7946 0000`, `(01632) 960 000`, `0161-496-0000`, …: a
///   national number of 10 or 11 digits starting with 0, or `+44` and 9 or 10 digits, in
///   groups separated by single spaces, hyphens or dots.
#[must_use]
pub fn redact(story: &str, author_name: Option<&str>) -> String {
    let chars: Vec<char> = story.chars().filter(|&c| is_shown(c)).collect();
    let mut spans = Vec::new();
    emails(&chars, &mut spans);
    phones(&chars, &mut spans);
    if let Some(name) = author_name {
        let name: String = name.chars().filter(|&c| is_shown(c)).collect();
        names(&chars, &name, &mut spans);
    }
    if spans.is_empty() {
        return chars.into_iter().collect();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(story.len());
    let mut at = 0;
    for (start, end) in spans {
        if end <= at {
            continue;
        }
        if start >= at {
            out.extend(&chars[at..start]);
            out.push_str(REDACTED);
        }
        at = end;
    }
    out.extend(&chars[at..]);
    out
}

/// Whether a character may reach the public page: not a control character (newline and tab
/// excepted) nor a bidirectional embedding, override or isolate character.
fn is_shown(c: char) -> bool {
    let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    !bidi && (!c.is_control() || c == '\n' || c == '\t')
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric()
}

fn emails(chars: &[char], spans: &mut Vec<(usize, usize)>) {
    let local = |c: char| c.is_alphanumeric() || "._%+-'".contains(c);
    let domain = |c: char| c.is_alphanumeric() || c == '.' || c == '-';
    for (at, &c) in chars.iter().enumerate() {
        if c != '@' {
            continue;
        }
        let mut start = at;
        while start > 0 && local(chars[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < chars.len() && domain(chars[end]) {
            end += 1;
        }
        // A sentence may end right after the address.
        while end > at + 1 && matches!(chars[end - 1], '.' | '-') {
            end -= 1;
        }
        let host = &chars[at + 1..end];
        let dot = host.iter().rposition(|&c| c == '.');
        let valid_tld = dot.is_some_and(|d| {
            d > 0 && host.len() - d > 2 && host[d + 1..].iter().all(|c| c.is_alphabetic())
        });
        if start < at && valid_tld {
            spans.push((start, end));
        }
    }
}

fn phones(chars: &[char], spans: &mut Vec<(usize, usize)>) {
    let mut at = 0;
    while at < chars.len() {
        let boundary = at == 0 || !(is_word(chars[at - 1]) || chars[at - 1] == '+');
        if boundary && let Some(end) = phone_at(chars, at) {
            spans.push((at, end));
            at = end;
        } else {
            at += 1;
        }
    }
}

/// The end of a UK phone number starting at `start`, if one does.
fn phone_at(chars: &[char], start: usize) -> Option<usize> {
    let at = |i: usize| chars.get(i).copied();
    let digit = |i: usize| at(i).is_some_and(|c| c.is_ascii_digit());
    let mut i = start;
    // How many digits the number has and may have, not counting the `44` of `+44`.
    let (min, max);
    let mut digits = 0;
    let mut in_parens = false;
    match at(i)? {
        '+' => {
            i += 1;
            if at(i) == Some(' ') {
                i += 1;
            }
            if at(i) != Some('4') || at(i + 1) != Some('4') {
                return None;
            }
            i += 2;
            if matches!(at(i), Some(' ' | '-' | '.')) {
                i += 1;
            }
            // `+44 (0)20 …`: the trunk zero some people write anyway.
            if at(i) == Some('(') && at(i + 1) == Some('0') && at(i + 2) == Some(')') {
                i += 3;
                if at(i) == Some(' ') {
                    i += 1;
                }
            }
            if !digit(i) || at(i) == Some('0') {
                return None;
            }
            (min, max) = (9, 10);
        }
        '(' => {
            if at(i + 1) != Some('0') {
                return None;
            }
            i += 1;
            in_parens = true;
            (min, max) = (10, 11);
        }
        '0' => (min, max) = (10, 11),
        _ => return None,
    }
    let mut end = None;
    loop {
        let group_start = i;
        while digit(i) {
            i += 1;
        }
        let group = i - group_start;
        if group == 0 || digits + group > max {
            break;
        }
        digits += group;
        end = Some(i);
        if in_parens {
            if at(i) != Some(')') {
                return None;
            }
            i += 1;
            end = Some(i);
            in_parens = false;
            if at(i) == Some(' ') || at(i) == Some('-') {
                i += 1;
            }
            continue;
        }
        if matches!(at(i), Some(' ' | '-' | '.')) && digit(i + 1) {
            i += 1;
        } else {
            break;
        }
    }
    let end = end?;
    let followed_by_word = at(end).is_some_and(|c| is_word(c) || c == '@');
    (!in_parens && (min..=max).contains(&digits) && !followed_by_word).then_some(end)
}

fn names(chars: &[char], name: &str, spans: &mut Vec<(usize, usize)>) {
    let mut needles: Vec<Vec<char>> = Vec::new();
    let whole: Vec<char> = name.trim().chars().map(fold).collect();
    if whole.iter().filter(|c| c.is_alphabetic()).count() >= 2 {
        needles.push(whole);
    }
    // Whole words ("Smith-Jones") and their hyphenated parts ("Smith", "Jones").
    let words = name
        .split(|c: char| c.is_whitespace() || c == ',')
        .flat_map(|word| std::iter::once(word).chain(word.split('-')));
    for word in words {
        let word: Vec<char> = word
            .trim_matches(|c: char| !c.is_alphanumeric())
            .chars()
            .map(fold)
            .collect();
        if word.iter().filter(|c| c.is_alphabetic()).count() >= 2 && !needles.contains(&word) {
            needles.push(word);
        }
    }
    let folded: Vec<char> = chars.iter().copied().map(fold).collect();
    for needle in &needles {
        let n = needle.len();
        if n == 0 || n > folded.len() {
            continue;
        }
        for start in 0..=folded.len() - n {
            let before_ok = start == 0 || !is_word(folded[start - 1]);
            let after_ok = start + n == folded.len() || !is_word(folded[start + n]);
            if before_ok && after_ok && folded[start..start + n] == needle[..] {
                spans.push((start, start + n));
            }
        }
    }
}

/// One character, case-folded to one character, so that positions stay the same.
fn fold(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_plain_text_alone() {
        let story = "Ward 7 was clean; I waited 40 minutes on 01/02/2026 and paid £0.50.";
        assert_eq!(redact(story, Some("Jo Bloggs")), story);
    }
}
