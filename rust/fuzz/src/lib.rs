//! Helpers shared by the fuzz targets: a byte-driven value generator (with its inverse, for
//! seed files), a reference comparator written from the spec, and a mutator that makes
//! nearby values.
//!
//! The generator reads the fuzz input with `arbitrary::Unstructured`, one byte at a time
//! (a kind byte, then the payload), so an input is easy to write by hand and
//! [`write_value`] can turn a known value back into the bytes that generate it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cmp::Ordering;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use arbitrary::{Result, Unstructured};
use reactive_core::value::{Object, Value};

/// No single allocation may be larger than this. The biggest legitimate one is a stored
/// value's decompression buffer, capped at `codec::MAX_DECODED_BYTES` (8 MiB).
pub const MAX_ALLOCATION_BYTES: usize = 2 * reactive_core::codec::MAX_DECODED_BYTES;
/// Live heap (Rust allocations; libFuzzer's own go through C malloc) may not pass this: a
/// decoded value takes at most about 35 bytes of memory per encoded byte (a 1-byte null is
/// a 32-byte `Value`; a 2-byte empty-named field is a `String` + `Value` in a B-tree node).
pub const MAX_LIVE_BYTES: usize = 48 * reactive_core::codec::MAX_DECODED_BYTES;

/// The global allocator of every fuzz target: the system allocator, with an abort (which
/// libFuzzer reports as a crash and saves the input for) when one allocation or the live
/// total passes the caps above. libFuzzer's `-malloc_limit_mb` does the same only under a
/// sanitizer; this works in the uninstrumented (`--sanitizer none`) build too, and counts
/// what the decoders reserve even when they never touch it.
pub struct CappedAlloc;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

fn over_limit(size: usize) -> ! {
    let live = LIVE_BYTES.load(AtomicOrdering::Relaxed);
    // No allocation here: write the message with a fixed buffer.
    let mut buf = [0u8; 160];
    let msg = format_no_alloc(&mut buf, size, live);
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg);
    std::process::abort();
}

fn format_no_alloc(buf: &mut [u8; 160], size: usize, live: usize) -> &[u8] {
    use std::io::Write as _;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(
        cursor,
        "==fuzz== allocation of {size} bytes with {live} bytes live passes the cap \
         ({MAX_ALLOCATION_BYTES} one, {MAX_LIVE_BYTES} live)\n"
    );
    let n = cursor.position() as usize;
    &buf[..n]
}

fn account(size: usize) {
    if size > MAX_ALLOCATION_BYTES {
        over_limit(size);
    }
    let live = LIVE_BYTES.fetch_add(size, AtomicOrdering::Relaxed) + size;
    if live > MAX_LIVE_BYTES {
        over_limit(size);
    }
}

// SAFETY: every method forwards to `System` with the same arguments; the counter is
// bookkeeping only.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), AtomicOrdering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            account(new_size - layout.size());
            if new_size > MAX_ALLOCATION_BYTES {
                over_limit(new_size);
            }
        } else {
            LIVE_BYTES.fetch_sub(layout.size() - new_size, AtomicOrdering::Relaxed);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

/// Containers nest at most this deep in generated values (apart from [`deep_wrap`]).
pub const MAX_GEN_DEPTH: usize = 5;
/// Arrays and objects get at most this many items.
pub const MAX_GEN_ITEMS: u8 = 5;

/// Integers around every width boundary of the index-key encoding.
pub const INT_EDGES: [i64; 24] = [
    i64::MIN,
    i64::MIN + 1,
    -4_294_967_297,
    -2_147_483_649,
    -2_147_483_648,
    -2_147_483_647,
    -32769,
    -32768,
    -129,
    -128,
    -127,
    -1,
    0,
    1,
    127,
    128,
    255,
    256,
    65535,
    65536,
    4_294_967_295,
    4_294_967_296,
    i64::MAX - 1,
    i64::MAX,
];

/// Float bit patterns at the edges of IEEE 754 total order.
pub const FLOAT_EDGES: [u64; 16] = [
    0x0000_0000_0000_0000, // +0.0
    0x8000_0000_0000_0000, // -0.0
    0x0000_0000_0000_0001, // smallest subnormal
    0x8000_0000_0000_0001,
    0x3FF0_0000_0000_0000, // 1.0
    0xBFF0_0000_0000_0000, // -1.0
    0x7FEF_FFFF_FFFF_FFFF, // f64::MAX
    0xFFEF_FFFF_FFFF_FFFF, // f64::MIN
    0x7FF0_0000_0000_0000, // +inf
    0xFFF0_0000_0000_0000, // -inf
    0x7FF8_0000_0000_0000, // canonical quiet NaN
    0xFFF8_0000_0000_0000, // negative quiet NaN
    0x7FF0_0000_0000_0001, // signalling NaN
    0xFFFF_FFFF_FFFF_FFFF, // largest negative NaN
    0x7FFF_FFFF_FFFF_FFFF, // largest positive NaN
    0x4340_0000_0000_0000, // 2^53
];

const K_NULL: u8 = 0;
const K_INT: u8 = 1;
const K_INT_EDGE: u8 = 2;
const K_INT_SMALL: u8 = 3;
const K_FLOAT: u8 = 4;
const K_FLOAT_EDGE: u8 = 5;
const K_FALSE: u8 = 6;
const K_TRUE: u8 = 7;
const K_STRING: u8 = 8;
const K_BYTES: u8 = 9;
const K_ARRAY: u8 = 10;
const K_OBJECT: u8 = 11;
const KINDS: u8 = 12;

fn byte(u: &mut Unstructured<'_>) -> Result<u8> {
    u.arbitrary::<u8>()
}

/// One character: a byte below 0x80 is that ASCII character (NUL included); a byte at or
/// above it takes two more bytes to make a code point (surrogates become U+FFFD).
fn gen_char(u: &mut Unstructured<'_>) -> Result<char> {
    let b = byte(u)?;
    if b < 0x80 {
        return Ok(char::from(b));
    }
    let hi = u32::from(b & 0x7F);
    let lo = u32::from(u16::from_be_bytes(u.arbitrary::<[u8; 2]>()?));
    let cp = ((hi << 16) | lo) % 0x11_0000;
    Ok(char::from_u32(cp).unwrap_or('\u{FFFD}'))
}

fn write_char(c: char, out: &mut Vec<u8>) {
    let cp = u32::from(c);
    if cp < 0x80 {
        out.push(cp as u8);
    } else {
        out.push(0x80 | (cp >> 16) as u8);
        out.extend_from_slice(&(cp as u16).to_be_bytes());
    }
}

fn gen_string(u: &mut Unstructured<'_>) -> Result<String> {
    let len = byte(u)? % 16;
    (0..len).map(|_| gen_char(u)).collect()
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    let chars: Vec<char> = s.chars().take(15).collect();
    out.push(chars.len() as u8);
    for c in chars {
        write_char(c, out);
    }
}

/// A value read from the fuzz input (see the module doc). Containers stop at
/// [`MAX_GEN_DEPTH`]; past the end of the input every byte reads as 0 (`null`).
pub fn gen_value(u: &mut Unstructured<'_>, depth: usize) -> Result<Value> {
    let mut kind = byte(u)? % KINDS;
    if depth >= MAX_GEN_DEPTH && (kind == K_ARRAY || kind == K_OBJECT) {
        kind = K_NULL;
    }
    Ok(match kind {
        K_INT => Value::Int64(i64::from_le_bytes(u.arbitrary()?)),
        K_INT_EDGE => Value::Int64(INT_EDGES[usize::from(byte(u)?) % INT_EDGES.len()]),
        K_INT_SMALL => Value::Int64(i64::from(byte(u)? as i8)),
        K_FLOAT => Value::Float64(f64::from_bits(u64::from_le_bytes(u.arbitrary()?))),
        K_FLOAT_EDGE => Value::Float64(f64::from_bits(
            FLOAT_EDGES[usize::from(byte(u)?) % FLOAT_EDGES.len()],
        )),
        K_FALSE => Value::Boolean(false),
        K_TRUE => Value::Boolean(true),
        K_STRING => Value::String(gen_string(u)?),
        K_BYTES => {
            let len = byte(u)? % 16;
            Value::Bytes(
                u.bytes(usize::from(len))
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default(),
            )
        }
        K_ARRAY => {
            let n = byte(u)? % (MAX_GEN_ITEMS + 1);
            Value::Array(
                (0..n)
                    .map(|_| gen_value(u, depth + 1))
                    .collect::<Result<_>>()?,
            )
        }
        K_OBJECT => {
            let n = byte(u)? % (MAX_GEN_ITEMS + 1);
            let mut fields = Object::new();
            for _ in 0..n {
                let name = gen_string(u)?;
                let value = gen_value(u, depth + 1)?;
                fields.insert(name, value);
            }
            Value::Object(fields)
        }
        _ => Value::Null,
    })
}

/// The bytes that make [`gen_value`] produce `v` (strings and bytes are cut to 15 items,
/// containers to [`MAX_GEN_ITEMS`]; deeper containers than the generator makes come out as
/// `null`). Used to write seed files.
pub fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(K_NULL),
        Value::Int64(i) => {
            if let Some(pos) = INT_EDGES.iter().position(|e| e == i) {
                out.extend_from_slice(&[K_INT_EDGE, pos as u8]);
            } else if let Ok(small) = i8::try_from(*i) {
                out.extend_from_slice(&[K_INT_SMALL, small as u8]);
            } else {
                out.push(K_INT);
                out.extend_from_slice(&i.to_le_bytes());
            }
        }
        Value::Float64(f) => {
            if let Some(pos) = FLOAT_EDGES.iter().position(|&e| e == f.to_bits()) {
                out.extend_from_slice(&[K_FLOAT_EDGE, pos as u8]);
            } else {
                out.push(K_FLOAT);
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        }
        Value::Boolean(false) => out.push(K_FALSE),
        Value::Boolean(true) => out.push(K_TRUE),
        Value::String(s) => {
            out.push(K_STRING);
            write_string(s, out);
        }
        Value::Bytes(b) => {
            let b = &b[..b.len().min(15)];
            out.extend_from_slice(&[K_BYTES, b.len() as u8]);
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            let items = &items[..items.len().min(usize::from(MAX_GEN_ITEMS))];
            out.extend_from_slice(&[K_ARRAY, items.len() as u8]);
            for item in items {
                write_value(item, out);
            }
        }
        Value::Object(fields) => {
            let n = fields.len().min(usize::from(MAX_GEN_ITEMS));
            out.extend_from_slice(&[K_OBJECT, n as u8]);
            for (name, item) in fields.iter().take(n) {
                write_string(name, out);
                write_value(item, out);
            }
        }
    }
}

/// Wrap `v` in `levels` one-element arrays (nesting far past the generator's depth).
pub fn deep_wrap(mut v: Value, levels: usize) -> Value {
    for _ in 0..levels {
        v = Value::Array(vec![v]);
    }
    v
}

/// A value near `v`: the same value, or one leaf or container changed a little (an integer
/// or float bit pattern one step away, a character or byte added or dropped, an item added
/// or dropped), or a fresh value somewhere inside. Nearby values share long key prefixes,
/// which is where an order-preserving encoding goes wrong.
pub fn mutate(u: &mut Unstructured<'_>, v: &Value, depth: usize) -> Result<Value> {
    let op = byte(u)?;
    match op % 4 {
        0 => Ok(v.clone()),
        1 => tweak(u, v, depth),
        2 => gen_value(u, depth),
        _ => match v {
            Value::Array(items) if !items.is_empty() => {
                let mut items = items.clone();
                let i = usize::from(byte(u)?) % items.len();
                items[i] = mutate(u, &items[i], depth + 1)?;
                Ok(Value::Array(items))
            }
            Value::Object(fields) if !fields.is_empty() => {
                let mut fields = fields.clone();
                let i = usize::from(byte(u)?) % fields.len();
                let name = fields.keys().nth(i).cloned().unwrap_or_default();
                let old = fields[&name].clone();
                fields.insert(name, mutate(u, &old, depth + 1)?);
                Ok(Value::Object(fields))
            }
            _ => tweak(u, v, depth),
        },
    }
}

fn tweak(u: &mut Unstructured<'_>, v: &Value, depth: usize) -> Result<Value> {
    let up = byte(u)? % 2 == 0;
    Ok(match v {
        Value::Null => gen_value(u, depth)?,
        Value::Int64(i) => Value::Int64(if up {
            i.wrapping_add(1)
        } else {
            i.wrapping_sub(1)
        }),
        Value::Float64(f) => {
            let bits = f.to_bits();
            Value::Float64(f64::from_bits(if up {
                bits.wrapping_add(1)
            } else {
                bits.wrapping_sub(1)
            }))
        }
        Value::Boolean(b) => Value::Boolean(!b),
        Value::String(s) => {
            let mut s = s.clone();
            if up || s.is_empty() {
                s.push(gen_char(u)?);
            } else {
                s.pop();
            }
            Value::String(s)
        }
        Value::Bytes(b) => {
            let mut b = b.clone();
            if up || b.is_empty() {
                b.push(byte(u)?);
            } else {
                b.pop();
            }
            Value::Bytes(b)
        }
        Value::Array(items) => {
            let mut items = items.clone();
            if up || items.is_empty() {
                items.push(gen_value(u, depth + 1)?);
            } else {
                items.pop();
            }
            Value::Array(items)
        }
        Value::Object(fields) => {
            let mut fields = fields.clone();
            if up || fields.is_empty() {
                let name = gen_string(u)?;
                fields.insert(name, gen_value(u, depth + 1)?);
            } else {
                fields.pop_last();
            }
            Value::Object(fields)
        }
    })
}

/// Rank of a value's type in spec §12's type order (undefined, which is not a [`Value`],
/// would be 0).
fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 1,
        Value::Int64(_) => 2,
        Value::Float64(_) => 3,
        Value::Boolean(_) => 4,
        Value::String(_) => 5,
        Value::Bytes(_) => 6,
        Value::Array(_) => 7,
        Value::Object(_) => 8,
    }
}

/// IEEE 754 totalOrder as an integer: negative NaNs < -inf < ... < -0.0 < +0.0 < ... < +inf
/// < positive NaNs, NaNs by bit pattern (spec §12).
fn float_rank(f: f64) -> i128 {
    let bits = f.to_bits();
    let magnitude = i128::from(bits & !(1u64 << 63));
    if bits >> 63 == 1 {
        // Negative: a larger magnitude sorts first; -0.0 (magnitude 0) sits just below +0.0.
        -magnitude - 1
    } else {
        magnitude
    }
}

/// Convex's total order of values, written from spec §12 without using `Value`'s `Ord`:
/// type order first; int64 numerically; float64 by IEEE totalOrder; false < true; strings
/// by UTF-8 bytes; bytes lexicographically; arrays element by element with a prefix first;
/// objects as lists of (name, value) pairs sorted by name, name first, a prefix first.
pub fn spec_cmp(a: &Value, b: &Value) -> Ordering {
    let by_type = type_rank(a).cmp(&type_rank(b));
    if by_type != Ordering::Equal {
        return by_type;
    }
    match (a, b) {
        (Value::Int64(x), Value::Int64(y)) => x.cmp(y),
        (Value::Float64(x), Value::Float64(y)) => float_rank(*x).cmp(&float_rank(*y)),
        (Value::Boolean(x), Value::Boolean(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bytes(x), Value::Bytes(y)) => x.as_slice().cmp(y.as_slice()),
        (Value::Array(x), Value::Array(y)) => list_cmp(x.iter(), y.iter(), |p, q| spec_cmp(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            let mut xs: Vec<(&String, &Value)> = x.iter().collect();
            let mut ys: Vec<(&String, &Value)> = y.iter().collect();
            xs.sort_by(|p, q| p.0.as_bytes().cmp(q.0.as_bytes()));
            ys.sort_by(|p, q| p.0.as_bytes().cmp(q.0.as_bytes()));
            list_cmp(xs.into_iter(), ys.into_iter(), |p, q| {
                p.0.as_bytes()
                    .cmp(q.0.as_bytes())
                    .then_with(|| spec_cmp(p.1, q.1))
            })
        }
        _ => Ordering::Equal, // null == null
    }
}

/// [`spec_cmp`] for optional values: a missing field (`None`) sorts before every value.
pub fn spec_cmp_optional(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => spec_cmp(a, b),
    }
}

fn list_cmp<T>(
    mut xs: impl Iterator<Item = T>,
    mut ys: impl Iterator<Item = T>,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> Ordering {
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let c = cmp(&x, &y);
                if c != Ordering::Equal {
                    return c;
                }
            }
        }
    }
}

/// Bit-exact equality (NaN payloads, the sign of zero, int64 vs float64), independent of
/// `Value`'s `Eq`.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Int64(x), Value::Int64(y)) => x == y,
        (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits(),
        (Value::Boolean(x), Value::Boolean(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kp, vp), (kq, vq))| kp == kq && same(vp, vq))
        }
        _ => false,
    }
}

/// A short hex dump for assertion messages.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes.iter().take(256) {
        let _ = write!(s, "{b:02x}");
    }
    if bytes.len() > 256 {
        s.push_str("...");
    }
    s
}
