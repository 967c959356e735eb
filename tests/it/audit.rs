//! An auditor's checks, written from RFC 6962 / RFC 9162 and the contract alone: tree heads,
//! inclusion and consistency proofs are verified here without any of the service's code.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::{AUDITOR, Api};
use crate::cli::{hex, merkle_tree_hash, to_hex};

fn node(left: &[u8], right: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().to_vec()
}

fn leaf(entry: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry);
    hasher.finalize().to_vec()
}

/// RFC 9162 §2.1.3.2.
fn verify_inclusion(
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: &[u8],
    path: &[Vec<u8>],
    root: &[u8],
) -> bool {
    if leaf_index >= tree_size {
        return false;
    }
    let (mut fn_, mut sn) = (leaf_index, tree_size - 1);
    let mut r = leaf_hash.to_vec();
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == root
}

/// RFC 9162 §2.1.4.2.
fn verify_consistency(
    first: u64,
    second: u64,
    first_hash: &[u8],
    second_hash: &[u8],
    path: &[Vec<u8>],
) -> bool {
    if path.is_empty() || first == 0 || first > second {
        return false;
    }
    let mut path = path.to_vec();
    if first.is_power_of_two() {
        path.insert(0, first_hash.to_vec());
    }
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = path[0].clone();
    let mut sr = path[0].clone();
    for c in &path[1..] {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node(c, &fr);
            sr = node(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == first_hash && sr == second_hash && sn == 0
}

fn hexes(value: &Value) -> Vec<Vec<u8>> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|h| hex(h.as_str().expect("hex")))
        .collect()
}

#[tokio::test]
async fn tree_heads_and_proofs_verify_independently_and_forgeries_do_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 2 × 150 = 300 events: more than one 256-leaf block.
    crate::seed(dir.path(), 150).await;
    let api = Api::start_in(dir);
    let log = api.get("/v1/events", AUDITOR).await;
    let entries: Vec<Vec<u8>> = log
        .text
        .lines()
        .map(|line| {
            hex(serde_json::from_str::<Value>(line).expect("line")["hash"]
                .as_str()
                .expect("hash"))
        })
        .collect();
    assert_eq!(entries.len(), 300);

    for upto in [1u64, 2, 3, 7, 255, 256, 257, 300] {
        let size = usize::try_from(upto).unwrap();
        let expected_root = merkle_tree_hash(&entries[..size]);
        let verified = api
            .get(&format!("/v1/audit/verify?upto={upto}"), AUDITOR)
            .await;
        assert_eq!(
            verified.body["head_hash"],
            to_hex(&expected_root).as_str(),
            "upto {upto}"
        );

        for position in [1, upto / 2 + 1, upto] {
            let proof = api
                .get(
                    &format!("/v1/audit/proof/inclusion?position={position}&upto={upto}"),
                    AUDITOR,
                )
                .await;
            assert_eq!(proof.status, 200, "{}", proof.text);
            let index = position - 1;
            let leaf_hash = leaf(&entries[usize::try_from(index).unwrap()]);
            assert_eq!(proof.body["leaf_hash"], to_hex(&leaf_hash).as_str());
            assert_eq!(proof.body["head_hash"], to_hex(&expected_root).as_str());
            let path = hexes(&proof.body["path"]);
            assert!(
                verify_inclusion(index, upto, &leaf_hash, &path, &expected_root),
                "position {position} of {upto}"
            );
            if let Some(first) = path.first() {
                let mut forged = path.clone();
                forged[0][0] ^= 1;
                assert!(!verify_inclusion(
                    index,
                    upto,
                    &leaf_hash,
                    &forged,
                    &expected_root
                ));
                assert_ne!(first, &forged[0]);
            }
            if upto > 1 {
                let other = leaf(&entries[usize::try_from((index + 1) % upto).unwrap()]);
                assert!(
                    !verify_inclusion(index, upto, &other, &path, &expected_root),
                    "another leaf must not verify"
                );
            }
        }

        for from in [1, upto / 3 + 1, upto - 1]
            .into_iter()
            .filter(|&f| f >= 1 && f < upto)
        {
            let proof = api
                .get(
                    &format!("/v1/audit/proof/consistency?from={from}&upto={upto}"),
                    AUDITOR,
                )
                .await;
            assert_eq!(proof.status, 200, "{}", proof.text);
            let first_root = merkle_tree_hash(&entries[..usize::try_from(from).unwrap()]);
            assert_eq!(proof.body["from_head_hash"], to_hex(&first_root).as_str());
            let path = hexes(&proof.body["path"]);
            assert!(
                verify_consistency(from, upto, &first_root, &expected_root, &path),
                "{from} -> {upto}"
            );
            let mut forged = path.clone();
            forged.last_mut().expect("a non-empty proof")[31] ^= 1;
            assert!(
                !verify_consistency(from, upto, &first_root, &expected_root, &forged),
                "forged {from} -> {upto}"
            );
        }
    }
    crate::api::check_problem(
        &api.get("/v1/audit/proof/inclusion?position=0&upto=3", AUDITOR)
            .await,
        400,
        "invalid_request",
    );
    crate::api::check_problem(
        &api.get("/v1/audit/proof/consistency?from=5&upto=301", AUDITOR)
            .await,
        400,
        "invalid_request",
    );
}
