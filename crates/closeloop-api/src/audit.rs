//! The auditor's endpoints: the raw log as NDJSON and the chain check.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use closeloop_access::What;
use closeloop_store::merkle::{BLOCK, MerkleError, MerkleIndex, leaf_hash};
use closeloop_store::record::Reveal;
use closeloop_store::{EventStore, Hash, VerifyReport, verify};
use serde_json::{Value, json};

use crate::AppState;
use crate::access;
use crate::auth::Credential;
use crate::error::ApiError;
use crate::params::{required_number, whole_number};

/// How many events the NDJSON stream reads at a time.
const PAGE: usize = 1024;

type Params = Query<HashMap<String, String>>;

/// `GET /v1/events`: the log as NDJSON, streamed page by page, never buffered whole. Query:
/// `after` (start after this position, default 0), `limit` (at most this many events;
/// default: all up to the head when the request began). The export holds personal data, so
/// it is recorded in the access log first.
pub(crate) async fn events<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let after = whole_number(&params, "after")?.unwrap_or(0);
    let limit = whole_number(&params, "limit")?;
    // One entry for the whole export, across loops, before a line of it is sent.
    access::record_read(&state, &credential, None, What::Events).await?;
    // The head when the request began bounds the stream, so it ends even under constant writes.
    let head = state.store.head();
    let end = limit.map_or(head, |limit| head.min(after.saturating_add(limit)));
    let store = Arc::clone(&state.store);
    let keys = state.keys.clone();
    let stream = futures::stream::try_unfold(after, move |after| {
        let store = Arc::clone(&store);
        let keys = keys.clone();
        async move {
            if after >= end {
                return Ok(None);
            }
            let want = usize::try_from(end - after).unwrap_or(PAGE).min(PAGE);
            let page = store
                .read_all(after, want)
                .await
                .map_err(std::io::Error::other)?;
            let Some(last) = page.last().map(|e| e.position) else {
                return Ok(None);
            };
            let mut chunk = Vec::with_capacity(page.len() * 512);
            let reveal = Reveal::with_keys(keys.as_deref());
            for entry in &page {
                let line = entry.to_line(reveal).map_err(std::io::Error::other)?;
                serde_json::to_writer(&mut chunk, &line).map_err(std::io::Error::other)?;
                chunk.push(b'\n');
            }
            Ok::<_, std::io::Error>(Some((Bytes::from(chunk), last)))
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /v1/audit/verify`: re-walks the log and returns the Merkle tree head. Query: `upto`
/// (verify up to this position; default: the head).
pub(crate) async fn audit_verify<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Query(params): Params,
) -> Result<Json<VerifyReport>, ApiError> {
    let upto = whole_number(&params, "upto")?;
    let head = state.store.head();
    if let Some(upto) = upto
        && upto > head
    {
        return Err(ApiError::InvalidRequest(format!(
            "upto={upto} is beyond the head of the log ({head})"
        )));
    }
    Ok(Json(verify(state.store.as_ref(), upto).await?))
}

/// Reads the entry hashes of the given 256-leaf blocks, cut at tree size `upto`.
async fn fetch_blocks<S: EventStore>(
    store: &S,
    blocks: impl IntoIterator<Item = u64>,
    upto: u64,
) -> Result<BTreeMap<u64, Vec<Hash>>, ApiError> {
    let mut fetched = BTreeMap::new();
    for block in blocks {
        let start = block * BLOCK;
        let want = usize::try_from(BLOCK.min(upto.saturating_sub(start))).unwrap_or(0);
        let entries = store.read_all(start, want).await?;
        fetched.insert(block, entries.iter().map(|entry| entry.hash).collect());
    }
    Ok(fetched)
}

/// Computes a proof on tokio's blocking pool: over a big tree it hashes thousands of nodes.
async fn off_the_workers<T: Send + 'static>(
    prove: impl FnOnce() -> Result<T, MerkleError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(prove)
        .await
        .map_err(|err| ApiError::Internal(format!("Merkle proof did not finish: {err}")))?
        .map_err(|err| ApiError::Internal(format!("Merkle proof failed: {err}")))
}

/// Checks `1 <= low <= upto <= head`, naming the parameters in the error.
fn check_range(low_name: &str, low: u64, upto: u64, head: u64) -> Result<(), ApiError> {
    if low == 0 || low > upto || upto > head {
        return Err(ApiError::InvalidRequest(format!(
            "need 1 <= {low_name} <= upto <= {head} (the head of the log); got {low_name}={low}, upto={upto}"
        )));
    }
    Ok(())
}

/// `GET /v1/audit/proof/inclusion`: the RFC 6962 audit path of one entry in the tree of size
/// `upto` (default: the head).
pub(crate) async fn inclusion_proof<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    let position = required_number(&params, "position")?;
    let head = state.store.head();
    let upto = whole_number(&params, "upto")?.unwrap_or(head);
    check_range("position", position, upto, head)?;
    let index = position - 1;
    // One snapshot of the index serves both the plan and the proof: the index grows under
    // writes, and a block that was in memory when planned may need fetching a moment later.
    let merkle = state.store.with_merkle(MerkleIndex::clone);
    let mut needed = merkle.blocks_needed_for_inclusion(index, upto);
    needed.extend(merkle.blocks_needed_for_root(upto));
    let blocks = fetch_blocks(state.store.as_ref(), needed, upto).await?;
    let entry = state
        .store
        .read_all(index, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal(format!("position {position} is missing")))?;
    let (path, head_hash) = off_the_workers(move || {
        Ok::<_, MerkleError>((
            merkle.inclusion_proof(index, upto, &blocks)?,
            merkle.root(upto, &blocks)?,
        ))
    })
    .await?;
    Ok(Json(json!({
        "position": position,
        "upto": upto,
        "leaf_hash": leaf_hash(&entry.hash),
        "hash": entry.hash,
        "path": path,
        "head_hash": head_hash,
    })))
}

/// `GET /v1/audit/proof/consistency`: the RFC 6962 proof that the tree of size `from` is a
/// prefix of the tree of size `upto` (default: the head).
pub(crate) async fn consistency_proof<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    let from = required_number(&params, "from")?;
    let head = state.store.head();
    let upto = whole_number(&params, "upto")?.unwrap_or(head);
    check_range("from", from, upto, head)?;
    // One snapshot of the index for plan and proof, as for inclusion proofs.
    let merkle = state.store.with_merkle(MerkleIndex::clone);
    let mut needed = merkle.blocks_needed_for_consistency(from, upto);
    needed.extend(merkle.blocks_needed_for_root(upto));
    needed.extend(merkle.blocks_needed_for_root(from));
    let blocks = fetch_blocks(state.store.as_ref(), needed, upto).await?;
    let (path, from_head, head_hash) = off_the_workers(move || {
        Ok::<_, MerkleError>((
            merkle.consistency_proof(from, upto, &blocks)?,
            merkle.root(from, &blocks)?,
            merkle.root(upto, &blocks)?,
        ))
    })
    .await?;
    Ok(Json(json!({
        "from": from,
        "upto": upto,
        "path": path,
        "from_head_hash": from_head,
        "head_hash": head_hash,
    })))
}
