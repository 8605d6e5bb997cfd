//! Document ids (`id::DocumentId`, spec §15.2): parsing text and bytes never panics; an id
//! that parses is canonical (encodes back to exactly the input) and round-trips through
//! text and bytes; ids built from any table number and internal id parse back, have the
//! text length the spec gives, and within one table sort as text like their internal ids.
//!
//! Input: a mode byte, then the payload. Mode 0: the payload as text. Mode 1: as id bytes.
//! Mode 2: a table number (4 bytes LE) and two internal ids (16 bytes each).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reactive_core::id::{DocumentId, InternalId, TableNumber};
use reactive_core_fuzz::hex;

/// Text length of an id whose table number takes `varint_len` bytes (spec §15.2: base32,
/// 5 bits a character, no padding).
fn text_len(varint_len: usize) -> usize {
    ((varint_len + 18) * 8).div_ceil(5)
}

fn varint_len(table: u32) -> usize {
    match table {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0x0FFF_FFFF => 4,
        _ => 5,
    }
}

fn check_id(id: DocumentId) {
    assert_ne!(id.table.0, 0, "an id with table number 0 parsed");
    let text = id.encode();
    assert_eq!(
        text.len(),
        text_len(varint_len(id.table.0)),
        "text {text} has the wrong length"
    );
    assert!(
        text.bytes()
            .all(|c| b"0123456789abcdefghjkmnpqrstvwxyz".contains(&c))
    );
    assert_eq!(
        DocumentId::parse(&text),
        Ok(id),
        "text {text} does not parse back"
    );
    assert_eq!(id.to_string(), text);
    let bytes = id.to_bytes();
    assert_eq!(bytes.len(), varint_len(id.table.0) + 18);
    assert_eq!(
        DocumentId::from_bytes(&bytes),
        Ok(id),
        "bytes {} do not parse back",
        hex(&bytes)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let text = String::from_utf8_lossy(payload);
            match DocumentId::parse(&text) {
                Ok(id) => {
                    assert_eq!(id.encode(), text, "a non-canonical id parsed");
                    check_id(id);
                }
                Err(e) => {
                    assert!(e.text.chars().count() <= 64);
                    let _ = e.to_string();
                }
            }
        }
        1 => match DocumentId::from_bytes(payload) {
            Ok(id) => {
                assert_eq!(id.to_bytes(), payload, "non-canonical id bytes parsed");
                check_id(id);
            }
            Err(e) => assert!(!e.is_empty()),
        },
        _ => {
            let mut p = [0u8; 36];
            let n = payload.len().min(36);
            p[..n].copy_from_slice(&payload[..n]);
            let table = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            a.copy_from_slice(&p[4..20]);
            b.copy_from_slice(&p[20..36]);
            let make = |internal| DocumentId {
                table: TableNumber(table),
                internal: InternalId(internal),
            };
            if table == 0 {
                let text = make(a).encode();
                assert!(
                    DocumentId::parse(&text).is_err(),
                    "table number 0 parsed from {text}"
                );
                return;
            }
            let (ida, idb) = (make(a), make(b));
            check_id(ida);
            check_id(idb);
            assert_eq!(
                ida.encode().cmp(&idb.encode()),
                a.cmp(&b),
                "text order is not internal-id order"
            );
        }
    }
});
