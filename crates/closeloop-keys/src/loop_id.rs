//! The contract's loop id rule, checked on every input the key store accepts.

use crate::KeyError;

/// The longest loop id, in bytes (contract §1).
pub const MAX_LOOP_ID_LEN: usize = 128;

/// Checks `loop_id` is 1–128 characters of `[A-Za-z0-9._:-]`.
///
/// # Errors
/// [`KeyError::InvalidLoopId`] otherwise.
pub fn check_loop_id(loop_id: &str) -> Result<(), KeyError> {
    let well_formed = !loop_id.is_empty()
        && loop_id.len() <= MAX_LOOP_ID_LEN
        && loop_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if well_formed {
        Ok(())
    } else {
        Err(KeyError::InvalidLoopId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract_alphabet_up_to_128_bytes() {
        assert!(check_loop_id("fft-rxx-000123").is_ok());
        assert!(check_loop_id("a.b_c:d-E9").is_ok());
        assert!(check_loop_id(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", "has space", "slash/", "é", &"x".repeat(129)] {
            assert!(check_loop_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
