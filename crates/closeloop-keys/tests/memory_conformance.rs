//! The memory store against the conformance suite every key store must pass.

use closeloop_keys::conformance::MemoryHarness;

closeloop_keys::conformance_tests!(MemoryHarness::default);
