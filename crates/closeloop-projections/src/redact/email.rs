//! E-mail addresses: `local@domain.tld`.

/// Marks every e-mail address in `chars`.
///
/// Each `@` is read outwards to the characters an address may hold, so every character is
/// read at most twice (once from the `@` before it, once from the one after).
pub(super) fn find(chars: &[char], spans: &mut Vec<(usize, usize)>) {
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
