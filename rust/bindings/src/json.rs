//! Convex JSON: values on the wire (the Convex sync protocol's JSON encoding of values).
//!
//! Encoding (`convex_json`): null, booleans, strings, arrays and objects as JSON; a finite
//! float other than -0.0 as a JSON number; NaN, ±inf and -0.0 as
//! `{"$float": base64(8 bytes LE)}`; int64 as `{"$integer": base64(8 bytes LE)}`; bytes as
//! `{"$bytes": base64}` (standard alphabet, padded). The *clean* format (`format: "json"` of
//! the HTTP API, §11.3) writes int64 as a decimal string, bytes as a base64 string and
//! non-finite floats as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
//!
//! The *export* format (`export_json`, snapshot export ZIPs, §11.3 and §16) writes int64 as a
//! JSON integer, every finite float64 with a decimal point or an exponent (`42.0`, `-0.0`,
//! `1e21`), non-finite floats as `$float`, bytes as `$bytes`, and object keys sorted by
//! byte order.
//!
//! Function results (`convex_json(value, result=True)`: the number policy): an `int` that is
//! not a `reactive.values.Int64` (one a function computed, not one the database stored, a
//! client sent or an int64 validator checked) is written as a float64 number when it is exact
//! as one (`|n| <= 2**53`), and as an int64 otherwise.
//!
//! Decoding (`from_convex_json`) takes what Python's `json.loads` produced: every JSON number
//! becomes a float64 (the clients send numbers as float64) unless `export` is set, when a
//! number written without a decimal point or exponent (a Python `int`) is an int64; int64s
//! come back as `reactive.values.Int64`; an
//! object whose only key is `$integer`, `$float` or `$bytes` becomes that value; `$set`/`$map`
//! and any other key starting with `$` are refused with an `InvalidValueError` naming where.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};
use reactive_core::limits::MAX_VALUE_DEPTH;

use crate::convert::{int64_to_py, int64_type};
use crate::errors::InvalidValueError;

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

fn write_json_str(out: &mut String, s: &str) {
    // serde_json's escaping of a string never fails.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// Which Convex JSON dialect to write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `convex_encoded_json`: lossless, `$integer`/`$float`/`$bytes`.
    Encoded,
    /// `json` (clean): int64 as decimal strings, bytes as base64 strings; lossy.
    Clean,
    /// `export_json`: int64 as JSON integers, floats always with '.' or an exponent.
    Export,
}

fn special_float(f: f64) -> bool {
    !f.is_finite() || (f == 0.0 && f.is_sign_negative())
}

fn write_float(out: &mut String, f: f64, format: Format) {
    if format == Format::Export && f == 0.0 && f.is_sign_negative() {
        out.push_str("-0.0");
    } else if special_float(f) {
        if format == Format::Clean {
            let text = if f.is_nan() {
                "\"NaN\""
            } else if f.is_infinite() && f > 0.0 {
                "\"Infinity\""
            } else if f.is_infinite() {
                "\"-Infinity\""
            } else {
                "-0.0"
            };
            out.push_str(text);
        } else {
            let _ = write!(
                out,
                "{{\"$float\":\"{}\"}}",
                STANDARD.encode(f.to_le_bytes())
            );
        }
    } else {
        // Shortest round-trip form, as JSON and JavaScript read it.
        out.push_str(&serde_json::to_string(&f).unwrap_or_else(|_| "null".to_owned()));
    }
}

/// The largest magnitude up to which every integer is exact as a float64.
const MAX_EXACT_FLOAT_INT: i64 = 1 << 53;

fn encode(
    obj: &Bound<'_, PyAny>,
    out: &mut String,
    format: Format,
    result: bool,
    depth: usize,
) -> PyResult<()> {
    if depth > MAX_VALUE_DEPTH + 1 {
        return Err(InvalidValueError::new_err(format!(
            "value nested more than {MAX_VALUE_DEPTH} levels deep (limit: maximum nesting depth)"
        )));
    }
    if obj.is_none() {
        out.push_str("null");
    } else if let Ok(b) = obj.cast::<PyBool>() {
        out.push_str(if b.is_true() { "true" } else { "false" });
    } else if let Ok(s) = obj.cast::<PyString>() {
        let s = s
            .to_str()
            .map_err(|_| InvalidValueError::new_err("string is not valid Unicode"))?;
        write_json_str(out, s);
    } else if let Ok(f) = obj.cast::<PyFloat>() {
        write_float(out, f.value(), format);
    } else if let Ok(i) = obj.cast::<PyInt>() {
        let v: i64 = i.extract().map_err(|_| {
            InvalidValueError::new_err("int is outside the int64 range (limit: int64 range)")
        })?;
        if result
            && (-MAX_EXACT_FLOAT_INT..=MAX_EXACT_FLOAT_INT).contains(&v)
            && !obj.is_instance(int64_type(obj.py())?)?
        {
            // A computed int: a number, as a JS function's result would be.
            #[allow(clippy::cast_precision_loss)] // exact: |v| <= 2**53
            write_float(out, v as f64, format);
        } else if format == Format::Clean {
            let _ = write!(out, "\"{v}\"");
        } else if format == Format::Export {
            let _ = write!(out, "{v}");
        } else {
            let _ = write!(
                out,
                "{{\"$integer\":\"{}\"}}",
                STANDARD.encode(v.to_le_bytes())
            );
        }
    } else if obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
        || obj.is_instance_of::<PyMemoryView>()
    {
        let bytes: Vec<u8> = if let Ok(b) = obj.cast::<PyBytes>() {
            b.as_bytes().to_vec()
        } else if let Ok(b) = obj.cast::<PyByteArray>() {
            b.to_vec()
        } else {
            obj.call_method0("tobytes")?.extract()?
        };
        if format == Format::Clean {
            let _ = write!(out, "\"{}\"", STANDARD.encode(bytes));
        } else {
            let _ = write!(out, "{{\"$bytes\":\"{}\"}}", STANDARD.encode(bytes));
        }
    } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        out.push('[');
        for (i, item) in obj.try_iter()?.enumerate() {
            if i > 0 {
                out.push(',');
            }
            encode(&item?, out, format, result, depth + 1)?;
        }
        out.push(']');
    } else if let Ok(d) = obj.cast::<PyDict>() {
        let mut fields = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(InvalidValueError::new_err(format!(
                    "object keys must be str, found {}",
                    type_name(&k)
                )));
            };
            let key = key
                .to_str()
                .map_err(|_| InvalidValueError::new_err("object key is not valid Unicode"))?
                .to_owned();
            if format != Format::Clean && key.starts_with('$') {
                // Only the encoding's own objects may have `$` keys (spec §11.1).
                return Err(InvalidValueError::new_err(format!(
                    "field name {key:?} starts with '$', which is reserved"
                )));
            }
            fields.push((key, v));
        }
        if format == Format::Export {
            fields.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        }
        out.push('{');
        for (i, (key, v)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_str(out, key);
            out.push(':');
            encode(v, out, format, result, depth + 1)?;
        }
        out.push('}');
    } else {
        return Err(InvalidValueError::new_err(format!(
            "{} is not a value (values are None, int, float, bool, str, bytes, list, dict)",
            type_name(obj)
        )));
    }
    Ok(())
}

/// The Convex JSON text of a value (the clean format when `clean`); `result` applies the
/// number policy of function results (a computed `int` is a number; see the module doc).
#[pyfunction]
#[pyo3(signature = (value, clean=false, result=false))]
fn convex_json(value: &Bound<'_, PyAny>, clean: bool, result: bool) -> PyResult<String> {
    let mut out = String::with_capacity(64);
    let format = if clean {
        Format::Clean
    } else {
        Format::Encoded
    };
    encode(value, &mut out, format, result, 0)?;
    Ok(out)
}

/// The `export_json` text of a value (snapshot exports): int64 as JSON integers, floats
/// with a decimal point or exponent, object keys sorted by byte order.
#[pyfunction]
fn export_json(value: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut out = String::with_capacity(128);
    encode(value, &mut out, Format::Export, false, 0)?;
    Ok(out)
}

fn decode_b64(text: &Bound<'_, PyAny>, what: &str, path: &str) -> PyResult<Vec<u8>> {
    let s: &str = text.extract().map_err(|_| {
        InvalidValueError::new_err(format!("{path}: {what} must hold a base64 string"))
    })?;
    STANDARD
        .decode(s)
        .map_err(|_| InvalidValueError::new_err(format!("{path}: {what} is not valid base64")))
}

fn eight(bytes: Vec<u8>, what: &str, path: &str) -> PyResult<[u8; 8]> {
    bytes
        .try_into()
        .map_err(|_| InvalidValueError::new_err(format!("{path}: {what} must decode to 8 bytes")))
}

fn decode<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    path: &mut String,
    depth: usize,
    export: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if depth > MAX_VALUE_DEPTH + 1 {
        return Err(InvalidValueError::new_err(format!(
            "{path}: nested more than {MAX_VALUE_DEPTH} levels deep (limit: maximum nesting depth)"
        )));
    }
    if obj.is_none() || obj.is_instance_of::<PyBool>() || obj.is_instance_of::<PyString>() {
        return Ok(obj.clone());
    }
    if obj.is_instance_of::<PyFloat>() {
        return Ok(obj.clone());
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if export {
            // Export JSON: a number without '.' or an exponent is an int64.
            let v: i64 = i.extract().map_err(|_| {
                InvalidValueError::new_err(format!(
                    "{path}: integer outside the int64 range (limit: int64 range)"
                ))
            })?;
            return int64_to_py(py, v);
        }
        // A JSON number is a float64, whatever its text looks like.
        let f: f64 = i.extract().map_err(|_| {
            InvalidValueError::new_err(format!("{path}: number too large for a float64"))
        })?;
        return Ok(PyFloat::new(py, f).into_any());
    }
    if let Ok(list) = obj.cast::<PyList>() {
        let out = PyList::empty(py);
        for (i, item) in list.iter().enumerate() {
            let len = path.len();
            let _ = write!(path, "[{i}]");
            out.append(decode(py, &item, path, depth + 1, export)?)?;
            path.truncate(len);
        }
        return Ok(out.into_any());
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        if dict.len() == 1 {
            let (k, v) = dict
                .iter()
                .next()
                .ok_or_else(|| InvalidValueError::new_err("empty"))?;
            let key: String = k.extract().unwrap_or_default();
            match key.as_str() {
                "$integer" => {
                    let b = eight(decode_b64(&v, "$integer", path)?, "$integer", path)?;
                    return int64_to_py(py, i64::from_le_bytes(b));
                }
                "$float" => {
                    let b = eight(decode_b64(&v, "$float", path)?, "$float", path)?;
                    let f = f64::from_le_bytes(b);
                    if !special_float(f) && !export {
                        return Err(InvalidValueError::new_err(format!(
                            "{path}: $float may only hold NaN, Infinity, -Infinity or -0.0; \
                             send other floats as JSON numbers"
                        )));
                    }
                    return Ok(PyFloat::new(py, f).into_any());
                }
                "$bytes" => {
                    return Ok(PyBytes::new(py, &decode_b64(&v, "$bytes", path)?).into_any());
                }
                "$set" | "$map" => {
                    return Err(InvalidValueError::new_err(format!(
                        "{path}: {key} is no longer supported"
                    )));
                }
                _ => {}
            }
        }
        let out = PyDict::new(py);
        for (k, v) in dict.iter() {
            let key: String = k.extract().map_err(|_| {
                InvalidValueError::new_err(format!("{path}: object keys must be strings"))
            })?;
            if key.starts_with('$') {
                return Err(InvalidValueError::new_err(format!(
                    "{path}: field name {key:?} starts with '$', which is reserved"
                )));
            }
            let len = path.len();
            path.push('.');
            path.push_str(&key);
            let value = decode(py, &v, path, depth + 1, export)?;
            path.truncate(len);
            out.set_item(k, value)?;
        }
        return Ok(out.into_any());
    }
    Err(InvalidValueError::new_err(format!(
        "{path}: {} is not JSON",
        type_name(obj)
    )))
}

/// Turn parsed Convex JSON (from `json.loads`) into a value; `root` names it in errors;
/// `export` reads the export format, where a JSON integer is an int64.
#[pyfunction]
#[pyo3(signature = (obj, root="value", export=false))]
fn from_convex_json<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    root: &str,
    export: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let mut path = root.to_owned();
    decode(py, obj, &mut path, 0, export)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(convex_json, m)?)?;
    m.add_function(wrap_pyfunction!(from_convex_json, m)?)?;
    m.add_function(wrap_pyfunction!(export_json, m)?)?;
    Ok(())
}
