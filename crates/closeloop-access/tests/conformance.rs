//! Both access logs against the conformance suite every implementation must pass.

use closeloop_access::{Clock, FileAccessLog, FileAccessLogOptions, MemoryAccessLog, Retention};

mod memory {
    use super::*;

    async fn fresh_log(clock: Clock) -> (MemoryAccessLog, ()) {
        (MemoryAccessLog::new(Retention::default(), clock), ())
    }

    closeloop_access::access_conformance_tests!(fresh_log);
}

mod file {
    use super::*;

    async fn fresh_log(clock: Clock) -> (FileAccessLog, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = FileAccessLogOptions {
            clock,
            ..FileAccessLogOptions::default()
        };
        let log = FileAccessLog::open(FileAccessLog::dir_in(dir.path()), options)
            .await
            .expect("open the access log");
        (log, dir)
    }

    closeloop_access::access_conformance_tests!(fresh_log);
}
