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
//! Invariants: `decode(encode(v)) == v` bit for bit (NaN payloads, -0.0) for every value
//! within the value limits; decoding never panics or over-allocates on hostile input (lengths
//! are checked against the remaining bytes, array and object counts against
//! [`limits::MAX_ARRAY_LEN`] and [`limits::MAX_OBJECT_FIELDS`], which every stored document
//! obeys; the decompressed size is capped at [`MAX_DECODED_BYTES`]).

use crate::limits;
use crate::value::{Object, Value};

/// The payload is the plain value encoding.
pub const FORMAT_PLAIN: u8 = 0x00;
/// The payload is a zstd frame of the plain encoding.
pub const FORMAT_ZSTD: u8 = 0x01;
/// Plain encodings at least this long are compressed (when that makes them smaller).
pub const COMPRESSION_THRESHOLD_BYTES: usize = 4096;
/// zstd level: fast; documents are small and commits are latency-bound.
const ZSTD_LEVEL: i32 = 1;
/// Largest plain payload a stored value may decompress to: 8 times the document size limit
/// (a document's encoding is within a few bytes per string of its limit size), so a
/// corrupted or hostile row cannot make a decode take more than about 32 bytes of decoded
/// values per byte of this bound.
pub const MAX_DECODED_BYTES: usize = 8 << 20;

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
    store_plain(&encode_plain(value))
}

/// The stored form of a plain payload: format byte + payload, compressed (zstd) when it is
/// at least [`COMPRESSION_THRESHOLD_BYTES`] and compression makes it smaller.
pub fn store_plain(plain: &[u8]) -> Vec<u8> {
    if plain.len() >= COMPRESSION_THRESHOLD_BYTES
        && let Ok(compressed) = zstd::bulk::compress(plain, ZSTD_LEVEL)
        && compressed.len() + 6 < plain.len()
    {
        let mut z = Vec::with_capacity(compressed.len() + 6);
        z.push(FORMAT_ZSTD);
        write_varint(plain.len() as u64, &mut z);
        z.extend_from_slice(&compressed);
        return z;
    }
    let mut out = Vec::with_capacity(plain.len() + 1);
    out.push(FORMAT_PLAIN);
    out.extend_from_slice(plain);
    out
}

/// The plain encoding of an encoded object without its field `name` (copied, not decoded).
pub fn object_without(object: &[u8], name: &str) -> Result<Vec<u8>, CodecError> {
    let mut d = Decoder::new(object);
    let Token::Object(n) = d.next_token()? else {
        return Err(CodecError {
            offset: 0,
            reason: "not an object",
        });
    };
    let mut fields: Vec<&[u8]> = Vec::with_capacity(n);
    let mut dropped = false;
    for _ in 0..n {
        let start = d.pos();
        let field = d.field_name()?;
        d.skip_value()?;
        if field == name {
            dropped = true;
        } else {
            fields.push(&object[start..d.pos()]);
        }
    }
    let mut out = Vec::with_capacity(object.len());
    out.push(T_OBJECT);
    write_varint((n - usize::from(dropped)) as u64, &mut out);
    for f in fields {
        out.extend_from_slice(f);
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
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

    fn slice(&mut self, len: u64) -> Result<&'a [u8], CodecError> {
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
                if count > limits::MAX_ARRAY_LEN as u64 {
                    return Err(self.err("array longer than the array length limit"));
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
                if count > limits::MAX_OBJECT_FIELDS as u64 {
                    return Err(self.err("more fields than the object field limit"));
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

/// One step of a streaming decode of the plain encoding (see [`Decoder`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Token<'a> {
    /// `null`
    Null,
    /// An int64.
    Int(i64),
    /// A float64.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string, borrowed from the input.
    Str(&'a str),
    /// Bytes, borrowed from the input.
    Bytes(&'a [u8]),
    /// An array of this many items follows.
    Array(usize),
    /// An object of this many fields follows; read each with [`Decoder::field_name`] then
    /// its value.
    Object(usize),
}

/// A streaming decoder of the plain encoding: values are read token by token without
/// building [`Value`]s (for conversions straight into another representation).
pub struct Decoder<'a> {
    reader: Reader<'a>,
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Decoder {
            reader: Reader { bytes, pos: 0 },
        }
    }

    /// The position in the input.
    pub fn pos(&self) -> usize {
        self.reader.pos
    }

    /// The next token. Counts of arrays and objects are checked against the bytes left.
    pub fn next_token(&mut self) -> Result<Token<'a>, CodecError> {
        let r = &mut self.reader;
        Ok(match r.byte()? {
            T_NULL => Token::Null,
            T_INT => {
                let z = r.varint()?;
                Token::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            T_FLOAT => {
                let b = r.slice(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Token::Float(f64::from_bits(u64::from_le_bytes(a)))
            }
            T_FALSE => Token::Bool(false),
            T_TRUE => Token::Bool(true),
            T_STRING => {
                let len = r.varint()?;
                let at = r.pos;
                let s = r.slice(len)?;
                Token::Str(std::str::from_utf8(s).map_err(|_| CodecError {
                    offset: at,
                    reason: "invalid UTF-8",
                })?)
            }
            T_BYTES => {
                let len = r.varint()?;
                Token::Bytes(r.slice(len)?)
            }
            T_ARRAY => {
                let count = r.varint()?;
                if count > (r.bytes.len() - r.pos) as u64 {
                    return Err(r.err("array count past the end"));
                }
                if count > limits::MAX_ARRAY_LEN as u64 {
                    return Err(r.err("array longer than the array length limit"));
                }
                Token::Array(count as usize)
            }
            T_OBJECT => {
                let count = r.varint()?;
                if count > (r.bytes.len() - r.pos) as u64 {
                    return Err(r.err("field count past the end"));
                }
                if count > limits::MAX_OBJECT_FIELDS as u64 {
                    return Err(r.err("more fields than the object field limit"));
                }
                Token::Object(count as usize)
            }
            _ => {
                r.pos -= 1;
                return Err(r.err("unknown tag"));
            }
        })
    }

    /// The name of the next field of an object.
    pub fn field_name(&mut self) -> Result<&'a str, CodecError> {
        let len = self.reader.varint()?;
        let at = self.reader.pos;
        let s = self.reader.slice(len)?;
        std::str::from_utf8(s).map_err(|_| CodecError {
            offset: at,
            reason: "invalid UTF-8 in a name",
        })
    }

    /// Skip one whole value; returns the bytes it spanned.
    pub fn skip_value(&mut self) -> Result<&'a [u8], CodecError> {
        let start = self.reader.pos;
        // Open containers: (is an object, items left).
        let mut open: smallvec::SmallVec<[(bool, usize); 8]> = smallvec::SmallVec::new();
        self.push_container(&mut open)?;
        while let Some(top) = open.last_mut() {
            if top.1 == 0 {
                open.pop();
                continue;
            }
            top.1 -= 1;
            if top.0 {
                self.field_name()?;
            }
            self.push_container(&mut open)?;
        }
        Ok(&self.reader.bytes[start..self.reader.pos])
    }

    fn push_container(
        &mut self,
        open: &mut smallvec::SmallVec<[(bool, usize); 8]>,
    ) -> Result<(), CodecError> {
        match self.next_token()? {
            Token::Array(n) => open.push((false, n)),
            Token::Object(n) => open.push((true, n)),
            _ => {}
        }
        Ok(())
    }
}

/// The encoded value at `path` inside an encoded object (its bytes, tag included), or `None`
/// when a component is missing or not an object.
pub fn lookup<'a>(object: &'a [u8], path: &[String]) -> Result<Option<&'a [u8]>, CodecError> {
    let mut current = object;
    for part in path {
        let mut d = Decoder::new(current);
        let Token::Object(n) = d.next_token()? else {
            return Ok(None);
        };
        let mut found = None;
        for _ in 0..n {
            let name = d.field_name()?;
            if name == part.as_str() {
                found = Some(d.skip_value()?);
                break;
            }
            if name > part.as_str() {
                // Names are sorted: the field is absent.
                break;
            }
            d.skip_value()?;
        }
        match found {
            Some(v) => current = v,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// Append the index-key encoding ([`crate::keys`]) of an encoded value, without building a
/// [`Value`] for scalars.
pub fn transcode_to_key(value: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let mut d = Decoder::new(value);
    match d.next_token()? {
        Token::Null => crate::keys::encode_value(&Value::Null, out),
        Token::Int(i) => crate::keys::encode_value(&Value::Int64(i), out),
        Token::Float(f) => crate::keys::encode_value(&Value::Float64(f), out),
        Token::Bool(b) => crate::keys::encode_value(&Value::Boolean(b), out),
        Token::Str(s) => crate::keys::encode_str(s, out),
        Token::Bytes(b) => crate::keys::encode_bytes(b, out),
        Token::Array(_) | Token::Object(_) => {
            crate::keys::encode_value(&decode_plain(value)?, out);
        }
    }
    Ok(())
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
        fn streaming_reads_agree_with_decoding(v in arb_value(), name in "[a-c]{1,2}") {
            let plain = encode_plain(&v);
            let mut key = Vec::new();
            transcode_to_key(&plain, &mut key).unwrap();
            prop_assert_eq!(key, crate::keys::value_key(&v));
            let mut d = Decoder::new(&plain);
            prop_assert_eq!(d.skip_value().unwrap().len(), plain.len());
            let mut o = Object::new();
            o.insert(name.clone(), v.clone());
            o.insert("zz".into(), Value::Null);
            let obj = encode_plain(&Value::Object(o));
            let found = lookup(&obj, std::slice::from_ref(&name)).unwrap().unwrap();
            prop_assert_eq!(decode_plain(found).unwrap(), v);
            prop_assert!(lookup(&obj, &["b0".to_owned()]).unwrap().is_none());
            let without = object_without(&obj, &name).unwrap();
            prop_assert_eq!(decode_plain(&without).unwrap().as_object().map(Object::len), Some(1));
        }

        #[test]
        fn hostile_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_stored(&bytes);
            let _ = Decoder::new(&bytes).skip_value();
            let _ = lookup(&bytes, &["a".to_owned()]);
            let _ = transcode_to_key(&bytes, &mut Vec::new());
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

    #[test]
    fn counts_past_the_value_limits_are_refused() {
        // Lengths at the limits decode; one past is refused by the decoder and the
        // streaming reader alike (a stored document never holds more).
        let at_limit = Value::Array(vec![Value::Null; limits::MAX_ARRAY_LEN]);
        assert_eq!(decode_stored(&encode_stored(&at_limit)).unwrap(), at_limit);
        let past = encode_plain(&Value::Array(vec![Value::Null; limits::MAX_ARRAY_LEN + 1]));
        let err = decode_plain(&past).unwrap_err();
        assert!(err.to_string().contains("array length limit"), "{err}");
        assert!(Decoder::new(&past).skip_value().is_err());

        let fields =
            |n: usize| Value::Object((0..n).map(|i| (format!("f{i:05}"), Value::Null)).collect());
        let at_limit = fields(limits::MAX_OBJECT_FIELDS);
        assert_eq!(decode_stored(&encode_stored(&at_limit)).unwrap(), at_limit);
        let past = encode_plain(&fields(limits::MAX_OBJECT_FIELDS + 1));
        let err = decode_plain(&past).unwrap_err();
        assert!(err.to_string().contains("object field limit"), "{err}");
        assert!(Decoder::new(&past).skip_value().is_err());

        // A zstd frame claiming more than MAX_DECODED_BYTES is refused before decompressing.
        let mut bomb = vec![FORMAT_ZSTD];
        let mut len = MAX_DECODED_BYTES as u64 + 1;
        while len >= 0x80 {
            bomb.push((len as u8) | 0x80);
            len >>= 7;
        }
        bomb.push(len as u8);
        let err = decode_stored(&bomb).unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
    }
}
