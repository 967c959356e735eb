//! Where `serve`'s memory goes, measured on a data directory: opens the store, builds the read
//! models from the log as `closeloop rebuild` does, computes the SLA figures as `serve` does,
//! frees the parts one at a time and prints the resident memory each gave back, then loads
//! them back from a snapshot (SLA figures included). Run it on a copy of a data directory (it opens the store):
//!
//! ```text
//! MIMALLOC_PURGE_DELAY=0 cargo run --release -p closeloop --example memory -- DATA_DIR
//! ```
//!
//! With `CLOSELOOP_MASTER_KEY` set it opens the key store too. `MEMORY_SLED_CACHE_MIB` sets sled's page cache; `MEMORY_STORE_ONLY=1` stops after opening
//! and closing the store. `MIMALLOC_PURGE_DELAY=0` makes mimalloc give freed pages back at once, so that resident
//! memory follows what is live; a part's figure is only as exact as its pages are its own.

use std::path::PathBuf;

use anyhow::Context;
use closeloop_domain::Sla;
use closeloop_keys::{FileKeyStore, MasterKey};
use closeloop_projections::{ReadModels, rebuild};
use closeloop_store::backend::index::Index;
use closeloop_store::{EventStore, SledStore, SledStoreOptions};

#[path = "support/resident.rs"]
mod resident;
use resident::resident_mib;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Meter {
    last: f64,
}

impl Meter {
    /// Prints resident memory now and how much it grew since the last step.
    fn step(&mut self, what: &str) {
        let (now, peak) = resident_mib();
        println!(
            "{what:<44} {:>+9.1} MiB   (resident {now:>7.1}, peak {peak:>7.1})",
            now - self.last
        );
        self.last = now;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .context("usage: memory DATA_DIR")?
        .into();
    let mut meter = Meter {
        last: resident_mib().0,
    };
    meter.step("start");

    // `serve` also holds the key store open: its index of loops and contacts.
    if let Ok(hex) = std::env::var("CLOSELOOP_MASTER_KEY") {
        let master = MasterKey::from_hex(&hex).context("CLOSELOOP_MASTER_KEY")?;
        let keys = FileKeyStore::open(&dir.join("keys"), Some(&master))?;
        meter.step("key store opened");
        drop(keys);
        meter.step("key store closed");
    }

    let mut options = SledStoreOptions::default();
    if let Some(mib) = std::env::var("MEMORY_SLED_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        options.cache_capacity_bytes = mib * 1024 * 1024;
    }
    let store = SledStore::open(&dir, &options)
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    meter.step("store opened (sled, store indexes)");
    if std::env::var_os("MEMORY_STORE_ONLY").is_some() {
        store.close().await;
        meter.step("store closed (sled, store indexes)");
        return Ok(());
    }

    let models = rebuild(&store, 8192, |_, _| {}).await?;
    meter.step("read models built from the log");
    let sla = Sla::default();
    models.prepare(&sla);
    meter.step("SLA figures and aggregates computed");
    println!(
        "  {} events, {} loops",
        models.checkpoint(),
        models.loop_count()
    );

    let snapshot = models.to_snapshot();
    meter.step("snapshot encoded");
    println!("  snapshot: {:.1} MiB", snapshot.len() as f64 / 1048576.0);
    models.drop_parts(|part| meter.step(&format!("  freed: {part}")));
    meter.step("read models freed");

    let loaded = ReadModels::from_snapshot(&snapshot)?;
    meter.step("read models loaded from the snapshot");
    drop(snapshot);
    meter.step("snapshot bytes freed");
    // The snapshot kept the figures for this SLA: nothing is computed here.
    loaded.prepare(&sla);
    meter.step("SLA figures and aggregates (from the snapshot)");
    loaded.drop_parts(|_| ());
    meter.step("read models freed");

    // An index of the same shape as the store's: same loops, versions and number of keys.
    let mut index = Index::reading_head_hashes();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 8192).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for entry in &page {
            let key = entry.position.to_string();
            index.insert(
                &entry.loop_id,
                "urn:memory",
                &key,
                entry.position,
                entry.hash,
            );
        }
    }
    meter.step("a second store index built");
    drop(index);
    meter.step("  freed: that index");

    store.close().await;
    meter.step("store closed (sled, store indexes)");
    Ok(())
}
