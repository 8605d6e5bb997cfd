//! The compact binary encoding of stored document values, compressed with zstd when large.
//!
//! Layout (`docs/design/log-records.md` draws it): one format byte, then the payload.
//! - `FORMAT_PLAIN` (0x00): the value encoding below.
//! - `FORMAT_ZSTD` (0x01): a LEB128 length of the plain payload, then a zstd frame of it.
//!
//! Value encoding: a tag byte then a payload. null 0x00; int64 0x01 + zigzag LEB128;
//! float64 0x02 + 8 bytes little-endian; false 0x03; true 0x04; string 0x05 + LEB128 length +
//! UTF-8; bytes 0x06 + LEB128 length + bytes; array 0x07 + LEB128 count + items; object 0x08 +
//! LEB128 count + (LEB128 name length + name + value) per field, names strictly increasing.
//!
//! Invariants: `decode(encode(v)) == v` bit for bit (NaN payloads, -0.0); decoding never
//! panics or over-allocates on hostile input (lengths are checked against the remaining
//! bytes; the decompressed size is capped at [`MAX_DECODED_BYTES`]).

use crate::value::{Object, Value};

/// The payload is the plain value encoding.
pub const FORMAT_PLAIN: u8 = 0x00;
/// The payload is a zstd frame of the plain encoding.
pub const FORMAT_ZSTD: u8 = 0x01;
/// Plain encodings at least this long are compressed (when that makes them smaller).
pub const COMPRESSION_THRESHOLD_BYTES: usize = 4096;
/// zstd level: fast; documents are small and commits are latency-bound.
const ZSTD_LEVEL: i32 = 1;
/// Largest plain payload a stored value may decompress to (a 1 MiB document fits easily).
pub const MAX_DECODED_BYTES: usize = 64 << 20;

const T_NULL: u8 = 0x00;
const T_INT: u8 = 0x01;
const T_FLOAT: u8 = 0x02;
const T_FALSE: u8 = 0x03;
const T_TRUE: u8 = 0x04;
const T_STRING: u8 = 0x05;
const T_BYTES: u8 = 0x06;
const T_ARRAY: u8 = 0x07;
const T_OBJECT: u8 = 0x08;

/// A stored value that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt stored value at byte {offset}: {reason}")]
pub struct CodecError {
    /// Where the problem was found (in the plain payload for compressed values).
    pub offset: usize,
    /// What is wrong.
    pub reason: &'static str,
}

/// Append `n` as unsigned LEB128.
pub fn write_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn encode_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(T_NULL),
        Value::Int64(i) => {
            out.push(T_INT);
            write_varint(((i << 1) ^ (i >> 63)) as u64, out);
        }
        Value::Float64(f) => {
            out.push(T_FLOAT);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Boolean(false) => out.push(T_FALSE),
        Value::Boolean(true) => out.push(T_TRUE),
        Value::String(s) => {
            out.push(T_STRING);
            write_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(T_BYTES);
            write_varint(b.len() as u64, out);
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            out.push(T_ARRAY);
            write_varint(items.len() as u64, out);
            for item in items {
                encode_into(item, out);
            }
        }
        Value::Object(fields) => {
            out.push(T_OBJECT);
            write_varint(fields.len() as u64, out);
            for (name, item) in fields {
                write_varint(name.len() as u64, out);
                out.extend_from_slice(name.as_bytes());
                encode_into(item, out);
            }
        }
    }
}

/// The plain encoding of a value (no format byte).
pub fn encode_plain(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_into(value, &mut out);
    out
}

/// Encode a value for storage: format byte + payload, compressed above the threshold.
pub fn encode_stored(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_PLAIN);
    encode_into(value, &mut out);
    if out.len() > COMPRESSION_THRESHOLD_BYTES
        && let Ok(compressed) = zstd::bulk::compress(&out[1..], ZSTD_LEVEL)
    {
        let mut z = Vec::with_capacity(compressed.len() + 6);
        z.push(FORMAT_ZSTD);
        write_varint((out.len() - 1) as u64, &mut z);
        z.extend_from_slice(&compressed);
        if z.len() < out.len() {
            return z;
        }
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn err(&self, reason: &'static str) -> CodecError {
        CodecError {
            offset: self.pos,
            reason,
        }
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.err("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(self.err("varint too long"))
    }

    fn slice(&mut self, len: u64) -> Result<&[u8], CodecError> {
        let len = usize::try_from(len).map_err(|_| self.err("length too large"))?;
        let end = self
            .pos
            .checked_add(len)
            .ok_or_else(|| self.err("length too large"))?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| self.err("length past the end"))?;
        self.pos = end;
        Ok(s)
    }

    fn value(&mut self, depth: usize) -> Result<Value, CodecError> {
        if depth > crate::limits::MAX_VALUE_DEPTH + 1 {
            return Err(self.err("nested too deeply"));
        }
        Ok(match self.byte()? {
            T_NULL => Value::Null,
            T_INT => {
                let z = self.varint()?;
                Value::Int64(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            T_FLOAT => {
                let b = self.slice(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Float64(f64::from_bits(u64::from_le_bytes(a)))
            }
            T_FALSE => Value::Boolean(false),
            T_TRUE => Value::Boolean(true),
            T_STRING => {
                let len = self.varint()?;
                let at = self.pos;
                let s = self.slice(len)?;
                let s = std::str::from_utf8(s).map_err(|_| CodecError {
                    offset: at,
                    reason: "invalid UTF-8",
                })?;
                Value::String(s.to_owned())
            }
            T_BYTES => {
                let len = self.varint()?;
                Value::Bytes(self.slice(len)?.to_vec())
            }
            T_ARRAY => {
                let count = self.varint()?;
                // Each item takes at least one byte: bound the allocation by what is left.
                if count > (self.bytes.len() - self.pos) as u64 {
                    return Err(self.err("array count past the end"));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            T_OBJECT => {
                let count = self.varint()?;
                if count > (self.bytes.len() - self.pos) as u64 {
                    return Err(self.err("field count past the end"));
                }
                let mut fields = Object::new();
                for _ in 0..count {
                    let len = self.varint()?;
                    let at = self.pos;
                    let name = self.slice(len)?;
                    let name = std::str::from_utf8(name)
                        .map_err(|_| CodecError {
                            offset: at,
                            reason: "invalid UTF-8 in a name",
                        })?
                        .to_owned();
                    if fields
                        .last_key_value()
                        .is_some_and(|(last, _)| *last >= name)
                    {
                        return Err(self.err("object fields out of order"));
                    }
                    let item = self.value(depth + 1)?;
                    fields.insert(name, item);
                }
                Value::Object(fields)
            }
            _ => {
                self.pos -= 1;
                return Err(self.err("unknown tag"));
            }
        })
    }
}

/// Decode a plain payload (no format byte) that it fills exactly.
pub fn decode_plain(bytes: &[u8]) -> Result<Value, CodecError> {
    let mut reader = Reader { bytes, pos: 0 };
    let v = reader.value(0)?;
    if reader.pos != bytes.len() {
        return Err(reader.err("trailing bytes"));
    }
    Ok(v)
}

/// Decode a stored value (format byte + payload).
pub fn decode_stored(bytes: &[u8]) -> Result<Value, CodecError> {
    match bytes.first() {
        Some(&FORMAT_PLAIN) => decode_plain(&bytes[1..]),
        Some(&FORMAT_ZSTD) => {
            let mut reader = Reader { bytes, pos: 1 };
            let len = reader.varint()?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= MAX_DECODED_BYTES)
                .ok_or_else(|| reader.err("decompressed length over the limit"))?;
            let plain = zstd::bulk::decompress(&bytes[reader.pos..], len)
                .map_err(|_| reader.err("zstd frame does not decompress"))?;
            if plain.len() != len {
                return Err(reader.err("decompressed length mismatch"));
            }
            decode_plain(&plain)
        }
        Some(_) => Err(CodecError {
            offset: 0,
            reason: "unknown format byte",
        }),
        None => Err(CodecError {
            offset: 0,
            reason: "empty value",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests_support::arb_value;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn round_trip(v in arb_value()) {
            let stored = encode_stored(&v);
            let back = decode_stored(&stored).unwrap();
            prop_assert_eq!(encode_plain(&back), encode_plain(&v));
        }

        #[test]
        fn hostile_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_stored(&bytes);
        }
    }

    #[test]
    fn large_values_are_compressed() {
        let v = Value::String("abc".repeat(10_000));
        let stored = encode_stored(&v);
        assert_eq!(stored[0], FORMAT_ZSTD);
        assert!(stored.len() < 1000);
        assert_eq!(decode_stored(&stored).unwrap(), v);
    }
}
