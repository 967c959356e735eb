//! NHS numbers: ten digits, the last the modulus-11 check digit of the other nine.

use super::scan::{digit_run, ends_word, is_digit_at, separator, starts_word};

/// Marks every NHS number in `chars`: ten digits written together (`9434765919`) or as
/// groups of 3, 3 and 4 separated by spaces or a hyphen (`943 476 5919`, `943-476-5919`),
/// standing as a word of their own, whose check digit is right. Ten digits with a wrong check
/// digit are some other number and stay.
pub(super) fn find(chars: &[char], spans: &mut Vec<(usize, usize)>) {
    for start in 0..chars.len() {
        if is_digit_at(chars, start)
            && starts_word(chars, start)
            && let Some(end) = number_at(chars, start)
        {
            spans.push((start, end));
        }
    }
}

/// The end of an NHS number starting at `start`, if one does.
fn number_at(chars: &[char], start: usize) -> Option<usize> {
    let mut digits = Vec::with_capacity(10);
    let mut i = start;
    if digit_run(chars, i, 10) == 10 {
        digits.extend_from_slice(&chars[i..i + 10]);
        i += 10;
    } else {
        for (n, size) in [3, 3, 4].into_iter().enumerate() {
            if n > 0 {
                let (next, _) = separator(chars, i, &[])?;
                i = next;
            }
            if digit_run(chars, i, size) != size {
                return None;
            }
            digits.extend_from_slice(&chars[i..i + size]);
            i += size;
        }
    }
    (ends_word(chars, i) && has_valid_check_digit(&digits)).then_some(i)
}

/// Whether the tenth of `digits` is the modulus-11 check digit of the first nine: weights 10
/// down to 2, the check digit is 11 minus the remainder of the sum by 11 (0 for 11; a result
/// of 10 means no valid number has those nine digits).
fn has_valid_check_digit(digits: &[char]) -> bool {
    let value = |c: &char| c.to_digit(10).unwrap_or(0);
    let Some((check, first_nine)) = digits.split_last() else {
        return false;
    };
    if first_nine.len() != 9 {
        return false;
    }
    let sum: u32 = first_nine
        .iter()
        .zip((2..=10).rev())
        .map(|(digit, weight)| value(digit) * weight)
        .sum();
    let expected = (11 - sum % 11) % 11;
    expected != 10 && expected == value(check)
}

#[cfg(test)]
mod tests {
    use super::has_valid_check_digit;

    #[test]
    fn the_check_digit_follows_the_nhs_algorithm() {
        let check = |raw: &str| has_valid_check_digit(&raw.chars().collect::<Vec<_>>());
        assert!(check("9434765919"));
        assert!(check("4010232137"));
        // One digit changed, two digits swapped.
        assert!(!check("9434765918"));
        assert!(!check("9434765991"));
        // Nine digits whose check would be 10 have no valid number.
        assert!(!check("1000000010"));
        assert!(!check("943476591"));
    }
}
