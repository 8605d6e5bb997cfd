//! Document ids in Convex's format (spec §15.2, convex-backend `crates/value/src/id_v6.rs`).
//!
//! Bytes: table number as unsigned LEB128 (1-5 bytes, non-zero), 16 bytes of internal id
//! (14 random bytes and the big-endian day number since the epoch), then a 2-byte
//! little-endian footer `fletcher16(previous bytes) ^ version` with version 0. The text form
//! is base32 over those bytes with the alphabet `0123456789abcdefghjkmnpqrstvwxyz`, most
//! significant bits first, no padding. Invariants: a string parses only if it is canonical
//! (re-encodes to itself), has a non-zero table number and a matching footer; because the
//! alphabet is in ASCII order, the text order of two ids of one table is the order of their
//! internal ids.

use std::fmt;

use rand::RngCore;

/// The number that names a table inside ids. User tables count up from
/// [`TableNumber::FIRST_USER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableNumber(pub u32);

impl TableNumber {
    /// The first user table number; lower numbers are reserved for system tables (as in Convex).
    pub const FIRST_USER: TableNumber = TableNumber(10001);
}

/// The 16 bytes that identify a document within its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InternalId(pub [u8; 16]);

impl InternalId {
    /// A new id: 14 random bytes then the day number since the epoch (big-endian), as Convex.
    pub fn generate(now_ms: f64) -> InternalId {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes[..14]);
        let day = (now_ms / 86_400_000.0).max(0.0) as u64;
        bytes[14..].copy_from_slice(&(day.min(u64::from(u16::MAX)) as u16).to_be_bytes());
        InternalId(bytes)
    }
}

/// A document's id: its table and its internal id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocumentId {
    /// The table the document belongs to.
    pub table: TableNumber,
    /// The document's internal id.
    pub internal: InternalId,
}

/// A string that is not a valid document id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid document id {text:?}: {reason}")]
pub struct IdError {
    /// The text that failed to parse (cut to 64 characters).
    pub text: String,
    /// Why.
    pub reason: &'static str,
}

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const VERSION: u16 = 0;
/// Longest id text: 5 varint bytes + 16 + 2 = 23 bytes -> 37 characters.
const MAX_TEXT_LEN: usize = 37;

fn fletcher16(bytes: &[u8]) -> u16 {
    let (mut c0, mut c1) = (0u8, 0u8);
    for &b in bytes {
        c0 = c0.wrapping_add(b);
        c1 = c1.wrapping_add(c0);
    }
    (u16::from(c1) << 8) | u16::from(c0)
}

fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
        buffer &= (1 << bits) - 1;
    }
    Some(out)
}

impl DocumentId {
    /// The id's bytes: varint table number, internal id, footer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(23);
        let mut n = self.table.0;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(&self.internal.0);
        let footer = fletcher16(&out) ^ VERSION;
        out.extend_from_slice(&footer.to_le_bytes());
        out
    }

    /// Parse the bytes made by [`DocumentId::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<DocumentId, &'static str> {
        let mut table: u64 = 0;
        let mut used = 0;
        loop {
            let b = *bytes.get(used).ok_or("truncated table number")?;
            table |= u64::from(b & 0x7f) << (7 * used);
            used += 1;
            if b & 0x80 == 0 {
                break;
            }
            if used == 5 {
                return Err("table number longer than 5 bytes");
            }
        }
        let table = u32::try_from(table).map_err(|_| "table number out of range")?;
        if table == 0 {
            return Err("table number is zero");
        }
        if bytes.len() != used + 18 {
            return Err("wrong length");
        }
        let footer = u16::from_le_bytes([bytes[used + 16], bytes[used + 17]]);
        if fletcher16(&bytes[..used + 16]) ^ VERSION != footer {
            return Err("checksum mismatch");
        }
        let mut internal = [0u8; 16];
        internal.copy_from_slice(&bytes[used..used + 16]);
        let id = DocumentId {
            table: TableNumber(table),
            internal: InternalId(internal),
        };
        if id.to_bytes() != bytes {
            return Err("not in canonical form");
        }
        Ok(id)
    }

    /// Parse an id's text form. Errors say why, without echoing more than 64 characters.
    pub fn parse(text: &str) -> Result<DocumentId, IdError> {
        let fail = |reason| IdError {
            text: text.chars().take(64).collect(),
            reason,
        };
        if text.len() > MAX_TEXT_LEN || text.len() < 31 {
            return Err(fail("wrong length"));
        }
        let bytes = base32_decode(text).ok_or_else(|| fail("not base32"))?;
        let id = DocumentId::from_bytes(&bytes).map_err(fail)?;
        if id.encode() != text {
            return Err(fail("not in canonical form"));
        }
        Ok(id)
    }

    /// The id's text form (31 characters for table numbers < 128, 32 below 16384, up to 37).
    pub fn encode(&self) -> String {
        base32_encode(&self.to_bytes())
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn spec_vectors() {
        let cases = [
            (
                10001,
                "000102030405060708090a0b0c0d0e0f",
                "j57000820c20a1g7104gm2rc1m70ynr8",
            ),
            (
                10001,
                "0123456789abcdef0123456789abcdef",
                "j57028t5cy4tqkff04hmasw9nf6yyqzr",
            ),
            (
                1,
                "00000000000000000000000000000000",
                "0400000000000000000000000000248",
            ),
        ];
        for (table, internal, text) in cases {
            let id = DocumentId {
                table: TableNumber(table),
                internal: InternalId(hex(internal)),
            };
            assert_eq!(id.encode(), text);
            assert_eq!(DocumentId::parse(text).unwrap(), id);
        }
    }

    #[test]
    fn rejects_bad_ids() {
        assert!(DocumentId::parse("j57000820c20a1g7104gm2rc1m70ynr9").is_err());
        assert!(DocumentId::parse("hello").is_err());
        assert!(DocumentId::parse("J57000820c20a1g7104gm2rc1m70ynr8").is_err());
        assert!(DocumentId::parse("").is_err());
    }

    #[test]
    fn text_order_is_internal_order() {
        let a = DocumentId {
            table: TableNumber(10001),
            internal: InternalId([1; 16]),
        };
        let b = DocumentId {
            table: TableNumber(10001),
            internal: InternalId([2; 16]),
        };
        assert!(a.encode() < b.encode());
    }
}
