//! The NATS JetStream store against the conformance suite every key store must pass. Each check
//! gets a private nats-server; "reopening" is a new handle on the same stream.

use closeloop_keys::conformance::KeyStoreHarness;
use closeloop_keys::{KeyError, MasterKey, NatsKeyStore, NatsKeyStoreOptions};
use closeloop_testkit::NatsServer;

/// One server and a client connected to it, on a runtime that keeps the connection running.
struct NatsHarness {
    client: async_nats::Client,
    _runtime: tokio::runtime::Runtime,
    _server: NatsServer,
}

impl std::fmt::Debug for NatsHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsHarness")
    }
}

impl KeyStoreHarness for NatsHarness {
    type Store = NatsKeyStore;

    fn open(&self, master: Option<&MasterKey>) -> Result<NatsKeyStore, KeyError> {
        NatsKeyStore::open(self.client.clone(), NatsKeyStoreOptions::default(), master)
    }
}

fn harness() -> NatsHarness {
    let server = NatsServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the NATS client");
    let client = runtime
        .block_on(async_nats::connect(server.url()))
        .expect("connect to the test nats-server");
    NatsHarness {
        client,
        _runtime: runtime,
        _server: server,
    }
}

closeloop_keys::conformance_tests!(harness);
