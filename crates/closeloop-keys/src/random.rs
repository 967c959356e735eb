//! Fresh random bytes from the operating system, for keys, secrets and nonces.

/// `N` bytes from the operating system's cryptographic random source.
///
/// # Panics
/// When the operating system cannot supply random bytes. That does not happen on a working
/// Linux system, and carrying on without randomness would reuse nonces, so we stop.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system supplies random bytes");
    bytes
}
