//! What must never show on a public page: loop ids, the names and contacts of the people who
//! gave feedback, and anything shaped like an e-mail address or a phone number.

/// The demo's named authors (`Name = contact` a line), as `closeloop demo` records them.
const DEMO_AUTHORS: &str = include_str!("../../../crates/closeloop/src/commands/demo-authors.txt");

/// The names and contacts of the demo's authors.
pub fn demo_authors() -> Vec<(&'static str, &'static str)> {
    DEMO_AUTHORS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, contact)| (name.trim(), contact.trim()))
        .collect()
}

/// Everything personal found in `text` (a page's text or HTML): each of `names` and `contacts`
/// (a name also by each of its words of three letters or more, as whole words), each of
/// `loop_ids`, and any e-mail address or run of 10 or more digits (a phone number).
pub fn found(text: &str, names: &[&str], contacts: &[&str], loop_ids: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-')
        .collect();
    for name in names {
        if text.contains(name) {
            found.push(format!("the author's name {name:?}"));
        }
        for part in name
            .split_whitespace()
            .filter(|part| part.chars().count() >= 3)
        {
            if words.contains(&part) {
                found.push(format!("{part:?} of the author's name {name:?}"));
            }
        }
    }
    for contact in contacts {
        if text.contains(contact) {
            found.push(format!("the contact {contact:?}"));
        }
    }
    for loop_id in loop_ids {
        if text.contains(loop_id) {
            found.push(format!("the loop id {loop_id:?}"));
        }
    }
    for word in text.split_whitespace() {
        let word = word.trim_matches(|c: char| !c.is_alphanumeric());
        if let Some((local, domain)) = word.split_once('@')
            && !local.is_empty()
            && domain.contains('.')
        {
            found.push(format!("an e-mail address {word:?}"));
        }
    }
    found.extend(
        phone_numbers(text)
            .into_iter()
            .map(|n| format!("a phone number {n:?}")),
    );
    found
}

/// A page's source without its inline SVG drawings (the NHS logo, charts), whose path data are
/// runs of coordinates, and without scripts (the pages have none; the tests inject axe-core,
/// whose source is full of numbers), nor hidden form fields (random tokens): the scan for phone
/// numbers would take those for numbers.
pub fn without_drawings(html: &str) -> String {
    let mut kept = html.to_owned();
    for (open, close) in [("<svg", "</svg>"), ("<script", "</script>")] {
        let mut rest = kept.as_str();
        let mut out = String::with_capacity(rest.len());
        while let Some(start) = rest.find(open) {
            out.push_str(&rest[..start]);
            rest = match rest[start..].find(close) {
                Some(end) => &rest[start + end + close.len()..],
                None => "",
            };
        }
        out.push_str(rest);
        kept = out;
    }
    // Hidden fields hold random tokens (CSRF, form keys), whose digits are no one's number.
    let mut out = String::with_capacity(kept.len());
    let mut rest = kept.as_str();
    while let Some(start) = rest.find("<input") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('>')
            .map_or(rest.len(), |end| start + end + 1);
        let field = &rest[start..end];
        if !field.contains("type=\"hidden\"") {
            out.push_str(field);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Numbers of 10 digits or more written in groups (`07700 900123`, `+44 7700 900123`,
/// `(0113) 496 0000`): up to two of ` -.()` between groups, every group after the first of 3
/// digits or more, so counters and page numbers in a row ("1 2 3 … 10") are not taken for one.
fn phone_numbers(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let group_at = |at: usize| {
        chars[at.min(chars.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let mut numbers = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = group_at(i);
        i += digits;
        loop {
            let separators = chars[i..]
                .iter()
                .take(2)
                .take_while(|c| matches!(c, ' ' | '-' | '.' | '(' | ')'))
                .count();
            let next = group_at(i + separators);
            if separators == 0 || next < 3 {
                break;
            }
            digits += next;
            i += separators + next;
        }
        if digits >= 10 {
            numbers.push(chars[start..i].iter().collect());
        }
    }
    numbers
}

#[test]
fn the_scan_finds_what_it_looks_for_and_nothing_else() {
    assert_eq!(
        without_drawings("<p>a</p><svg><path d=\"M50.535857121 0\"/></svg><p>b</p>"),
        "<p>a</p><p>b</p>"
    );
    assert_eq!(
        without_drawings("<p>a</p><script>var x = 17.52113657;</script><p>b</p>"),
        "<p>a</p><p>b</p>"
    );
    assert_eq!(
        without_drawings(
            "<form><input type=\"hidden\" name=\"csrf\" value=\"3514185469a\"><input name=\"by\"></form>"
        ),
        "<form><input name=\"by\"></form>"
    );
    let names = ["Jo Bloggs", "Yusuf Ali"];
    let contacts = ["jo.bloggs@example.org"];
    let loop_ids = ["demo-000042"];
    let clean =
        "Discharge after 20:00 only with transport, from 27 November 2026. Bins: 10 fitted.";
    assert_eq!(
        found(clean, &names, &contacts, &loop_ids),
        Vec::<String>::new()
    );
    let leaky = "Thanks, Bloggs. Ring 07700 900123 or +44 113 496 0000, mail a.b@example.net (demo-000042).";
    let leaks = found(leaky, &names, &contacts, &loop_ids);
    assert_eq!(leaks.len(), 5, "{leaks:?}");
    assert!(
        found("Quality matters", &names, &[], &[]).is_empty(),
        "Ali is matched as a word"
    );
}
