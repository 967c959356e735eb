//! Redaction of a story before it is shown in public: the author's name, e-mail addresses,
//! phone numbers, NHS numbers and UK postcodes become `[redacted]`, and characters that could
//! hide or reorder text on the page are removed.
//!
//! Each detector lives in its own module and marks character spans on the cleaned text;
//! overlapping spans merge and each is replaced once, so a replacement is never matched again.
//! Every detector is a hand-written scanner that reads each character a bounded number of
//! times (numbers and postcodes look at a short window from each place one may start, e-mail
//! addresses read outwards from each `@`, the name is one hash lookup per word and one
//! Knuth–Morris–Pratt search), so the whole pass is linear in the lengths of the story and the
//! name: no input, however hostile, makes it quadratic.

mod email;
mod fold;
mod name;
mod nhs_number;
mod phone;
mod postcode;
mod scan;

/// What a redacted span becomes.
pub const REDACTED: &str = "[redacted]";

/// `story` with the author's name, e-mail addresses, phone numbers, NHS numbers and UK
/// postcodes replaced by `[redacted]`.
///
/// - Control characters other than newline and tab, the bidirectional embedding, override,
///   isolate and mark characters (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C) and
///   the invisible zero-width characters (U+00AD, U+180E, U+200B–U+200D, U+2060–U+2064,
///   U+FEFF) are removed first: they could reorder or hide text on the public page, and
///   removing them before the detectors run means none can split a name or a number to slip
///   it through.
/// - The name matches case-insensitively with accents and apostrophes folded ("Zoë O'Brien"
///   also hides "zoe O’Brien", "ZOE OBRIEN" and "Zoe O Brien"), on word boundaries: the whole
///   name, and each of its words of two letters or more ("Jo Bloggs" also hides "Bloggs" and
///   "jo's"), except titles ("Mrs", "Dr") and, after the first word, name particles ("de",
///   "van", "al"). Neighbouring matches become one `[redacted]`.
/// - E-mail addresses: `local@domain.tld`.
/// - Phone numbers: UK national numbers (10 or 11 digits starting with 0, the first group
///   of at least 3 digits, so that dates never match), international numbers (`+` or `00`,
///   then 8 to 15 digits, with an optional `(0)`), in groups separated by up to three spaces,
///   a hyphen, a dot or a slash: `07700  900123`, `07700/900123`, `(0113) 496 0000`,
///   `+44 (0)7700 900123`, `+353 1 234 5678`.
/// - NHS numbers: 10 digits whose last is the modulus-11 check digit of the other nine,
///   written together or as 3, 3 and 4 digits (`943 476 5919`, `943-476-5919`).
/// - UK postcodes, full ones only, any case, with or without the space: `LS1 4AP`,
///   `SW1A 1AA`, `ls14ap`. An outward code alone (`LS1`) names a district, not a person, and
///   stays.
///
/// Each replaced span is at least one character long, so the result is at most
/// `REDACTED.len() - 1` bytes longer than the cleaned story per `[redacted]` it adds.
#[must_use]
pub fn redact(story: &str, author_name: Option<&str>) -> String {
    let chars: Vec<char> = story.chars().filter(|&c| is_shown(c)).collect();
    let mut spans = Vec::new();
    email::find(&chars, &mut spans);
    phone::find(&chars, &mut spans);
    nhs_number::find(&chars, &mut spans);
    postcode::find(&chars, &mut spans);
    if let Some(name) = author_name {
        let name: Vec<char> = name.chars().filter(|&c| is_shown(c)).collect();
        name::find(&chars, &name, &mut spans);
    }
    replace(&chars, spans)
}

/// `chars` with each span (start inclusive, end exclusive, in characters) replaced by
/// [`REDACTED`]; overlapping spans are replaced together, once.
fn replace(chars: &[char], mut spans: Vec<(usize, usize)>) -> String {
    if spans.is_empty() {
        return chars.iter().collect();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(chars.len());
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
/// excepted), nor a bidirectional control, nor an invisible zero-width character.
fn is_shown(c: char) -> bool {
    let bidi = matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    );
    let invisible = matches!(
        c,
        '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    );
    !bidi && !invisible && (!c.is_control() || c == '\n' || c == '\t')
}
