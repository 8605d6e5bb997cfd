//! Order-preserving index keys: values to bytes whose memcmp order is Convex's value order.
//!
//! The layout follows FoundationDB's tuple layer, as convex-backend's
//! `crates/value/src/sorting.rs` does (spec §12). Each value is a tag byte then a payload;
//! the encoding is self-delimiting, so a tuple of values is their encodings concatenated and
//! compares element by element. `docs/design/index-keys.md` draws every layout.
//!
//! Rules (tags are the consts below):
//! - undefined (a missing field) 0x01 and null 0x03 have no payload.
//! - int64: 0 is 0x08; negatives 0x04 (8 bytes), 0x05 (4), 0x06 (2), 0x07 (1) with the
//!   big-endian two's complement in the fewest bytes that hold the value; positives 0x09
//!   (1 byte), 0x0A (2), 0x0B (4), 0x0C (8) with the big-endian unsigned value in the fewest
//!   bytes. More negative values need more bytes, so they get smaller tags.
//! - float64 0x0D: 8 bytes big-endian; if the sign bit is set every bit is inverted, else
//!   the sign bit is set (IEEE 754 total order).
//! - false 0x0E, true 0x0F.
//! - string 0x10 and bytes 0x11: the bytes with each 0x00 written as 0x00 0xFF, then 0x00.
//! - array 0x12: each element's encoding, then 0x00 (below every tag, so a prefix sorts first).
//! - object 0x15: for each field in name order, 0x01, the escaped name, 0x00, the value's
//!   encoding; then 0x00. The field marker 0x01 sits above the end byte, so an object that is
//!   a prefix of another sorts first, and a name's terminator (0x00 then a tag < 0xFF) sorts
//!   below an escaped 0x00 in a longer name.
//!
//! Invariants: `decode(encode(v)) == v`; for all a, b: `a.cmp(b) == encode(a).cmp(encode(b))`;
//! decoding accepts only canonical encodings, so `encode(decode(bytes)) == bytes`.
//!
//! A key in the keyspace is the 4-byte big-endian index id followed by the tuple of the
//! indexed values (see [`crate::index`]); intervals over that space are what read sets,
//! the write log and subscriptions work with.

use crate::value::{Object, Value};

/// A missing field (`undefined`).
pub const UNDEFINED_TAG: u8 = 0x01;
/// `null`.
pub const NULL_TAG: u8 = 0x03;
/// A negative int64 needing 8 bytes.
pub const NEG_INT64_8_TAG: u8 = 0x04;
/// A negative int64 fitting in 4 bytes.
pub const NEG_INT64_4_TAG: u8 = 0x05;
/// A negative int64 fitting in 2 bytes.
pub const NEG_INT64_2_TAG: u8 = 0x06;
/// A negative int64 fitting in 1 byte.
pub const NEG_INT64_1_TAG: u8 = 0x07;
/// The int64 zero.
pub const ZERO_INT64_TAG: u8 = 0x08;
/// A positive int64 fitting in 1 byte.
pub const POS_INT64_1_TAG: u8 = 0x09;
/// A positive int64 fitting in 2 bytes.
pub const POS_INT64_2_TAG: u8 = 0x0A;
/// A positive int64 fitting in 4 bytes.
pub const POS_INT64_4_TAG: u8 = 0x0B;
/// A positive int64 needing 8 bytes.
pub const POS_INT64_8_TAG: u8 = 0x0C;
/// A float64.
pub const FLOAT64_TAG: u8 = 0x0D;
/// `false`.
pub const FALSE_TAG: u8 = 0x0E;
/// `true`.
pub const TRUE_TAG: u8 = 0x0F;
/// A string.
pub const STRING_TAG: u8 = 0x10;
/// Bytes.
pub const BYTES_TAG: u8 = 0x11;
/// An array.
pub const ARRAY_TAG: u8 = 0x12;
/// An object.
pub const OBJECT_TAG: u8 = 0x15;
/// Ends an array, an object or an escaped byte string.
pub const END_BYTE: u8 = 0x00;
/// Follows 0x00 inside an escaped byte string to mean a literal 0x00.
pub const ESCAPE_BYTE: u8 = 0xFF;
/// Starts each field of an object.
pub const FIELD_MARKER: u8 = 0x01;

/// Bytes that are not a canonical key encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid index key at byte {offset}: {reason}")]
pub struct KeyDecodeError {
    /// Where in the input the problem was found.
    pub offset: usize,
    /// What is wrong.
    pub reason: &'static str,
}

fn write_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(ESCAPE_BYTE);
        }
    }
    out.push(END_BYTE);
}

fn write_int(i: i64, out: &mut Vec<u8>) {
    if i == 0 {
        out.push(ZERO_INT64_TAG);
    } else if i > 0 {
        let u = i as u64;
        if let Ok(b) = u8::try_from(u) {
            out.push(POS_INT64_1_TAG);
            out.push(b);
        } else if let Ok(b) = u16::try_from(u) {
            out.push(POS_INT64_2_TAG);
            out.extend_from_slice(&b.to_be_bytes());
        } else if let Ok(b) = u32::try_from(u) {
            out.push(POS_INT64_4_TAG);
            out.extend_from_slice(&b.to_be_bytes());
        } else {
            out.push(POS_INT64_8_TAG);
            out.extend_from_slice(&u.to_be_bytes());
        }
    } else if let Ok(b) = i8::try_from(i) {
        out.push(NEG_INT64_1_TAG);
        out.extend_from_slice(&b.to_be_bytes());
    } else if let Ok(b) = i16::try_from(i) {
        out.push(NEG_INT64_2_TAG);
        out.extend_from_slice(&b.to_be_bytes());
    } else if let Ok(b) = i32::try_from(i) {
        out.push(NEG_INT64_4_TAG);
        out.extend_from_slice(&b.to_be_bytes());
    } else {
        out.push(NEG_INT64_8_TAG);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

/// The order-preserving bits of a float (see the module rules).
pub fn float_key_bits(f: f64) -> u64 {
    let bits = f.to_bits();
    if bits & (1 << 63) == 0 {
        bits | (1 << 63)
    } else {
        !bits
    }
}

/// Append the encoding of a string value.
pub fn encode_str(s: &str, out: &mut Vec<u8>) {
    out.push(STRING_TAG);
    write_escaped(s.as_bytes(), out);
}

/// Append the encoding of a bytes value.
pub fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.push(BYTES_TAG);
    write_escaped(b, out);
}

/// Append the encoding of one value.
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(NULL_TAG),
        Value::Int64(i) => write_int(*i, out),
        Value::Float64(f) => {
            out.push(FLOAT64_TAG);
            out.extend_from_slice(&float_key_bits(*f).to_be_bytes());
        }
        Value::Boolean(false) => out.push(FALSE_TAG),
        Value::Boolean(true) => out.push(TRUE_TAG),
        Value::String(s) => {
            out.push(STRING_TAG);
            write_escaped(s.as_bytes(), out);
        }
        Value::Bytes(b) => {
            out.push(BYTES_TAG);
            write_escaped(b, out);
        }
        Value::Array(items) => {
            out.push(ARRAY_TAG);
            for item in items {
                encode_value(item, out);
            }
            out.push(END_BYTE);
        }
        Value::Object(fields) => {
            out.push(OBJECT_TAG);
            for (name, item) in fields {
                out.push(FIELD_MARKER);
                write_escaped(name.as_bytes(), out);
                encode_value(item, out);
            }
            out.push(END_BYTE);
        }
    }
}

/// Append the encoding of an optional value: `None` is a missing field (`undefined`), which
/// sorts before every value.
pub fn encode_optional(value: Option<&Value>, out: &mut Vec<u8>) {
    match value {
        None => out.push(UNDEFINED_TAG),
        Some(v) => encode_value(v, out),
    }
}

/// The encoding of one value as a fresh vector.
pub fn value_key(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(value, &mut out);
    out
}

/// The smallest byte string greater than `key`: `key` followed by 0x00.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.extend_from_slice(key);
    out.push(0);
    out
}

/// The smallest byte string greater than every string that starts with `prefix`, or `None`
/// if there is none (the prefix is empty or all 0xFF).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(&last) = out.last() {
        if last == 0xFF {
            out.pop();
        } else {
            *out.last_mut()? = last + 1;
            return Some(out);
        }
    }
    None
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn err(&self, reason: &'static str) -> KeyDecodeError {
        KeyDecodeError {
            offset: self.pos,
            reason,
        }
    }

    fn byte(&mut self) -> Result<u8, KeyDecodeError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.err("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], KeyDecodeError> {
        let end = self.pos + N;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| self.err("unexpected end"))?;
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn escaped(&mut self) -> Result<Vec<u8>, KeyDecodeError> {
        let mut out = Vec::new();
        loop {
            let b = self.byte()?;
            if b != 0 {
                out.push(b);
                continue;
            }
            if self.peek() == Some(ESCAPE_BYTE) {
                self.pos += 1;
                out.push(0);
            } else {
                return Ok(out);
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Option<Value>, KeyDecodeError> {
        if depth > crate::limits::MAX_VALUE_DEPTH + 1 {
            return Err(self.err("nested too deeply"));
        }
        let tag = self.byte()?;
        let v = match tag {
            UNDEFINED_TAG => return Ok(None),
            NULL_TAG => Value::Null,
            ZERO_INT64_TAG => Value::Int64(0),
            POS_INT64_1_TAG => {
                let b = self.take::<1>()?;
                if b[0] == 0 {
                    return Err(self.err("non-canonical integer"));
                }
                Value::Int64(i64::from(b[0]))
            }
            POS_INT64_2_TAG => {
                let v = u16::from_be_bytes(self.take()?);
                if u8::try_from(v).is_ok() {
                    return Err(self.err("non-canonical integer"));
                }
                Value::Int64(i64::from(v))
            }
            POS_INT64_4_TAG => {
                let v = u32::from_be_bytes(self.take()?);
                if u16::try_from(v).is_ok() {
                    return Err(self.err("non-canonical integer"));
                }
                Value::Int64(i64::from(v))
            }
            POS_INT64_8_TAG => {
                let v = u64::from_be_bytes(self.take()?);
                if u32::try_from(v).is_ok() || i64::try_from(v).is_err() {
                    return Err(self.err("non-canonical integer"));
                }
                Value::Int64(v as i64)
            }
            NEG_INT64_1_TAG => {
                let v = i8::from_be_bytes(self.take()?);
                if v >= 0 {
                    return Err(self.err("non-canonical integer"));
                }
                Value::Int64(i64::from(v))
            }
            NEG_INT64_2_TAG => {
                let v = i16::from_be_bytes(self.take()?);
                if v >= i16::from(i8::MIN) {
                    return Err(self.err("non-canonical integer"));
                }
                Value::Int64(i64::from(v))
            }
            NEG_INT64_4_TAG => {
                let v = i32::from_be_bytes(self.take()?);
                if v >= i32::from(i16::MIN) {
                    return Err(self.err("non-canonical integer"));
                }
                Value::Int64(i64::from(v))
            }
            NEG_INT64_8_TAG => {
                let v = i64::from_be_bytes(self.take()?);
                if v >= i64::from(i32::MIN) {
                    return Err(self.err("non-canonical integer"));
                }
                Value::Int64(v)
            }
            FLOAT64_TAG => {
                let bits = u64::from_be_bytes(self.take()?);
                let raw = if bits & (1 << 63) != 0 {
                    bits & !(1 << 63)
                } else {
                    !bits
                };
                Value::Float64(f64::from_bits(raw))
            }
            FALSE_TAG => Value::Boolean(false),
            TRUE_TAG => Value::Boolean(true),
            STRING_TAG => {
                let bytes = self.escaped()?;
                Value::String(String::from_utf8(bytes).map_err(|_| self.err("invalid UTF-8"))?)
            }
            BYTES_TAG => Value::Bytes(self.escaped()?),
            ARRAY_TAG => {
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(END_BYTE) {
                        self.pos += 1;
                        break;
                    }
                    let item = self.value(depth + 1)?;
                    items.push(item.ok_or_else(|| self.err("undefined inside an array"))?);
                }
                Value::Array(items)
            }
            OBJECT_TAG => {
                let mut fields = Object::new();
                loop {
                    match self.byte()? {
                        END_BYTE => break,
                        FIELD_MARKER => {}
                        _ => return Err(self.err("expected a field marker or the end")),
                    }
                    let name = String::from_utf8(self.escaped()?)
                        .map_err(|_| self.err("invalid UTF-8 in a field name"))?;
                    if fields
                        .last_key_value()
                        .is_some_and(|(last, _)| *last >= name)
                    {
                        return Err(self.err("object fields out of order"));
                    }
                    let item = self.value(depth + 1)?;
                    fields.insert(name, item.ok_or_else(|| self.err("undefined field value"))?);
                }
                Value::Object(fields)
            }
            _ => {
                return Err(KeyDecodeError {
                    offset: self.pos - 1,
                    reason: "unknown tag",
                });
            }
        };
        Ok(Some(v))
    }
}

/// Decode a tuple of values (each possibly `undefined`) that fills `bytes` exactly.
pub fn decode_tuple(bytes: &[u8]) -> Result<Vec<Option<Value>>, KeyDecodeError> {
    let mut reader = Reader { bytes, pos: 0 };
    let mut out = Vec::new();
    while reader.pos < bytes.len() {
        out.push(reader.value(0)?);
    }
    Ok(out)
}

/// Decode exactly one value filling `bytes`.
pub fn decode_value(bytes: &[u8]) -> Result<Option<Value>, KeyDecodeError> {
    let mut reader = Reader { bytes, pos: 0 };
    let v = reader.value(0)?;
    if reader.pos != bytes.len() {
        return Err(reader.err("trailing bytes"));
    }
    Ok(v)
}

/// Length of the first encoded value in `bytes`, if it decodes.
pub fn first_value_len(bytes: &[u8]) -> Result<usize, KeyDecodeError> {
    let mut reader = Reader { bytes, pos: 0 };
    reader.value(0)?;
    Ok(reader.pos)
}

#[cfg(test)]
mod tests {
    use super::tests_support::arb_value;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn round_trip(v in arb_value()) {
            let bytes = value_key(&v);
            let back = decode_value(&bytes).unwrap().unwrap();
            prop_assert_eq!(&back, &v);
            // NaN payloads and the sign of zero survive exactly.
            prop_assert_eq!(value_key(&back), bytes);
        }

        #[test]
        fn byte_order_is_value_order(a in arb_value(), b in arb_value()) {
            prop_assert_eq!(value_key(&a).cmp(&value_key(&b)), a.cmp(&b));
        }

        #[test]
        fn tuple_order_is_lexicographic(
            a in prop::collection::vec(prop::option::of(arb_value()), 0..3),
            b in prop::collection::vec(prop::option::of(arb_value()), 0..3),
        ) {
            let enc = |t: &Vec<Option<Value>>| {
                let mut out = Vec::new();
                for v in t { encode_optional(v.as_ref(), &mut out); }
                out
            };
            let expected = a.iter().map(Option::as_ref).cmp(b.iter().map(Option::as_ref));
            prop_assert_eq!(enc(&a).cmp(&enc(&b)), expected);
            prop_assert_eq!(decode_tuple(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(values) = decode_tuple(&bytes) {
                let mut out = Vec::new();
                for v in &values { encode_optional(v.as_ref(), &mut out); }
                prop_assert_eq!(out, bytes);
            }
        }

        #[test]
        fn prefix_successor_bounds_prefix(p in prop::collection::vec(any::<u8>(), 1..6),
                                          rest in prop::collection::vec(any::<u8>(), 0..6),
                                          other in prop::collection::vec(any::<u8>(), 0..10)) {
            if let Some(succ) = prefix_successor(&p) {
                let mut with_prefix = p.clone();
                with_prefix.extend_from_slice(&rest);
                prop_assert!(with_prefix < succ);
                if other > p && !other.starts_with(&p) {
                    prop_assert!(other >= succ);
                }
            }
        }
    }

    #[test]
    fn integer_boundaries() {
        let ints = [
            i64::MIN,
            -4_294_967_297,
            -2_147_483_649,
            -2_147_483_648,
            -32769,
            -32768,
            -129,
            -128,
            -1,
            0,
            1,
            255,
            256,
            65535,
            65536,
            4_294_967_295,
            4_294_967_296,
            i64::MAX,
        ];
        for pair in ints.windows(2) {
            assert!(value_key(&Value::Int64(pair[0])) < value_key(&Value::Int64(pair[1])));
        }
        assert!(value_key(&Value::Int64(i64::MAX)) < value_key(&Value::Float64(f64::NEG_INFINITY)));
    }
}

/// Generators shared by the crate's property tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::value::Value;
    use proptest::prelude::*;

    /// Arbitrary nested values, biased toward the edge cases of the encodings.
    pub fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Int64),
            prop_oneof![
                Just(0i64),
                Just(-1),
                Just(1),
                Just(127),
                Just(128),
                Just(-128),
                Just(-129),
                Just(255),
                Just(256),
                Just(65535),
                Just(65536),
                Just(i64::MIN),
                Just(i64::MAX)
            ]
            .prop_map(Value::Int64),
            any::<f64>().prop_map(Value::Float64),
            prop_oneof![
                Just(f64::NAN),
                Just(-f64::NAN),
                Just(0.0),
                Just(-0.0),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY)
            ]
            .prop_map(Value::Float64),
            any::<bool>().prop_map(Value::Boolean),
            "(\\PC|\u{0}){0,6}".prop_map(Value::String),
            prop::collection::vec(prop_oneof![Just(0u8), Just(255u8), any::<u8>()], 0..6)
                .prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c\u{0}]{0,3}", inner, 0..4).prop_map(Value::Object),
            ]
        })
    }
}
