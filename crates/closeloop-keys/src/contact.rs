//! Contacts, normalised so differently spelled equal contacts index alike, and their keyed
//! digests.

use std::fmt;

/// The longest contact accepted, in bytes. E-mail addresses are at most 254; the rest is slack
/// for free-form contacts such as postal addresses.
pub const MAX_CONTACT_LEN: usize = 1024;

/// The keyed digest of a normalised contact (HMAC-SHA256 under the store's contact-index
/// secret). The contact index holds these, never contacts. `Debug` shows a short prefix only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContactDigest(pub [u8; 32]);

impl fmt::Debug for ContactDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContactDigest({}…)", hex::encode(&self.0[..4]))
    }
}

/// Normalises a contact so equal contacts compare equal however they were written:
///
/// - surrounding whitespace is trimmed;
/// - an e-mail address (anything with `@`) is lowercased, with any whitespace removed;
/// - a phone number (only digits, spaces and `+ - . / ( )`, with at least 7 digits) becomes its
///   digits with the international prefix dropped: `+44 7700 900123`, `0044 7700 900123`,
///   `+44 (0)7700 900123` and the UK national `07700 900123` all become `447700900123`;
/// - anything else is lowercased with runs of whitespace collapsed to one space.
#[must_use]
pub fn normalise_contact(contact: &str) -> String {
    let contact = contact.trim();
    if contact.contains('@') {
        return contact
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect();
    }
    if let Some(phone) = normalise_phone(contact) {
        return phone;
    }
    contact
        .split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The digits of a phone-like contact in international form without a prefix, or `None` when
/// it does not look like a phone number.
fn normalise_phone(contact: &str) -> Option<String> {
    let phone_like = contact
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_whitespace() || "+-./()".contains(c));
    if !phone_like {
        return None;
    }
    // "+44 (0)7700 900123": the bracketed trunk zero is not dialled from abroad.
    let without_trunk = contact.replace("(0)", "");
    let digits: String = without_trunk.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 7 {
        return None;
    }
    let international = without_trunk.trim_start().starts_with('+');
    let normalised = if international {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else if let Some(rest) = digits.strip_prefix('0') {
        // A UK national number: the trunk 0 stands for +44.
        format!("44{rest}")
    } else {
        digits
    };
    Some(normalised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(contact: &str, expected: &str) {
        assert_eq!(
            normalise_contact(contact),
            expected,
            "normalising {contact:?}"
        );
    }

    #[test]
    fn e_mail_addresses_are_trimmed_and_lowercased() {
        check("Jo@Example.org ", "jo@example.org");
        check("\tJO.SMITH@NHS.NET\n", "jo.smith@nhs.net");
    }

    #[test]
    fn phone_numbers_become_international_digits() {
        check("07700 900123", "447700900123");
        check("+44 7700 900123", "447700900123");
        check("0044 7700 900123", "447700900123");
        check("+44 (0)7700 900123", "447700900123");
        check("07700-900-123", "447700900123");
        check("(0113) 496 0000", "441134960000");
        check("+353 1 234 5678", "35312345678");
    }

    #[test]
    fn other_contacts_are_lowercased_with_whitespace_collapsed() {
        check("  Flat 2,   High Street ", "flat 2, high street");
        check("123", "123");
    }

    #[test]
    fn debug_shows_a_prefix_only() {
        let shown = format!("{:?}", ContactDigest([0xcd; 32]));
        assert_eq!(shown, "ContactDigest(cdcdcdcd…)");
    }
}
