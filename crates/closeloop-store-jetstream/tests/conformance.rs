//! The JetStream store passes the same conformance suite as the sled store, unchanged.

use closeloop_store_jetstream::{JetStreamStore, JetStreamStoreOptions};
use closeloop_testkit::NatsServer;

async fn fresh_store() -> (JetStreamStore, NatsServer) {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let store = JetStreamStore::open(client, JetStreamStoreOptions::default())
        .await
        .expect("open store");
    (store, server)
}

closeloop_store::conformance_tests!(fresh_store);
