//! The index in a file, so that a store reopens in a fraction of a second instead of reading
//! every entry header of a big log again.
//!
//! The file is derived data, like the index: it describes the log up to one position (`head`)
//! and names the hash of the entry there, and a store uses it only when the log it opens holds
//! that entry with that hash. Then it reads only the entries after `head`; otherwise (no file,
//! another version, damage, another log) it rebuilds the index from every entry header, as
//! before. It holds no personal data: loop ids, hashes, 32 bits of each idempotency key's
//! digest.
//!
//! Layout, little-endian: a 16-byte magic, the version (u32), `head` (u64), the entry hash at
//! `head` (32 bytes), then sections each led by its length in items (u64): loop id bytes, loop
//! id ends, loop rows (last position, version), `head` back-links (u32), far
//! back-links (position, distance), `head` key digests (u32), far keys (digest, position),
//! Merkle block roots, the partial Merkle block; last a CRC-32 of everything before it.
//!
//! The file holds no head hashes (version 1 did, 32 bytes a loop): the index it opens reads
//! each loop's from the loop's last entry (see [`Index::reading_head_hashes`]).

use std::collections::HashMap;
use std::io::{self, Write};

use super::{ByEntry, HeadHashes, Index, Keys, LoopRow, Loops, RecentHashes};
use crate::LoopIds;
use crate::chain::Hash;
use crate::merkle::MerkleIndex;

/// The first bytes of every index file.
const MAGIC: &[u8; 16] = b"closeloop-index\n";

/// The layout this build writes and reads; any other is ignored and the index rebuilt.
pub const INDEX_FILE_VERSION: u32 = 2;

/// What an index file holds: the index of the log up to `head`.
#[derive(Debug)]
pub struct IndexFile {
    /// The index of entries `1..=head`.
    pub index: Index,
    /// The last position the index covers.
    pub head: u64,
    /// The hash of the entry at `head` (zeros when `head` is 0): the log must hold it.
    pub head_hash: Hash,
}

impl Index {
    /// The index file's bytes for this index, which covers the log up to `head`, whose entry
    /// there has `head_hash`: [`write_file`](Self::write_file) into memory.
    pub fn encode_file(&self, head: u64, head_hash: Hash) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.write_file(&mut bytes, head, head_hash)
            .expect("writing to memory does not fail");
        bytes
    }

    /// Writes the index file for this index, which covers the log up to `head`, whose entry
    /// there has `head_hash`, to `out` as it goes: the file is never built in memory whole
    /// (only the loop ids' parts and the keys' digests, 8 bytes an entry or so, are gathered
    /// first). The index must cover exactly positions `1..=head`, none missing. Buffer `out`:
    /// it is written a few bytes at a time.
    ///
    /// # Errors
    /// The first error `out` returns.
    pub fn write_file(&self, out: impl Write, head: u64, head_hash: Hash) -> io::Result<()> {
        debug_assert_eq!(
            self.merkle.size(),
            head,
            "the index covers the log up to head"
        );
        let Loops {
            ids,
            rows,
            head_hashes: _,
            back,
            far_back,
        } = &self.loops;
        let (id_bytes, id_ends) = ids.to_parts();
        let (block_roots, partial) = self.merkle.parts();
        let entries = usize::try_from(head).expect("positions fit in memory");
        let mut out = Writer {
            out,
            crc: crc32fast::Hasher::new(),
        };
        out.bytes(MAGIC)?;
        out.u32(INDEX_FILE_VERSION)?;
        out.u64(head)?;
        out.bytes(&head_hash.0)?;

        out.len(id_bytes.len())?;
        out.bytes(id_bytes.as_bytes())?;
        out.len(id_ends.len())?;
        for &end in &id_ends {
            out.u64(end)?;
        }
        out.len(rows.len())?;
        for row in rows {
            out.u64(row.last)?;
            out.u64(row.version)?;
        }
        out.len(entries)?;
        for at in 0..entries {
            out.u32(back.get(at))?;
        }
        out.len(far_back.len())?;
        for (&position, &distance) in far_back {
            out.u64(position)?;
            out.u64(distance)?;
        }

        out.len(entries)?;
        for digest in self.keys.digests_by_entry(entries) {
            out.u32(digest)?;
        }
        let far_keys: Vec<(u32, u64)> = self.keys.far().collect();
        out.len(far_keys.len())?;
        for (digest, position) in far_keys {
            out.u32(digest)?;
            out.u64(position)?;
        }

        out.len(block_roots.len())?;
        for root in block_roots {
            out.bytes(&root.0)?;
        }
        out.len(partial.len())?;
        for hash in partial {
            out.bytes(&hash.0)?;
        }

        let Writer { mut out, crc } = out;
        out.write_all(&crc.finalize().to_le_bytes())?;
        out.flush()
    }

    /// Reads an index file written by [`encode_file`](Self::encode_file).
    ///
    /// # Errors
    /// A sentence saying why the file cannot be used (another version, damage, sections that
    /// do not agree); the caller then rebuilds the index from the log.
    pub fn decode_file(bytes: &[u8]) -> Result<IndexFile, String> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .ok_or("the file is shorter than its checksum")?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err("the file fails its checksum".to_owned());
        }
        let mut input = Reader(body);
        if input.take(MAGIC.len())? != MAGIC {
            return Err("the file is not a Closeloop store index".to_owned());
        }
        let version = input.u32()?;
        if version != INDEX_FILE_VERSION {
            return Err(format!(
                "the file has layout {version}; this build reads {INDEX_FILE_VERSION}"
            ));
        }
        let head = input.u64()?;
        let head_hash = input.hash()?;
        let entries = usize::try_from(head).map_err(|_| "head does not fit in memory")?;

        let id_bytes = input.items(1)?;
        let id_bytes = std::str::from_utf8(id_bytes).map_err(|_| "loop ids are not UTF-8")?;
        let id_ends: Vec<u64> = input.items(8)?.chunks_exact(8).map(le_u64).collect();
        let rows: Vec<LoopRow> = input
            .items(16)?
            .chunks_exact(16)
            .map(|row| LoopRow {
                last: le_u64(&row[..8]),
                version: le_u64(&row[8..]),
            })
            .collect();
        if rows.len() != id_ends.len() {
            return Err("loop ids and loop rows differ in number".to_owned());
        }
        if rows.iter().any(|row| row.last > head || row.version == 0) {
            return Err("a loop row points past the head".to_owned());
        }
        let back = per_entry(input.items(4)?, entries, "back-links")?;
        let far_back: HashMap<u64, u64> = input
            .items(16)?
            .chunks_exact(16)
            .map(|pair| (le_u64(&pair[..8]), le_u64(&pair[8..])))
            .collect();

        let digests = input.items(4)?;
        if digests.len() / 4 != entries {
            return Err(format!(
                "it holds {} key digests for {entries} entries",
                digests.len() / 4
            ));
        }
        let digests: Vec<u32> = digests
            .chunks_exact(4)
            .map(|value| u32::from_le_bytes(value.try_into().expect("4 bytes")))
            .collect();
        let mut far_keys: HashMap<u32, Vec<u64>> = HashMap::new();
        for pair in input.items(12)?.chunks_exact(12) {
            let digest = u32::from_le_bytes(pair[..4].try_into().expect("4 bytes"));
            far_keys.entry(digest).or_default().push(le_u64(&pair[4..]));
        }

        let block_roots = hashes(input.items(32)?);
        let partial = hashes(input.items(32)?);
        if !input.0.is_empty() {
            return Err("the file has bytes after its last section".to_owned());
        }
        let merkle = MerkleIndex::from_parts(block_roots, partial)?;
        if merkle.size() != head {
            return Err(format!(
                "its Merkle roots cover {} entries, not the {head} it names",
                merkle.size()
            ));
        }

        // The loop table and the keys are independent: build them on both cores.
        let (ids, keys) = std::thread::scope(|scope| {
            let ids = scope.spawn(|| LoopIds::from_parts(id_bytes, &id_ends));
            let keys = Keys::from_parts(&digests, far_keys);
            (ids.join().expect("building the loop table panicked"), keys)
        });
        let index = Index {
            loops: Loops {
                ids: ids?,
                rows,
                head_hashes: HeadHashes::InLog(RecentHashes::default()),
                back,
                far_back,
            },
            keys,
            merkle,
        };
        Ok(IndexFile {
            index,
            head,
            head_hash,
        })
    }
}

fn per_entry(bytes: &[u8], entries: usize, what: &str) -> Result<ByEntry, String> {
    if bytes.len() / 4 != entries {
        return Err(format!(
            "it holds {} {what} for {entries} entries",
            bytes.len() / 4
        ));
    }
    Ok(ByEntry::from_values(bytes.chunks_exact(4).map(|value| {
        u32::from_le_bytes(value.try_into().expect("4 bytes"))
    })))
}

fn hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks_exact(32)
        .map(|hash| Hash(hash.try_into().expect("32 bytes")))
        .collect()
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

/// Writes sections to `out`, keeping the CRC-32 of everything written.
struct Writer<W> {
    out: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Writer<W> {
    fn bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }
    fn u32(&mut self, value: u32) -> io::Result<()> {
        self.bytes(&value.to_le_bytes())
    }
    fn u64(&mut self, value: u64) -> io::Result<()> {
        self.bytes(&value.to_le_bytes())
    }
    fn len(&mut self, items: usize) -> io::Result<()> {
        self.u64(items as u64)
    }
}

/// Reads sections, never trusting a length further than the bytes that are there.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("the file ends inside a section".to_owned());
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(le_u64(self.take(8)?))
    }
    fn hash(&mut self) -> Result<Hash, String> {
        Ok(Hash(self.take(32)?.try_into().expect("32 bytes")))
    }
    /// A section of items of `size` bytes each, led by its item count.
    fn items(&mut self, size: usize) -> Result<&'a [u8], String> {
        let count = self.u64()?;
        let bytes = usize::try_from(count)
            .ok()
            .and_then(|count| count.checked_mul(size))
            .ok_or("a section is longer than the file")?;
        self.take(bytes)
    }
}

#[cfg(test)]
mod tests {
    use closeloop_domain::LoopId;

    use super::*;
    use crate::backend::index::HeadHash;

    fn sample(entries: u64) -> Index {
        let mut index = Index::reading_head_hashes();
        for position in 1..=entries {
            let loop_id = LoopId::parse(&format!("loop-{}", position % 7)).expect("valid id");
            let hash = Hash([u8::try_from(position % 251).expect("small"); 32]);
            index.insert(&loop_id, "urn:x", &position.to_string(), position, hash);
        }
        index
    }

    #[test]
    fn an_index_file_reads_back_as_the_same_index() {
        let index = sample(700);
        let bytes = index.encode_file(700, Hash([9; 32]));
        let file = Index::decode_file(&bytes).expect("reads back");
        assert_eq!((file.head, file.head_hash), (700, Hash([9; 32])));
        let back = file.index;
        for n in 0..7 {
            let loop_id = LoopId::parse(&format!("loop-{n}")).expect("valid id");
            let last = *index
                .positions_upto(&loop_id, u64::MAX)
                .last()
                .expect("every loop has entries");
            // The file keeps no hashes of recent entries: the read index names the entry.
            assert_eq!(
                back.head(&loop_id),
                (index.head(&loop_id).0, HeadHash::OfEntry(last))
            );
            assert_eq!(
                back.positions_upto(&loop_id, u64::MAX),
                index.positions_upto(&loop_id, u64::MAX)
            );
        }
        assert_eq!(back.candidates_for_key("urn:x", "517"), vec![517]);
        assert!(back.candidates_for_key("urn:x", "701").is_empty());
        assert_eq!(back.merkle.size(), 700);
        assert_eq!(back.merkle.parts(), index.merkle.parts());
        assert_eq!(back.loop_count(), 7);
    }

    #[test]
    fn an_index_that_kept_head_hashes_reads_back_naming_their_entries() {
        let mut index = Index::default();
        let loop_id = LoopId::parse("loop-1").expect("valid id");
        index.insert(&loop_id, "urn:x", "1", 1, Hash([1; 32]));
        index.insert(&loop_id, "urn:x", "2", 2, Hash([2; 32]));
        assert_eq!(index.head(&loop_id), (2, HeadHash::Known(Hash([2; 32]))));
        let back = Index::decode_file(&index.encode_file(2, Hash([2; 32])))
            .expect("reads back")
            .index;
        assert_eq!(back.head(&loop_id), (2, HeadHash::OfEntry(2)));
    }

    #[test]
    fn an_empty_index_round_trips() {
        let file =
            Index::decode_file(&Index::default().encode_file(0, Hash::ZERO)).expect("reads back");
        assert_eq!(file.head, 0);
        assert_eq!(file.index.loop_count(), 0);
    }

    #[test]
    fn a_damaged_truncated_or_foreign_file_is_refused_with_its_reason() {
        let bytes = sample(300).encode_file(300, Hash([1; 32]));
        let mut flipped = bytes.clone();
        flipped[200] ^= 1;
        assert_eq!(
            Index::decode_file(&flipped).unwrap_err(),
            "the file fails its checksum"
        );
        assert_eq!(
            Index::decode_file(&bytes[..2]).unwrap_err(),
            "the file is shorter than its checksum"
        );

        // A file whose checksum is right but whose sections lie about their lengths.
        let mut forged = bytes[..bytes.len() - 4].to_vec();
        let ids_len_at = MAGIC.len() + 4 + 8 + 32;
        forged[ids_len_at..ids_len_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let crc = crc32fast::hash(&forged);
        forged.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Index::decode_file(&forged).unwrap_err(),
            "the file ends inside a section"
        );

        let mut other_version = bytes[..bytes.len() - 4].to_vec();
        other_version[MAGIC.len()] = 99;
        let crc = crc32fast::hash(&other_version);
        other_version.extend_from_slice(&crc.to_le_bytes());
        assert!(
            Index::decode_file(&other_version)
                .unwrap_err()
                .contains("layout 99")
        );
    }
}
