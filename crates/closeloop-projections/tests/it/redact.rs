//! `redact`: names, e-mail addresses and UK phone numbers.

use closeloop_projections::redact;

#[track_caller]
fn check(story: &str, name: Option<&str>, expected: &str) {
    assert_eq!(redact(story, name), expected);
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
    check("Zoë was kind", Some("ZOË"), "[redacted] was kind");
    check("No name given", None, "No name given");
}

#[test]
fn e_mail_addresses() {
    check(
        "Write to jo.bloggs+nhs@example.co.uk. Or JB@Mail.Example.org!",
        None,
        "Write to [redacted]. Or [redacted]!",
    );
    check("We met @ the ward at 3pm", None, "We met @ the ward at 3pm");
}

#[test]
fn uk_phone_numbers_in_their_usual_styles() {
    for number in [
        "07700 900123",
        "07700900123",
        "07700-900-123",
        "+44 7700 900123",
        "+447700900123",
        "+44 (0)20 7946 0000",
        "020 7946 0000",
        "(020) 7946 0000",
        "(01632) 960 000",
        "0161 496 0000",
        "0161.496.0000",
        "0800 123 4567",
        "0113 496 0123",
    ] {
        check(
            &format!("Call me on {number}, thanks"),
            None,
            "Call me on [redacted], thanks",
        );
    }
    // Two numbers side by side are two redactions, not one run-on number.
    check("07700 900123 07700 900456", None, "[redacted] [redacted]");
}

#[test]
fn numbers_that_are_not_phone_numbers_stay() {
    for text in [
        "Waited 40 minutes on 01/02/2026",
        "Bed 07 in bay 3",
        "Cost £0.50",
        "Reference 12345678901",
        "Year 2026, ward 7",
    ] {
        check(text, None, text);
    }
}

#[test]
fn everything_at_once() {
    check(
        "I'm Sam Patel (sam.patel@example.org, 07700 900123). Sam thanks you.",
        Some("Sam Patel"),
        "I'm [redacted] ([redacted], [redacted]). [redacted] thanks you.",
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
}
