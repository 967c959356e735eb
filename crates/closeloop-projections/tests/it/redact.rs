//! `redact`: names, e-mail addresses, phone numbers, NHS numbers and postcodes go; dates,
//! times, money, ward and room numbers stay.

use closeloop_domain::Limits;
use closeloop_projections::{REDACTED, redact};
use proptest::prelude::*;
use proptest::sample::select;

#[track_caller]
fn check(story: &str, name: Option<&str>, expected: &str) {
    assert_eq!(redact(story, name), expected, "story: {story:?}");
}

/// Checks each story of `table` with no name.
#[track_caller]
fn check_all(table: &[(&str, &str)]) {
    for (story, expected) in table {
        check(story, None, expected);
    }
}

/// Checks that `redact` leaves each text alone.
#[track_caller]
fn check_kept(texts: &[&str]) {
    for text in texts {
        check(text, None, text);
    }
}

#[test]
fn the_authors_name_whole_and_word_by_word_any_case() {
    check(
        "Jo Bloggs here. JO was cold and the Bloggs family agrees; jo's tea too.",
        Some("Jo Bloggs"),
        "[redacted] here. [redacted] was cold and the [redacted] family agrees; [redacted]'s tea too.",
    );
    // Whole words only: "Jo" is not hidden inside "Joanne" or "enjoy".
    check(
        "Joanne said we'd enjoy it",
        Some("Jo Bloggs"),
        "Joanne said we'd enjoy it",
    );
    // One-letter words of a name are left alone; hyphenated parts count as words.
    check(
        "J Smith-Jones wrote. Jones again. A nurse.",
        Some("A. J. Smith-Jones"),
        "J [redacted] wrote. [redacted] again. A nurse.",
    );
    // The whole name takes its initials with it.
    check(
        "Signed A. J. Smith-Jones, patient",
        Some("A. J. Smith-Jones"),
        "Signed [redacted], patient",
    );
    check("Zoë was kind", Some("ZOË"), "[redacted] was kind");
    check("No name given", None, "No name given");
}

#[test]
fn the_name_with_accents_and_apostrophes_folded() {
    let name = Some("Zoë O'Brien");
    for written in [
        "Zoë O'Brien",
        "Zoe O’Brien",
        "ZOE O'BRIEN",
        "zoe o‘brien",
        "Zoe OBrien",
        "Zoe O Brien",
        "Zoe\u{308} O\u{2BC}Brien",
        "Zoe O'Brien's",
    ] {
        let expected = if written.ends_with("'s") {
            "Wrote: [redacted]'s."
        } else {
            "Wrote: [redacted]."
        };
        check(&format!("Wrote: {written}."), name, expected);
    }
    check(
        "Mrs O’Brien and zoe came; Brien too",
        name,
        "Mrs [redacted] and [redacted] came; [redacted] too",
    );
    // Accents on the story side, none in the name.
    check(
        "Siân and Sian Ní Bhriain",
        Some("Sian Ni Bhriain"),
        "[redacted] and [redacted]",
    );
    check("Łukasz Wójcik", Some("Lukasz Wojcik"), "[redacted]");
}

#[test]
fn titles_and_particles_are_not_hidden_alone() {
    check(
        "Mrs Jane Smith said Mrs Brown helped",
        Some("Mrs Jane Smith"),
        "Mrs [redacted] said Mrs Brown helped",
    );
    // A particle after the first word stays an ordinary word; the whole name still goes.
    check(
        "Anna van Dijk waited; the van was late. Van Dijk again",
        Some("Anna van Dijk"),
        "[redacted] waited; the van was late. Van [redacted] again",
    );
    check(
        "María de la Cruz wrote in la la land",
        Some("Maria de la Cruz"),
        "[redacted] wrote in la la land",
    );
    // As the first word it is a given name.
    check(
        "Al rang; Van called",
        Some("Al Green"),
        "[redacted] rang; Van called",
    );
    check("Van rang", Some("Van Morrison"), "[redacted] rang");
    // Two-letter names are names.
    check(
        "Mr Li and Wei Li thanked Wu",
        Some("Wei Li"),
        "Mr [redacted] and [redacted] thanked Wu",
    );
}

#[test]
fn e_mail_addresses() {
    check_all(&[
        (
            "Write to jo.bloggs+nhs@example.co.uk. Or JB@Mail.Example.org!",
            "Write to [redacted]. Or [redacted]!",
        ),
        ("(zoe.o'brien@nhs.net)", "([redacted])"),
        ("We met @ the ward at 3pm", "We met @ the ward at 3pm"),
    ]);
}

#[test]
fn phone_numbers_in_every_common_spacing() {
    for number in [
        "07700 900123",
        "07700900123",
        "07700  900123",
        "07700/900123",
        "07700-900-123",
        "07700 900 123",
        "07700 - 900123",
        "07700\u{a0}900123",
        "+44 7700 900123",
        "+447700900123",
        "+44 (0)7700 900123",
        "+44(0)7700 900123",
        "+44 (0)20 7946 0000",
        "0044 7700 900123",
        "020 7946 0000",
        "(020) 7946 0000",
        "(0113) 496 0000",
        "(01632) 960 000",
        "0161 496 0000",
        "0161-496-0000",
        "0161.496.0000",
        "0800 123 4567",
        "0113 496 0123",
        "+353 1 234 5678",
        "+353 87 123 4567",
        "+1 (555) 010-0199",
        "+33 6 12 34 56 78",
        "+49 30 1234567",
    ] {
        check(
            &format!("Call me on {number}, thanks"),
            None,
            "Call me on [redacted], thanks",
        );
    }
    // Two numbers side by side are two redactions, not one run-on number.
    check("07700 900123 07700 900456", None, "[redacted] [redacted]");
    // A number ends before a word that starts with a digit.
    check("Ring +353 1 234 5678 2pm", None, "Ring [redacted] 2pm");
}

#[test]
fn nhs_numbers_with_a_valid_check_digit() {
    check_all(&[
        ("NHS number 943 476 5919.", "NHS number [redacted]."),
        ("NHS no: 9434765919", "NHS no: [redacted]"),
        ("nhs 943-476-5919, thanks", "nhs [redacted], thanks"),
        ("(401 023 2137)", "([redacted])"),
    ]);
}

#[test]
fn uk_postcodes_in_any_case_with_or_without_the_space() {
    check_all(&[
        ("I live in LS1 4AP.", "I live in [redacted]."),
        (
            "Address: 10 Downing St, SW1A 2AA",
            "Address: 10 Downing St, [redacted]",
        ),
        ("post to sw1a1aa please", "post to [redacted] please"),
        ("from ls14ap", "from [redacted]"),
        (
            "M1 1AE, B33 8TH, CR2 6XH, DN55 1PT, W1A 0AX",
            "[redacted], [redacted], [redacted], [redacted], [redacted]",
        ),
        ("Ec1a  1bb", "[redacted]"),
        ("Girobank GIR 0AA", "Girobank [redacted]"),
    ]);
    // An outward code alone names a district, not a person.
    check_kept(&["Leeds LS1 is busy", "the M1 and the A1(M)"]);
}

#[test]
fn numbers_and_words_that_are_not_personal_data_stay() {
    check_kept(&[
        "Waited 40 minutes on 01/02/2026",
        "Seen on 2026-11-27 at 14:30, again at 2pm and 9.30am",
        "Dates 07/03/2026 and 27.11.2026, 01-02-2026 10:45",
        "On 01/02/2026 14:30 07:15 nothing happened",
        "Ward 7, bay 12, bed 03, room 0.12 and Room 214",
        "Bed 07 in bay 3",
        "Parking cost £12.50, or £1,200 a year; 0.5 mg twice a day",
        "Cost £0.50",
        "I waited 3 hours and 40 minutes, from 0930 to 1310",
        "Reference 12345678901",
        // Ten digits whose check digit is wrong are not an NHS number.
        "Ticket 4010232138 and 1234567890",
        "Year 2026, ward 7, in 1999 and 2025",
        "Room B12, theatre 3A, ward C4 on floor 2",
        "Open from 8am to 8pm, 7 days, 24/7",
        "Gave it 10/10 and +2 points",
        "Score +30 in 2026",
    ]);
}

#[test]
fn realistic_stories() {
    check(
        "My name is Zoë O'Brien and my NHS number is 943 476 5919. I live at 12 Park Lane, \
         Leeds LS1 4AP. Ring me on 07700  900123 or email zoe.obrien@example.com. I waited \
         40 minutes on Ward 7 on 01/02/2026 at 14:30 and parking cost £12.50.",
        Some("Zoë O'Brien"),
        "My name is [redacted] and my NHS number is [redacted]. I live at 12 Park Lane, \
         Leeds [redacted]. Ring me on [redacted] or email [redacted]. I waited \
         40 minutes on Ward 7 on 01/02/2026 at 14:30 and parking cost £12.50.",
    );
    check(
        "The nurse on bay 12 was lovely to my mum. My sister (+353 1 234 5678) flew over \
         from Dublin; Zoe O’Brien, 2026-11-27.",
        Some("Zoë O'Brien"),
        "The nurse on bay 12 was lovely to my mum. My sister ([redacted]) flew over \
         from Dublin; [redacted], 2026-11-27.",
    );
    check(
        "I'm Sam Patel (sam.patel@example.org, 07700 900123). Sam thanks you.",
        Some("Sam Patel"),
        "I'm [redacted] ([redacted], [redacted]). [redacted] thanks you.",
    );
    check(
        "Please call (0113) 496 0000 or +44 (0)7700 900123 before 2pm; post code ls14ap.",
        Some("Sam Patel"),
        "Please call [redacted] or [redacted] before 2pm; post code [redacted].",
    );
}

#[test]
fn control_and_bidi_override_characters_never_reach_the_page() {
    // Bidirectional embeddings, overrides and isolates go; so do control characters, but
    // newlines and tabs stay.
    check(
        "Good\u{202E}doog\u{202C} care\u{2066}!\u{2069}\u{202A}\u{202B}\u{202D}\u{2067}\u{2068}",
        None,
        "Gooddoog care!",
    );
    check(
        "Line one\nline\ttwo\r\u{0}\u{7}\u{1b}[31m\u{7f}\u{85}end",
        None,
        "Line one\nline\ttwo[31mend",
    );
    // A hidden character cannot split a number or a name to slip past the detectors.
    check(
        "Call 07700\u{0} 900123 or ask for J\u{202E}o Blo\u{1}ggs",
        Some("Jo Bloggs"),
        "Call [redacted] or ask for [redacted]",
    );
    // Nor can a zero-width one.
    check(
        "NHS 943\u{200B}476\u{FEFF}5919, LS1\u{2060} 4AP, Zo\u{200D}e\u{AD} O\u{200C}Brien",
        Some("Zoë O'Brien"),
        "NHS [redacted], [redacted], [redacted]",
    );
}

/// A story of at least `bytes` bytes made of `unit` repeated, and what it becomes.
fn repeated(unit: &str, redacted_unit: &str, bytes: usize) -> (String, String) {
    let times = bytes.div_ceil(unit.len());
    (unit.repeat(times), redacted_unit.repeat(times))
}

#[test]
fn a_story_of_the_longest_kind_is_redacted_whole() {
    // The domain allows stories of up to 100,000 bytes; 64 KiB of realistic text with
    // something to redact in every sentence.
    const { assert!(Limits::DEFAULT.max_story_bytes >= 64 * 1024) };
    let (story, expected) = repeated(
        "I am Zoe O’Brien, NHS 943 476 5919, of LS1 4AP (07700 900123, zoe@example.com); \
         ward 7 on 01/02/2026 at 14:30 cost £12.50. ",
        "I am [redacted], NHS [redacted], of [redacted] ([redacted], [redacted]); \
         ward 7 on 01/02/2026 at 14:30 cost £12.50. ",
        64 * 1024,
    );
    check(&story, Some("Zoë O'Brien"), &expected);
}

#[test]
fn long_hostile_stories_cost_a_linear_pass() {
    let long = 64 * 1024;
    // Runs that a scanner restarting at every character would read again and again.
    for unit in [
        "0", "0 ", "+4", "0770 ", "a@", "a.", "(0", "LS1 ", "943 ", "a'",
    ] {
        let (story, _) = repeated(unit, "", long);
        check(&story, Some("Jo Bloggs"), &story);
    }
    // Knuth–Morris–Pratt's worst case for a naive search: a long name that almost matches
    // everywhere.
    let name = format!("{}b", "a".repeat(10_000));
    let story = "a".repeat(long);
    check(&story, Some(&name), &story);
    // A name of many words against a story of many words, none of them the name's.
    let name: String = (0..2_000).map(|n| format!("Name{n} ")).collect();
    let (story, _) = repeated("Other words here. ", "", long);
    check(&story, Some(&name), &story);
    // A name said over and over becomes one mark per run of it.
    let (story, _) = repeated("Jo ", "", long);
    check(&story, Some("Jo"), &format!("{REDACTED} "));
}

/// Characters that make the detectors work: digits, separators, letters of postcodes and
/// names, the signs of e-mail addresses and phone numbers, accents and hidden characters.
fn story_chars() -> impl Strategy<Value = String> {
    let interesting = select(vec![
        '0', '1', '4', '7', '9', ' ', ' ', '\u{a0}', '-', '.', '/', '(', ')', '+', '@', '\'', '’',
        'a', 'L', 'S', 'p', 'z', 'é', '\u{308}', '\u{202E}', '\u{200B}', '\n', 'İ', 'ß',
    ]);
    prop_oneof![
        3 => proptest::collection::vec(interesting, 0..400)
            .prop_map(|chars| chars.into_iter().collect()),
        1 => any::<String>(),
    ]
}

/// An NHS number with a valid check digit, written together or grouped.
fn nhs_number() -> impl Strategy<Value = String> {
    (proptest::array::uniform9(0u32..10), any::<bool>()).prop_filter_map(
        "the check digit would be 10",
        |(digits, grouped)| {
            let sum: u32 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
            let check = (11 - sum % 11) % 11;
            (check != 10).then(|| {
                let all: String = digits
                    .iter()
                    .chain(std::iter::once(&check))
                    .map(ToString::to_string)
                    .collect();
                if grouped {
                    format!("{} {} {}", &all[..3], &all[3..6], &all[6..])
                } else {
                    all
                }
            })
        },
    )
}

/// A UK postcode in Royal Mail's format, in either case, with or without its space.
fn postcode() -> impl Strategy<Value = String> {
    let outward = prop_oneof![
        "[A-PR-UWYZ][0-9]",
        "[A-PR-UWYZ][0-9][0-9]",
        "[A-PR-UWYZ][0-9][ABCDEFGHJKPSTUW]",
        "[A-PR-UWYZ][A-HK-Y][0-9]",
        "[A-PR-UWYZ][A-HK-Y][0-9][0-9]",
        "[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRVWXY]",
    ];
    let inward = "[0-9][ABD-HJLNP-UW-Z]{2}";
    (outward, inward, any::<bool>(), any::<bool>()).prop_map(|(out, inw, spaced, lower)| {
        let code = if spaced {
            format!("{out} {inw}")
        } else {
            format!("{out}{inw}")
        };
        if lower { code.to_lowercase() } else { code }
    })
}

/// An e-mail address.
fn email() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,7}([._+'-][a-z0-9]{1,6})?@[a-z][a-z0-9-]{0,8}[a-z0-9](\\.(nhs|co|ac))?\\.(uk|com|org|net)"
}

/// A phone number in one of the spellings people use.
fn phone() -> impl Strategy<Value = String> {
    prop_oneof![
        "07[0-9]{3}( {1,3}|-|/|\\.)?[0-9]{3}( |-)?[0-9]{3}",
        "\\(01[0-9]{2}\\) ?[0-9]{3} [0-9]{4}",
        "\\+44 ?(\\(0\\) ?)?7[0-9]{3} ?[0-9]{6}",
        "\\+3[0-9]{2} [1-9] [0-9]{3} [0-9]{4}",
    ]
}

/// Ordinary words, numbers that are not personal data, and the punctuation between them.
fn filler() -> impl Strategy<Value = String> {
    select(vec![
        "waited",
        "Ward 7",
        "bay 12",
        "01/02/2026",
        "2026-11-27",
        "14:30",
        "2pm",
        "£12.50",
        "£1,200",
        "40 minutes",
        "room 214",
        "4010232138",
        "2026",
        "the nurse",
        "07:15",
        "A&E",
        "x",
        "Tel",
        "NHS no",
        "0",
        "+",
        "@",
    ])
    .prop_map(str::to_owned)
}

/// A story made of filler and personal data, and the personal data in it.
fn story_with_personal_data() -> impl Strategy<Value = (String, Vec<String>)> {
    let piece = prop_oneof![
        2 => filler().prop_map(|text| (text, false)),
        1 => email().prop_map(|text| (text, true)),
        1 => nhs_number().prop_map(|text| (text, true)),
        1 => postcode().prop_map(|text| (text, true)),
        1 => phone().prop_map(|text| (text, true)),
    ];
    let separator = select(vec![" ", ", ", ". ", "\n", "; ", " (", ") "]);
    proptest::collection::vec((piece, separator), 1..30).prop_map(|pieces| {
        let mut story = String::new();
        let mut personal = Vec::new();
        for ((text, is_personal), separator) in pieces {
            story.push_str(&text);
            story.push_str(separator);
            if is_personal {
                personal.push(text);
            }
        }
        (story, personal)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Redaction never panics, and each `[redacted]` it adds replaces at least one
    /// character, so the output is at most 9 bytes longer per mark than the story.
    #[test]
    fn redaction_is_total_and_bounded(
        story in story_chars(),
        name in proptest::option::of(story_chars()),
    ) {
        let out = redact(&story, name.as_deref());
        let marks = out.matches(REDACTED).count();
        prop_assert!(out.len() <= story.len() + (REDACTED.len() - 1) * marks);
    }

    /// No e-mail address, NHS number, postcode or phone number given survives.
    #[test]
    fn personal_data_never_survives((story, personal) in story_with_personal_data()) {
        let out = redact(&story, None);
        for text in &personal {
            prop_assert!(!out.contains(text.as_str()), "{text:?} survived in {out:?}");
        }
    }
}
