//! Columns of fixed-width values, stored as one byte string each: what a snapshot holds a
//! million of (loop records, their SLA figures, id offsets) decodes at the speed of copying
//! memory, where value-by-value decoding would cost a call and a branch per field.

use std::borrow::Borrow;

use serde::{Serialize, Serializer};

use crate::record::{Cold, ColdTable, Hot};
use crate::timing::SlotTiming;

/// A value with a fixed-width little-endian form.
pub(crate) trait Plain: Sized {
    /// How many bytes one value takes.
    const WIDTH: usize;
    /// Appends the value's bytes.
    fn put(&self, out: &mut Vec<u8>);
    /// The value from exactly [`WIDTH`](Self::WIDTH) bytes.
    fn take(bytes: &[u8]) -> Self;
}

/// A slice of values serialised as one byte string (postcard: a length, then the bytes).
pub(crate) struct Column<'a, T>(pub(crate) &'a [T]);

impl<T: Plain> Serialize for Column<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&column_bytes::<T>(self.0.len(), self.0.iter()))
    }
}

/// The loops' cold records, written as a [`Column`] of [`Cold`] (the table keeps them packed).
pub(crate) struct ColdColumn<'a>(pub(crate) &'a ColdTable);

impl Serialize for ColdColumn<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&column_bytes::<Cold>(self.0.len(), self.0.iter()))
    }
}

/// `len` values' bytes, one after another.
fn column_bytes<T: Plain>(len: usize, values: impl Iterator<Item = impl Borrow<T>>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len * T::WIDTH);
    for value in values {
        value.borrow().put(&mut bytes);
    }
    bytes
}

/// The values of a byte string written by [`Column`]; `what` names the column in the error.
pub(crate) fn column<T: Plain>(bytes: &[u8], what: &str) -> Result<Vec<T>, String> {
    if !bytes.len().is_multiple_of(T::WIDTH) {
        return Err(format!("the {what} column is not a whole number of values"));
    }
    Ok(bytes.chunks_exact(T::WIDTH).map(T::take).collect())
}

/// Reads fixed-width fields one after another from a value's bytes.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split at N")
    }

    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }
}

impl Plain for u32 {
    const WIDTH: usize = 4;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn take(bytes: &[u8]) -> Self {
        Fields(bytes).u32()
    }
}

impl Plain for u64 {
    const WIDTH: usize = 8;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn take(bytes: &[u8]) -> Self {
        Fields(bytes).u64()
    }
}

impl Plain for Hot {
    const WIDTH: usize = 8 + 4 + 4 * 4 + 3;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.received_secs.to_le_bytes());
        out.extend_from_slice(&self.received_nanos.to_le_bytes());
        for id in [self.org, self.themes, self.tags, self.ratings] {
            out.extend_from_slice(&id.to_le_bytes());
        }
        out.extend_from_slice(&[self.stage, self.channel, self.flags]);
    }
    fn take(bytes: &[u8]) -> Self {
        let mut fields = Fields(bytes);
        Self {
            received_secs: fields.i64(),
            received_nanos: fields.i32(),
            org: fields.u32(),
            themes: fields.u32(),
            tags: fields.u32(),
            ratings: fields.u32(),
            stage: fields.u8(),
            channel: fields.u8(),
            flags: fields.u8(),
        }
    }
}

impl Plain for Cold {
    const WIDTH: usize = 8 + 4 * 8 + 4 * 4 + 16;
    fn put(&self, out: &mut Vec<u8>) {
        let (secs, nanos) = self.times();
        out.extend_from_slice(&self.version.to_le_bytes());
        for secs in secs {
            out.extend_from_slice(&secs.to_le_bytes());
        }
        for nanos in nanos {
            out.extend_from_slice(&nanos.to_le_bytes());
        }
        out.extend_from_slice(&self.public_id);
    }
    fn take(bytes: &[u8]) -> Self {
        let mut fields = Fields(bytes);
        let version = fields.u64();
        let secs = [fields.i64(), fields.i64(), fields.i64(), fields.i64()];
        let nanos = [fields.i32(), fields.i32(), fields.i32(), fields.i32()];
        Self::from_times(version, secs, nanos, fields.array())
    }
}

impl Plain for SlotTiming {
    const WIDTH: usize = 3 * 8;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.due.to_le_bytes());
        out.extend_from_slice(&self.ack.to_le_bytes());
        out.extend_from_slice(&self.close.to_le_bytes());
    }
    fn take(bytes: &[u8]) -> Self {
        let mut fields = Fields(bytes);
        Self {
            due: fields.i64(),
            ack: fields.u64(),
            close: fields.u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Plain + PartialEq + std::fmt::Debug>(values: &[T]) {
        let bytes = postcard::to_stdvec(&Column(values)).unwrap();
        let back: &[u8] = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.len(), values.len() * T::WIDTH);
        assert_eq!(column::<T>(back, "test").unwrap(), values);
        if T::WIDTH > 1 && !back.is_empty() {
            assert!(column::<T>(&back[1..], "test").is_err(), "a torn column");
        }
    }

    #[test]
    fn columns_round_trip_every_field() {
        round_trip(&[0_u32, 1, u32::MAX]);
        round_trip(&[0_u64, 7, u64::MAX]);
        round_trip(&[Hot {
            received_secs: -5,
            received_nanos: -7,
            org: 1,
            themes: 2,
            tags: 3,
            ratings: 4,
            stage: 5,
            channel: 6,
            flags: 7,
        }]);
        let mut cold = Cold::new(
            9,
            crate::record::Ts {
                secs: 100,
                nanos: 5,
            },
            [3; 16],
        );
        cold.set(
            crate::record::When::ClosedAt,
            Some(crate::record::Ts { secs: -1, nanos: 8 }),
        );
        round_trip(&[
            cold,
            Cold::new(1, crate::record::Ts { secs: 0, nanos: 0 }, [0; 16]),
        ]);
        round_trip(&[SlotTiming {
            due: i64::MIN,
            ack: 1,
            close: u64::MAX,
        }]);
        round_trip::<u32>(&[]);
    }
}
