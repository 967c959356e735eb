//! What the pages' forms share: reading an `application/x-www-form-urlencoded` body (bounded
//! in size and in fields), comparing secrets in constant time, and the random tokens that
//! sessions, CSRF fields and form keys are made of.

use sha2::{Digest, Sha256};

/// Most fields one form body may hold: the largest form, "record one change for these
/// loops", has a few fields and at most [`MAX_CHANGE_LOOPS`](crate::commands::MAX_CHANGE_LOOPS)
/// ticked loops.
pub(crate) const MAX_FORM_FIELDS: usize = 1_100;

/// The fields of a submitted form, in the order they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Form {
    fields: Vec<(String, String)>,
}

/// A form body with more than [`MAX_FORM_FIELDS`] fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the form has more than {MAX_FORM_FIELDS} fields")]
pub(crate) struct TooManyFields;

impl Form {
    /// Reads a form body. Malformed percent-escapes are read as the replacement character,
    /// as browsers never send them; the body's size is bounded by whoever read it.
    ///
    /// # Errors
    /// [`TooManyFields`] past [`MAX_FORM_FIELDS`].
    pub(crate) fn parse(body: &[u8]) -> Result<Self, TooManyFields> {
        let mut fields = Vec::new();
        for (name, value) in form_urlencoded::parse(body) {
            if fields.len() == MAX_FORM_FIELDS {
                return Err(TooManyFields);
            }
            fields.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self { fields })
    }

    /// The first value of the field `name`, if the form has it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of the field `name` (ticked checkboxes share a name), in order.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Whether two secrets are equal, in a time that depends on neither: both are hashed first,
/// so not even their lengths show.
pub(crate) fn same_secret(presented: &str, expected: &str) -> bool {
    let a: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let b: [u8; 32] = Sha256::digest(expected.as_bytes()).into();
    a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random token of `N` bytes from the operating system, as lowercase hex.
///
/// # Panics
/// When the operating system cannot supply random bytes; a session or CSRF token that is
/// not random would be guessable, so the request fails instead.
pub(crate) fn random_token<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system supplies random bytes");
    hex::encode(bytes)
}

/// Whether `raw` looks like a token [`random_token`] made of `N` bytes: `2N` lowercase hex
/// digits. Cookies that do not are ignored without further work.
pub(crate) fn is_token<const N: usize>(raw: &str) -> bool {
    raw.len() == 2 * N && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_in_order_and_repeated_ones_kept() {
        let form = Form::parse(b"csrf=abc&loop_id=a&loop_id=b%3Ac&by=Ward+7+manager&empty=")
            .expect("form");
        assert_eq!(form.get("csrf"), Some("abc"));
        assert_eq!(form.all("loop_id").collect::<Vec<_>>(), ["a", "b:c"]);
        assert_eq!(form.get("by"), Some("Ward 7 manager"));
        assert_eq!(form.get("empty"), Some(""));
        assert_eq!(form.get("missing"), None);
    }

    #[test]
    fn a_form_of_too_many_fields_is_refused() {
        let body = "a=1&".repeat(MAX_FORM_FIELDS + 1);
        assert_eq!(Form::parse(body.as_bytes()), Err(TooManyFields));
        let body = "a=1&".repeat(MAX_FORM_FIELDS);
        assert!(Form::parse(body.as_bytes()).is_ok());
    }

    #[test]
    fn tokens_are_random_hex_and_compared_whole() {
        let one = random_token::<32>();
        let two = random_token::<32>();
        assert!(is_token::<32>(&one) && is_token::<32>(&two));
        assert_ne!(one, two);
        assert!(same_secret(&one, &one.clone()));
        assert!(!same_secret(&one, &two));
        assert!(!same_secret(&one[..63], &one));
        assert!(!is_token::<32>("ABCDEF") && !is_token::<32>(&one.to_uppercase()));
    }
}
