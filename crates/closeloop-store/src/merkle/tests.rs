//! Tests of the tree head, the reference proofs, the verifiers and [`MerkleIndex`].

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn entries(n: usize) -> Vec<Hash> {
    (0..n).map(|i| Hash::of(&i.to_be_bytes())).collect()
}

fn index_of(all: &[Hash]) -> MerkleIndex {
    let mut index = MerkleIndex::new();
    for entry in all {
        index.push(entry);
    }
    index
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).expect("fits")
}

/// The blocks `wanted` as storage would return them: whole, or cut at `size` when `trim`.
fn fetch(all: &[Hash], wanted: &[u64], size: u64, trim: bool) -> BTreeMap<u64, Vec<Hash>> {
    wanted
        .iter()
        .map(|&block| {
            let lo = usize_of(block * BLOCK);
            let end = if trim { size } else { all.len() as u64 };
            let hi = usize_of(((block + 1) * BLOCK).min(end));
            (block, all[lo..hi].to_vec())
        })
        .collect()
}

/// A few interesting values below `n`: the ends, the middle, around block boundaries, and
/// around powers of two.
fn sample_below(n: usize) -> Vec<usize> {
    let mut picks = vec![0, 1, 2, n / 2, n.saturating_sub(2), n.saturating_sub(1)];
    for edge in [
        127, 128, 129, 255, 256, 257, 383, 511, 512, 513, 767, 768, 1023, 1024, 1025,
    ] {
        picks.push(edge);
    }
    picks.retain(|&i| i < n);
    picks.sort_unstable();
    picks.dedup();
    picks
}

/// The values below `n` to try for a tree of `n` leaves: all of [`sample_below`] for small
/// trees and next to block boundaries, else one value that moves with `n`.
fn picks_below(n: usize) -> Vec<usize> {
    let near = |edge: usize| n.abs_diff(edge) <= 1;
    if n <= 20 || [128, 256, 384, 512].into_iter().any(near) {
        return sample_below(n);
    }
    vec![(n * 37 + 11) % n]
}

/// Variants of `path` that must not verify: every element with a flipped byte, every element
/// dropped, an element appended (fresh, or the last repeated), every pair of neighbours
/// swapped and the ends swapped.
fn forgeries(path: &[Hash]) -> Vec<Vec<Hash>> {
    let mut forged = Vec::new();
    for i in 0..path.len() {
        for byte in [0, 17, 31] {
            let mut f = path.to_vec();
            f[i].0[byte] ^= 0x01;
            forged.push(f);
        }
        let mut f = path.to_vec();
        f.remove(i);
        forged.push(f);
    }
    let mut f = path.to_vec();
    f.push(Hash::of(b"extra"));
    forged.push(f);
    if let Some(last) = path.last() {
        let mut f = path.to_vec();
        f.push(*last);
        forged.push(f);
        let mut f = path.to_vec();
        f.insert(0, Hash::of(b"extra"));
        forged.push(f);
    }
    for i in 1..path.len() {
        let mut f = path.to_vec();
        f.swap(i - 1, i);
        forged.push(f);
    }
    if path.len() > 2 {
        let mut f = path.to_vec();
        f.swap(0, path.len() - 1);
        forged.push(f);
    }
    forged
}

// ----- The tree head. -----

#[test]
fn frontier_agrees_with_the_recursive_definition_for_every_size() {
    let all = entries(70);
    let mut frontier = MerkleFrontier::new();
    assert_eq!(frontier.root(), root_of(&[]));
    for (i, entry) in all.iter().enumerate() {
        frontier.push(entry);
        assert_eq!(frontier.root(), root_of(&all[..=i]), "size {}", i + 1);
    }
}

#[test]
fn split_points_are_the_largest_power_of_two_below_n() {
    assert_eq!(largest_power_of_two_below(2), 1);
    assert_eq!(largest_power_of_two_below(3), 2);
    assert_eq!(largest_power_of_two_below(4), 2);
    assert_eq!(largest_power_of_two_below(5), 4);
    assert_eq!(largest_power_of_two_below(8), 4);
    assert_eq!(largest_power_of_two_below(9), 8);
}

#[test]
fn three_leaves_hash_as_rfc_6962_says() {
    let [a, b, c] = [Hash::of(b"a"), Hash::of(b"b"), Hash::of(b"c")];
    let expected = node_hash(&node_hash(&leaf_hash(&a), &leaf_hash(&b)), &leaf_hash(&c));
    assert_eq!(root_of(&[a, b, c]), expected);
    assert_eq!(
        empty_root().to_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

// ----- Fixed vectors, worked by hand from RFC 6962 §2.1.3. -----

/// The leaves a..g of the RFC's example tree of seven, and its named interior nodes.
struct Seven {
    d: Vec<Hash>,
    leaf: Vec<Hash>,
    /// g = H(a, b), h = H(c, d), i = H(e, f), k = H(g, h), l = H(i, leaf 6).
    g: Hash,
    h: Hash,
    i: Hash,
    k: Hash,
    l: Hash,
}

fn seven() -> Seven {
    let d: Vec<Hash> = [b"a", b"b", b"c", b"d", b"e", b"f", b"g"]
        .iter()
        .map(|s| Hash::of(*s))
        .collect();
    let leaf: Vec<Hash> = d.iter().map(leaf_hash).collect();
    let g = node_hash(&leaf[0], &leaf[1]);
    let h = node_hash(&leaf[2], &leaf[3]);
    let i = node_hash(&leaf[4], &leaf[5]);
    let k = node_hash(&g, &h);
    let l = node_hash(&i, &leaf[6]);
    Seven {
        d,
        leaf,
        g,
        h,
        i,
        k,
        l,
    }
}

#[test]
fn fixed_vectors_for_one_two_three_and_four_leaves() {
    let t = seven();
    let (d, leaf) = (&t.d, &t.leaf);
    let empty = BTreeMap::new();
    let index = index_of(&d[..4]);

    // n = 1: the head is the leaf hash, the path is empty.
    assert_eq!(root_of(&d[..1]), leaf[0]);
    assert_eq!(
        leaf[0],
        Hash::of(&[&[0u8][..], &d[0].0[..]].concat()),
        "leaf = SHA-256(0x00 ‖ hash)"
    );
    assert_eq!(inclusion_path(&d[..1], 0), Vec::<Hash>::new());
    assert!(verify_inclusion(&d[0], 0, 1, &[], &leaf[0]));

    // n = 2.
    assert_eq!(
        t.g,
        Hash::of(&[&[1u8][..], &leaf[0].0[..], &leaf[1].0[..]].concat())
    );
    assert_eq!(root_of(&d[..2]), t.g);
    assert_eq!(inclusion_path(&d[..2], 0), vec![leaf[1]]);
    assert_eq!(inclusion_path(&d[..2], 1), vec![leaf[0]]);
    assert_eq!(consistency_path(&d[..2], 1), vec![leaf[1]]);

    // n = 3: H(H(a, b), c).
    let three = node_hash(&t.g, &leaf[2]);
    assert_eq!(root_of(&d[..3]), three);
    assert_eq!(inclusion_path(&d[..3], 0), vec![leaf[1], leaf[2]]);
    assert_eq!(inclusion_path(&d[..3], 2), vec![t.g]);
    assert_eq!(consistency_path(&d[..3], 1), vec![leaf[1], leaf[2]]);
    assert_eq!(consistency_path(&d[..3], 2), vec![leaf[2]]);

    // n = 4: k = H(g, h); PROOF(3, D[4]) = [c, d, g].
    assert_eq!(root_of(&d[..4]), t.k);
    assert_eq!(inclusion_path(&d[..4], 3), vec![leaf[2], t.g]);
    assert_eq!(consistency_path(&d[..4], 3), vec![leaf[2], leaf[3], t.g]);
    assert_eq!(consistency_path(&d[..4], 2), vec![t.h]);
    assert!(verify_consistency(
        3,
        4,
        &three,
        &t.k,
        &[leaf[2], leaf[3], t.g]
    ));
    assert!(verify_consistency(2, 4, &t.g, &t.k, &[t.h]));

    for size in 1..=4 {
        assert_eq!(index.root(size, &empty), Ok(root_of(&d[..usize_of(size)])));
    }
    assert_eq!(index.inclusion_proof(3, 4, &empty), Ok(vec![leaf[2], t.g]));
    assert_eq!(
        index.consistency_proof(3, 4, &empty),
        Ok(vec![leaf[2], leaf[3], t.g])
    );
}

#[test]
fn fixed_vectors_for_the_seven_leaf_example_of_rfc_6962() {
    let t = seven();
    let (d, leaf) = (&t.d, &t.leaf);
    let root = node_hash(&t.k, &t.l);
    assert_eq!(root_of(d), root);

    // Audit paths: a = [b, h, l], d = [c, g, l], e = [f, j, k], g = [i, k] (j = leaf g).
    let paths = [
        (0, vec![leaf[1], t.h, t.l]),
        (3, vec![leaf[2], t.g, t.l]),
        (4, vec![leaf[5], leaf[6], t.k]),
        (6, vec![t.i, t.k]),
    ];
    let index = index_of(d);
    let empty = BTreeMap::new();
    for (i, path) in paths {
        assert_eq!(inclusion_path(d, i), path, "leaf {i}");
        assert_eq!(
            index.inclusion_proof(i as u64, 7, &empty).as_ref(),
            Ok(&path)
        );
        assert!(verify_inclusion(&d[i], i as u64, 7, &path, &root));
    }

    // Consistency: PROOF(3, D[7]) = [c, d, g, l], PROOF(4, D[7]) = [l], PROOF(6, D[7]) = [i, j, k].
    let proofs = [
        (3, vec![leaf[2], leaf[3], t.g, t.l]),
        (4, vec![t.l]),
        (6, vec![t.i, leaf[6], t.k]),
    ];
    for (m, proof) in proofs {
        assert_eq!(consistency_path(d, m), proof, "from {m}");
        assert_eq!(
            index.consistency_proof(m as u64, 7, &empty).as_ref(),
            Ok(&proof)
        );
        assert!(verify_consistency(
            m as u64,
            7,
            &root_of(&d[..m]),
            &root,
            &proof
        ));
    }
}

// ----- The reference algorithms and the verifiers. -----

#[test]
fn every_reference_proof_of_small_trees_verifies() {
    let all = entries(70);
    let roots: Vec<Hash> = (0..=all.len()).map(|n| root_of(&all[..n])).collect();
    for n in 1..=all.len() {
        let tree = &all[..n];
        let size = n as u64;
        for i in 0..n {
            let path = inclusion_path(tree, i);
            assert!(
                verify_inclusion(&tree[i], i as u64, size, &path, &roots[n]),
                "{i} in {n}"
            );
        }
        for m in 0..=n {
            let proof = consistency_path(tree, m);
            assert!(
                verify_consistency(m as u64, size, &roots[m], &roots[n], &proof),
                "{m} to {n}"
            );
        }
    }
}

#[test]
fn verifiers_handle_the_edge_cases() {
    let all = entries(9);
    let root = root_of(&all);
    let path = inclusion_path(&all, 8);
    // A leaf index at or past the size.
    assert!(verify_inclusion(&all[8], 8, 9, &path, &root));
    assert!(!verify_inclusion(&all[8], 9, 9, &path, &root));
    assert!(!verify_inclusion(&all[8], 10, 9, &path, &root));
    assert!(!verify_inclusion(&all[0], 0, 0, &[], &empty_root()));

    // from == size: the empty proof and equal heads.
    assert!(verify_consistency(9, 9, &root, &root, &[]));
    assert!(!verify_consistency(9, 9, &root, &root, &[root]));
    assert!(!verify_consistency(9, 9, &root, &root_of(&all[..8]), &[]));
    assert!(verify_consistency(0, 0, &empty_root(), &empty_root(), &[]));

    // from == 0: the empty proof from the empty tree's head, towards any head.
    assert!(verify_consistency(0, 9, &empty_root(), &root, &[]));
    assert!(!verify_consistency(0, 9, &empty_root(), &root, &[root]));
    assert!(!verify_consistency(0, 9, &root, &root, &[]));
    assert!(!verify_consistency(0, 9, &Hash::ZERO, &root, &[]));

    // from > size, and 0 < from < size with nothing to show.
    let proof = consistency_path(&all, 5);
    let five = root_of(&all[..5]);
    assert!(verify_consistency(5, 9, &five, &root, &proof));
    assert!(!verify_consistency(9, 5, &root, &five, &proof));
    assert!(!verify_consistency(9, 5, &root, &five, &[]));
    assert!(!verify_consistency(5, 9, &five, &root, &[]));
    assert!(!verify_consistency(4, 9, &root_of(&all[..4]), &root, &[]));
}

#[test]
#[should_panic(expected = "not in a tree")]
fn the_reference_path_refuses_a_leaf_outside_the_tree() {
    let _ = inclusion_path(&entries(3), 3);
}

#[test]
#[should_panic(expected = "no consistency proof")]
fn the_reference_proof_refuses_a_larger_old_tree() {
    let _ = consistency_path(&entries(3), 4);
}

/// Checks the forgeries of one inclusion proof; `roots[s]` is the head of size s.
fn assert_inclusion_forgeries_fail(all: &[Hash], roots: &[Hash], i: usize, n: usize) {
    let tree = &all[..n];
    let (index, size) = (i as u64, n as u64);
    let path = inclusion_path(tree, i);
    let accepts = |path: &[Hash], root: &Hash| verify_inclusion(&tree[i], index, size, path, root);
    assert!(accepts(&path, &roots[n]));
    for forged in forgeries(&path) {
        assert!(!accepts(&forged, &roots[n]), "{i} in {n}: {forged:?}");
    }
    // Another leaf's entry under this leaf's proof, at either index.
    for j in [0, i.saturating_sub(1), i + 1, n - 1] {
        if j == i || j >= n {
            continue;
        }
        let other = j as u64;
        assert!(
            !verify_inclusion(&tree[j], other, size, &path, &roots[n]),
            "{j} as {i} in {n}"
        );
        assert!(
            !verify_inclusion(&tree[j], index, size, &path, &roots[n]),
            "{j} at {i} in {n}"
        );
        assert!(
            !verify_inclusion(&tree[i], other, size, &path, &roots[n]),
            "{i} at {j} in {n}"
        );
    }
    // Wrong size, against the head of that size: only where the honest proof is the same.
    for other in [n - 1, n + 1, 2 * n] {
        if other == n || other <= i || other >= roots.len() {
            continue;
        }
        let honest = inclusion_path(&all[..other], i);
        let ok = verify_inclusion(&tree[i], index, other as u64, &path, &roots[other]);
        assert_eq!(ok, honest == path, "{i} in {n} claimed in {other}");
    }
    // Wrong heads.
    assert!(!accepts(&path, &roots[n - 1]));
    assert!(!accepts(&path, &roots[n + 1]));
    assert!(!accepts(&path, &Hash::ZERO));
    if n > 1 {
        assert!(!accepts(&path, &leaf_hash(&tree[i])));
    }
}

/// Checks the forgeries of one consistency proof; `roots[s]` is the head of size s.
fn assert_consistency_forgeries_fail(all: &[Hash], roots: &[Hash], m: usize, n: usize) {
    let (from, size) = (m as u64, n as u64);
    let proof = consistency_path(&all[..n], m);
    let accepts =
        |old: &Hash, new: &Hash, proof: &[Hash]| verify_consistency(from, size, old, new, proof);
    assert!(accepts(&roots[m], &roots[n], &proof));
    for forged in forgeries(&proof) {
        assert!(
            !accepts(&roots[m], &roots[n], &forged),
            "{m} to {n}: {forged:?}"
        );
    }
    if m != n {
        // Swapped sizes, or swapped heads.
        assert!(!verify_consistency(
            size, from, &roots[n], &roots[m], &proof
        ));
        assert!(!accepts(&roots[n], &roots[m], &proof));
    }
    // Wrong heads (from the empty tree only the old head is constrained).
    assert!(!accepts(&Hash::ZERO, &roots[n], &proof));
    assert!(!accepts(&roots[m + 1], &roots[n], &proof));
    if m > 0 {
        assert!(!accepts(&roots[m - 1], &roots[n], &proof));
        assert!(!accepts(&roots[m], &roots[n + 1], &proof));
        assert!(!accepts(&roots[m], &Hash::ZERO, &proof));
        if m < n {
            assert!(!accepts(&roots[m], &roots[n - 1], &proof));
        }
    }
    // Wrong sizes, against the heads of those sizes: only where the honest proof is the same.
    for (other_m, other_n) in [(m + 1, n), (m.wrapping_sub(1), n), (m, n + 1), (m, n - 1)] {
        if (other_m, other_n) == (m, n) || other_m > other_n || other_n >= roots.len() {
            continue;
        }
        let honest = consistency_path(&all[..other_n], other_m);
        let (old, new) = (&roots[other_m], &roots[other_n]);
        let ok = verify_consistency(other_m as u64, other_n as u64, old, new, &proof);
        assert_eq!(
            ok,
            honest == proof,
            "{m} to {n} claimed as {other_m} to {other_n}"
        );
    }
    if n > m + 1 && m > 0 {
        // A proof towards another tree of the same size.
        let mut other = all[..n].to_vec();
        other[n - 1] = Hash::of(b"rewritten");
        assert!(!accepts(&roots[m], &root_of(&other), &proof));
    }
}

#[test]
fn forged_inclusion_proofs_are_rejected() {
    let all = entries(1100);
    let roots: Vec<Hash> = (0..=all.len()).map(|n| root_of(&all[..n])).collect();
    for n in (1..=40).chain([63, 64, 65, 255, 256, 257, 511, 512, 513, 1000]) {
        for i in sample_below(n) {
            assert_inclusion_forgeries_fail(&all, &roots, i, n);
        }
    }
}

#[test]
fn forged_consistency_proofs_are_rejected() {
    let all = entries(1100);
    let roots: Vec<Hash> = (0..=all.len()).map(|n| root_of(&all[..n])).collect();
    for n in (1..=40).chain([63, 64, 65, 255, 256, 257, 511, 512, 513, 1000]) {
        for m in sample_below(n + 1) {
            assert_consistency_forgeries_fail(&all, &roots, m, n);
        }
    }
}

// ----- MerkleIndex against the reference. -----

/// The heads of every prefix of `all`, by [`MerkleFrontier`] (checked against [`root_of`]).
fn prefix_roots(all: &[Hash]) -> Vec<Hash> {
    let mut frontier = MerkleFrontier::new();
    let mut roots = vec![frontier.root()];
    for entry in all {
        frontier.push(entry);
        roots.push(frontier.root());
    }
    roots
}

/// Checks every query of `index` (holding a prefix of `all`, whose prefix heads are `roots`) at
/// `size` against the reference, with exactly the blocks it asks for, whole or cut at `size`.
fn assert_index_agrees(
    (all, roots): (&[Hash], &[Hash]),
    index: &MerkleIndex,
    size: usize,
    trim: bool,
    picks: fn(usize) -> Vec<usize>,
) {
    let tree = &all[..size];
    let n = size as u64;
    let root = roots[size];

    let wanted = index.blocks_needed_for_root(n);
    assert!(wanted.len() <= 1, "root of {n}: {wanted:?}");
    let got = index.root(n, &fetch(all, &wanted, n, trim));
    assert_eq!(got, Ok(root), "root of {n}");

    for i in picks(size) {
        let wanted = index.blocks_needed_for_inclusion(i as u64, n);
        assert!(wanted.len() <= 2, "{i} in {n}: {wanted:?}");
        let path = index.inclusion_proof(i as u64, n, &fetch(all, &wanted, n, trim));
        let path = path.unwrap_or_else(|err| panic!("{i} in {n}: {err}"));
        assert_eq!(path, inclusion_path(tree, i), "{i} in {n}");
        assert!(
            verify_inclusion(&tree[i], i as u64, n, &path, &root),
            "{i} in {n}"
        );
    }
    for m in picks(size + 1) {
        let wanted = index.blocks_needed_for_consistency(m as u64, n);
        assert!(wanted.len() <= 2, "{m} to {n}: {wanted:?}");
        let proof = index.consistency_proof(m as u64, n, &fetch(all, &wanted, n, trim));
        let proof = proof.unwrap_or_else(|err| panic!("{m} to {n}: {err}"));
        assert_eq!(proof, consistency_path(tree, m), "{m} to {n}");
        let from = m as u64;
        assert!(
            verify_consistency(from, n, &roots[m], &root, &proof),
            "{m} to {n}"
        );
    }
}

#[test]
fn index_at_its_own_size_agrees_with_the_reference_for_sizes_up_to_600() {
    let all = entries(600);
    let roots = prefix_roots(&all);
    assert_eq!(
        roots[..=70],
        (0..=70).map(|n| root_of(&all[..n])).collect::<Vec<_>>()
    );
    let mut index = MerkleIndex::new();
    let none = BTreeMap::new();
    assert_eq!(index.root(0, &none), Ok(empty_root()));
    for (i, entry) in all.iter().enumerate() {
        index.push(entry);
        let size = i + 1;
        assert_eq!(index.size(), size as u64);
        // The last block is in memory: the head at the index's own size needs nothing fetched.
        assert_eq!(
            index.blocks_needed_for_root(index.size()),
            Vec::<u64>::new()
        );
        assert_eq!(index.root(index.size(), &none), Ok(roots[size]));
        assert_index_agrees((&all, &roots), &index, size, false, picks_below);
    }
}

#[test]
fn index_of_a_longer_log_agrees_with_the_reference_for_sizes_up_to_600() {
    let all = entries(1300);
    let roots = prefix_roots(&all);
    let index = index_of(&all);
    for size in 0..=600 {
        assert_index_agrees((&all, &roots), &index, size, size % 2 == 0, picks_below);
    }
}

#[test]
fn index_agrees_with_the_reference_above_a_thousand() {
    let all = entries(4200);
    let roots = prefix_roots(&all);
    let index = index_of(&all);
    for (k, size) in [1000, 1024, 1025, 1281, 2049, 3333, 4096, 4097, 4200]
        .into_iter()
        .enumerate()
    {
        assert_index_agrees((&all, &roots), &index, size, k % 2 == 1, sample_below);
    }
}

#[test]
fn the_blocks_asked_for_are_exactly_the_blocks_read() {
    let all = entries(2000);
    let index = index_of(&all);
    let n = all.len() as u64;
    // The block of the leaf proven and the block the size cuts into.
    assert_eq!(index.blocks_needed_for_inclusion(300, 1500), vec![1, 5]);
    assert_eq!(index.blocks_needed_for_inclusion(1400, 1500), vec![5]);
    assert_eq!(index.blocks_needed_for_inclusion(300, 1536), vec![1]);
    // A leaf alone in its subtree needs no leaves: leaf 1536 in a tree of 1537.
    assert_eq!(
        index.blocks_needed_for_inclusion(1536, 1537),
        Vec::<u64>::new()
    );
    assert_eq!(index.blocks_needed_for_inclusion(1535, 1537), vec![5, 6]);
    assert_eq!(index.blocks_needed_for_consistency(700, 1500), vec![2, 5]);
    assert_eq!(index.blocks_needed_for_consistency(512, 1500), vec![5]);
    assert_eq!(
        index.blocks_needed_for_consistency(512, 1536),
        Vec::<u64>::new()
    );
    assert_eq!(index.blocks_needed_for_root(1536), Vec::<u64>::new());
    assert_eq!(index.blocks_needed_for_root(1537), vec![6]);
    // The partial block (1792..2000) is in memory.
    assert_eq!(index.blocks_needed_for_root(n), Vec::<u64>::new());
    assert_eq!(index.blocks_needed_for_root(1900), Vec::<u64>::new());
    assert_eq!(index.blocks_needed_for_inclusion(5, n), vec![0]);
    // Out of range: nothing, and the query says why.
    assert_eq!(index.blocks_needed_for_root(n + 1), Vec::<u64>::new());
    assert_eq!(index.blocks_needed_for_inclusion(n, n), Vec::<u64>::new());
    assert_eq!(
        index.blocks_needed_for_consistency(10, 5),
        Vec::<u64>::new()
    );

    // Leaving out any block asked for fails with MissingBlock; extra blocks change nothing.
    let every: Vec<u64> = (0..n.div_ceil(BLOCK)).collect();
    for (i, size) in [
        (300, 1500),
        (0, 257),
        (256, 257),
        (1000, 1999),
        (1790, 1793),
    ] {
        let wanted = index.blocks_needed_for_inclusion(i, size);
        let expected = index.inclusion_proof(i, size, &fetch(&all, &wanted, size, false));
        assert!(expected.is_ok());
        assert_eq!(
            index.inclusion_proof(i, size, &fetch(&all, &every, size, false)),
            expected
        );
        for &block in &wanted {
            let fewer: Vec<u64> = wanted.iter().copied().filter(|&b| b != block).collect();
            assert_eq!(
                index.inclusion_proof(i, size, &fetch(&all, &fewer, size, false)),
                Err(MerkleError::MissingBlock { block })
            );
        }
        let from = i + 1;
        let wanted = index.blocks_needed_for_consistency(from, size);
        let expected = index.consistency_proof(from, size, &fetch(&all, &wanted, size, false));
        assert!(expected.is_ok());
        assert_eq!(
            index.consistency_proof(from, size, &fetch(&all, &every, size, false)),
            expected
        );
        for &block in &wanted {
            let fewer: Vec<u64> = wanted.iter().copied().filter(|&b| b != block).collect();
            assert_eq!(
                index.consistency_proof(from, size, &fetch(&all, &fewer, size, false)),
                Err(MerkleError::MissingBlock { block })
            );
        }
    }
}

#[test]
fn the_index_says_what_is_wrong_and_what_to_do() {
    let all = entries(700);
    let index = index_of(&all);
    let none = BTreeMap::new();

    let err = index.root(701, &none).unwrap_err();
    assert_eq!(
        err,
        MerkleError::SizeBeyondIndex {
            size: 701,
            indexed: 700
        }
    );
    assert!(
        err.to_string().contains("push the missing entries"),
        "{err}"
    );

    let err = index.inclusion_proof(600, 600, &none).unwrap_err();
    assert_eq!(
        err,
        MerkleError::IndexOutOfRange {
            index: 600,
            size: 600
        }
    );
    assert!(err.to_string().contains("position - 1"), "{err}");

    let err = index.consistency_proof(601, 600, &none).unwrap_err();
    assert_eq!(
        err,
        MerkleError::FromBeyondSize {
            from: 601,
            size: 600
        }
    );
    assert!(err.to_string().contains("from <= size"), "{err}");

    let err = index.inclusion_proof(3, 600, &none).unwrap_err();
    assert_eq!(err, MerkleError::MissingBlock { block: 0 });
    assert!(err.to_string().contains("positions 1..=256"), "{err}");
    assert!(err.to_string().contains("blocks_needed_for_"), "{err}");

    let short = BTreeMap::from([(1, all[256..300].to_vec())]);
    let err = index.root(400, &short).unwrap_err();
    assert_eq!(
        err,
        MerkleError::ShortBlock {
            block: 1,
            got: 44,
            needed: 144
        }
    );
    assert!(
        err.to_string().contains("up to at least the tree size"),
        "{err}"
    );

    let long = BTreeMap::from([(1, all[256..600].to_vec())]);
    let err = index.root(400, &long).unwrap_err();
    assert_eq!(err, MerkleError::LongBlock { block: 1, got: 344 });
    assert!(err.to_string().contains("positions 257..=512"), "{err}");

    let mut tampered = all[256..512].to_vec();
    tampered[200] = Hash::of(b"tampered");
    let err = index
        .root(400, &BTreeMap::from([(1, tampered)]))
        .unwrap_err();
    assert_eq!(err, MerkleError::BlockMismatch { block: 1 });
    assert!(err.to_string().contains("audit verify"), "{err}");

    // A block cut at the size is taken as given: it is not whole, so it cannot be checked.
    let cut = BTreeMap::from([(1, all[256..400].to_vec())]);
    assert_eq!(index.root(400, &cut), Ok(root_of(&all[..400])));
}

#[test]
fn the_index_keeps_one_hash_per_block() {
    let all = entries(1000);
    let index = index_of(&all);
    assert_eq!(index.size(), 1000);
    assert_eq!(
        format!("{index:?}"),
        "MerkleIndex { size: 1000, complete_blocks: 3, partial: 232 }"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn index_proofs_equal_the_reference_and_verify(
        size in 1usize..3000,
        extra in 0usize..600,
        i_seed in any::<u64>(),
        m_seed in any::<u64>(),
        trim in any::<bool>(),
    ) {
        let all = entries(size + extra);
        let index = index_of(&all);
        let tree = &all[..size];
        let n = size as u64;
        let root = root_of(tree);
        let i = i_seed % n;
        let m = m_seed % (n + 1);

        let wanted = index.blocks_needed_for_root(n);
        prop_assert_eq!(index.root(n, &fetch(&all, &wanted, n, trim)), Ok(root));

        let wanted = index.blocks_needed_for_inclusion(i, n);
        let path = index.inclusion_proof(i, n, &fetch(&all, &wanted, n, trim)).unwrap();
        prop_assert_eq!(&path, &inclusion_path(tree, usize_of(i)));
        prop_assert!(verify_inclusion(&tree[usize_of(i)], i, n, &path, &root));
        if extra > 0 {
            // The same path must not prove inclusion in the next, larger tree.
            prop_assert!(!verify_inclusion(&tree[usize_of(i)], i, n + 1, &path, &root_of(&all[..=size])));
        }

        let wanted = index.blocks_needed_for_consistency(m, n);
        let proof = index.consistency_proof(m, n, &fetch(&all, &wanted, n, trim)).unwrap();
        prop_assert_eq!(&proof, &consistency_path(tree, usize_of(m)));
        let from_root = root_of(&all[..usize_of(m)]);
        prop_assert!(verify_consistency(m, n, &from_root, &root, &proof));
        if m < n {
            prop_assert!(!verify_consistency(n, m, &root, &from_root, &proof));
        }
    }
}
