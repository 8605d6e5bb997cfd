//! Python objects <-> Convex values.
//!
//! `None, bool, int, float, str, bytes, list, dict` map one to one onto null, boolean, int64,
//! float64, string, bytes, array, object (Convex's value model); tuples are arrays, `bytearray` and
//! `memoryview` are bytes. An `int` outside the int64 range, a non-`str` dict key, a string
//! with lone surrogates or any other type is an `InvalidValueError` naming where it is. An
//! int64 comes back as `reactive.values.Int64` (an `int` subclass), so that the wire can tell
//! it from an `int` a function computed.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
    PyType,
};
use reactive_core::codec::{self, Token};
use reactive_core::document::Document;
use reactive_core::keys;
use reactive_core::limits::{MAX_ARRAY_LEN, MAX_OBJECT_FIELDS, MAX_VALUE_DEPTH};
use reactive_core::value::field_name_problem;
use reactive_core::value::{Object, Value};
use std::cell::RefCell;
use std::collections::HashMap;

use crate::errors::{CoreError, InvalidValueError};

/// Where in the value a conversion failed, innermost last, and why.
struct ConvertError {
    path: Vec<String>,
    message: String,
}

impl ConvertError {
    fn new(message: String) -> Self {
        ConvertError {
            path: Vec::new(),
            message,
        }
    }

    fn at(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }

    fn into_py(self, root: &str) -> PyErr {
        let mut where_ = root.to_owned();
        for seg in self.path.iter().rev() {
            where_.push_str(seg);
        }
        InvalidValueError::new_err(format!("{where_}: {}", self.message))
    }
}

fn convert(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, ConvertError> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Boolean(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        return i.extract::<i64>().map(Value::Int64).map_err(|_| {
            ConvertError::new(format!(
                "int {} is outside the int64 range [-2**63, 2**63) (limit: int64 range)",
                i.str().map(|s| s.to_string()).unwrap_or_default()
            ))
        });
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float64(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s
            .to_str()
            .map(|s| Value::String(s.to_owned()))
            .map_err(|_| {
                ConvertError::new("string is not valid Unicode (lone surrogates)".to_owned())
            });
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    if obj.cast::<PyMemoryView>().is_ok() {
        let bytes: Vec<u8> = obj
            .call_method0("tobytes")
            .and_then(|b| b.extract())
            .map_err(|e| ConvertError::new(format!("memoryview does not convert: {e}")))?;
        return Ok(Value::Bytes(bytes));
    }
    let deeper = || {
        if depth >= MAX_VALUE_DEPTH {
            Err(ConvertError::new(format!(
                "nested more than {MAX_VALUE_DEPTH} levels deep (limit: maximum nesting depth \
                 {MAX_VALUE_DEPTH})"
            )))
        } else {
            Ok(depth + 1)
        }
    };
    if let Ok(list) = obj.cast::<PyList>() {
        let d = deeper()?;
        let mut items = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            items.push(convert(&item, d).map_err(|e| e.at(format!("[{i}]")))?);
        }
        return Ok(Value::Array(items));
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        let d = deeper()?;
        let mut items = Vec::with_capacity(tuple.len());
        for (i, item) in tuple.iter().enumerate() {
            items.push(convert(&item, d).map_err(|e| e.at(format!("[{i}]")))?);
        }
        return Ok(Value::Array(items));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let d = deeper()?;
        return Ok(Value::Object(convert_dict(dict, d)?));
    }
    let type_name = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    Err(ConvertError::new(format!(
        "unsupported type {type_name}; values are None, int, float, bool, str, bytes, list or \
         dict"
    )))
}

fn convert_dict(dict: &Bound<'_, PyDict>, depth: usize) -> Result<Object, ConvertError> {
    let mut fields = Object::new();
    for (k, v) in dict.iter() {
        let Ok(key) = k.cast::<PyString>() else {
            let type_name = k
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            return Err(ConvertError::new(format!(
                "object keys must be str, found {type_name}"
            )));
        };
        let key = key
            .to_str()
            .map_err(|_| ConvertError::new("object key is not valid Unicode".to_owned()))?
            .to_owned();
        let value = convert(&v, depth).map_err(|e| e.at(format!(".{key}")))?;
        fields.insert(key, value);
    }
    Ok(fields)
}

/// Convert a Python object to a value; errors name `root` and the path inside it.
pub fn to_value(obj: &Bound<'_, PyAny>, root: &str) -> PyResult<Value> {
    convert(obj, 0).map_err(|e| e.into_py(root))
}

/// Convert a Python dict to an object (the fields of a document).
pub fn to_object(obj: &Bound<'_, PyAny>, root: &str) -> PyResult<Object> {
    let dict = obj.cast::<PyDict>().map_err(|_| {
        let type_name = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        InvalidValueError::new_err(format!("{root}: expected a dict, found {type_name}"))
    })?;
    convert_dict(dict, 1).map_err(|e| e.into_py(root))
}

static INT64: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `reactive.values.Int64`, the `int` subclass an int64 value comes back as: it stays an
/// int64 on the wire, where a plain `int` a function computed becomes a number.
pub fn int64_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    INT64.import(py, "reactive.values", "Int64")
}

/// An int64 as a Python object: an `Int64`.
pub fn int64_to_py(py: Python<'_>, i: i64) -> PyResult<Bound<'_, PyAny>> {
    int64_type(py)?.call1((i,))
}

/// Convert a value to a Python object.
pub fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Int64(i) => int64_to_py(py, *i)?,
        Value::Float64(f) => PyFloat::new(py, *f).into_any(),
        Value::Boolean(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(fields) => object_to_py(py, fields)?.into_any(),
    })
}

thread_local! {
    /// Field names already turned into Python strings: documents repeat their field names,
    /// and a cached string also carries its hash, which the dict insert needs.
    static FIELD_NAMES: RefCell<HashMap<Box<str>, Py<PyString>>> = RefCell::new(HashMap::new());
}

/// Names longer than this are not cached.
const MAX_CACHED_NAME: usize = 64;
/// The cache stops growing at this many names.
const MAX_CACHED_NAMES: usize = 4096;

fn field_name<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyString> {
    if name.len() > MAX_CACHED_NAME {
        return PyString::new(py, name);
    }
    FIELD_NAMES.with(|cache| {
        if let Some(s) = cache.borrow().get(name) {
            return s.bind(py).clone();
        }
        let s = PyString::intern(py, name);
        let mut cache = cache.borrow_mut();
        if cache.len() < MAX_CACHED_NAMES {
            cache.insert(name.into(), s.clone().unbind());
        }
        s
    })
}

/// Convert an object to a Python dict.
pub fn object_to_py<'py>(py: Python<'py>, fields: &Object) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in fields {
        dict.set_item(field_name(py, k), to_py(py, v)?)?;
    }
    Ok(dict)
}

/// Decode one value of the plain codec straight into Python objects.
fn decoded_to_py<'py>(py: Python<'py>, d: &mut codec::Decoder<'_>) -> PyResult<Bound<'py, PyAny>> {
    let corrupt = |e: codec::CodecError| CoreError(reactive_core::Error::from(e));
    Ok(match d.next_token().map_err(corrupt)? {
        Token::Null => py.None().into_bound(py),
        Token::Int(i) => int64_to_py(py, i)?,
        Token::Float(f) => PyFloat::new(py, f).into_any(),
        Token::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        Token::Str(s) => PyString::new(py, s).into_any(),
        Token::Bytes(b) => PyBytes::new(py, b).into_any(),
        Token::Array(n) => {
            let list = PyList::empty(py);
            for _ in 0..n {
                list.append(decoded_to_py(py, d)?)?;
            }
            list.into_any()
        }
        Token::Object(n) => {
            let dict = PyDict::new(py);
            for _ in 0..n {
                let name = d.field_name().map_err(corrupt)?;
                dict.set_item(field_name(py, name), decoded_to_py(py, d)?)?;
            }
            dict.into_any()
        }
    })
}

/// A document as a Python dict (decoded from its contiguous encoding).
pub fn document_to_py<'py>(py: Python<'py>, doc: &Document) -> PyResult<Bound<'py, PyAny>> {
    decoded_to_py(py, &mut codec::Decoder::new(doc.encoded()))
}

/// Check, without converting, that an object is a value within the value limits.
fn check(obj: &Bound<'_, PyAny>, depth: usize) -> Result<(), ConvertError> {
    // Exact types first, most common first: one pointer comparison each.
    if obj.is_exact_instance_of::<PyString>() {
        // ASCII strings are valid as they are; others must encode to UTF-8.
        let s = obj
            .cast::<PyString>()
            .map_err(|e| ConvertError::new(e.to_string()))?;
        return s.to_str().map(|_| ()).map_err(|_| {
            ConvertError::new("string is not valid Unicode (lone surrogates)".to_owned())
        });
    }
    if obj.is_exact_instance_of::<PyFloat>()
        || obj.is_none()
        || obj.is_exact_instance_of::<PyBool>()
    {
        return Ok(());
    }
    if obj.is_exact_instance_of::<PyInt>() {
        return obj.extract::<i64>().map(|_| ()).map_err(|_| {
            ConvertError::new(format!(
                "int {} is outside the int64 range [-2**63, 2**63) (limit: int64 range)",
                obj.str().map(|s| s.to_string()).unwrap_or_default()
            ))
        });
    }
    if obj.is_instance_of::<PyBool>()
        || obj.is_instance_of::<PyBool>()
        || obj.is_instance_of::<PyFloat>()
        || obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
    {
        return Ok(());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_str().map(|_| ()).map_err(|_| {
            ConvertError::new("string is not valid Unicode (lone surrogates)".to_owned())
        });
    }
    if obj.is_instance_of::<PyInt>() || obj.cast::<PyMemoryView>().is_ok() {
        return convert(obj, depth).map(|_| ());
    }
    let container = |len: usize, limit: usize, what: &str| -> Result<usize, ConvertError> {
        if depth >= MAX_VALUE_DEPTH {
            return Err(ConvertError::new(format!(
                "nested more than {MAX_VALUE_DEPTH} levels deep (limit: maximum nesting depth \
                 {MAX_VALUE_DEPTH})"
            )));
        }
        if len > limit {
            return Err(ConvertError::new(format!(
                "{what} has {len} elements (limit: at most {limit} {what} elements)"
            )));
        }
        Ok(depth + 1)
    };
    if let Ok(list) = obj.cast::<PyList>() {
        let d = container(list.len(), MAX_ARRAY_LEN, "array")?;
        for (i, item) in list.iter().enumerate() {
            check(&item, d).map_err(|e| e.at(format!("[{i}]")))?;
        }
        return Ok(());
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        let d = container(tuple.len(), MAX_ARRAY_LEN, "array")?;
        for (i, item) in tuple.iter().enumerate() {
            check(&item, d).map_err(|e| e.at(format!("[{i}]")))?;
        }
        return Ok(());
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let d = container(dict.len(), MAX_OBJECT_FIELDS, "object")?;
        for (k, v) in dict.iter() {
            let Ok(key) = k.cast::<PyString>() else {
                let type_name = k
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                return Err(ConvertError::new(format!(
                    "object keys must be str, found {type_name}"
                )));
            };
            let key = key
                .to_str()
                .map_err(|_| ConvertError::new("object key is not valid Unicode".to_owned()))?;
            if let Some(reason) = field_name_problem(key) {
                return Err(ConvertError::new(format!(
                    "invalid field name {key:?}: {reason}"
                )));
            }
            check(&v, d).map_err(|e| e.at(format!(".{key}")))?;
        }
        return Ok(());
    }
    convert(obj, depth).map(|_| ())
}

/// Bytes that are equal exactly when two values are equal (int64 1 and float 1.0 differ,
/// as do -0.0 and 0.0); used to tell whether a query's result changed.
#[pyfunction]
fn value_fingerprint(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyBytes>> {
    let v = to_value(value, "value")?;
    let bytes = codec::encode_plain(&v);
    Ok(PyBytes::new(py, &bytes).unbind())
}

/// Check that an object is a Convex value within the value limits; returns it unchanged.
#[pyfunction]
fn check_value<'py>(value: &Bound<'py, PyAny>, root: &str) -> PyResult<Bound<'py, PyAny>> {
    check(value, 0).map_err(|e| e.into_py(root))?;
    Ok(value.clone())
}

/// The order-preserving index-key bytes of a value (spec §12).
#[pyfunction]
fn index_key(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyBytes>> {
    let v = to_value(value, "value")?;
    Ok(PyBytes::new(py, &keys::value_key(&v)).unbind())
}

/// Decode index-key bytes made by `index_key`.
#[pyfunction]
fn decode_index_key<'py>(py: Python<'py>, key: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    match keys::decode_value(key) {
        Ok(Some(v)) => to_py(py, &v),
        Ok(None) => Err(PyTypeError::new_err("the key encodes undefined")),
        Err(e) => Err(crate::errors::CoreError(e.into()).into()),
    }
}

/// Size of a value as the limits count it.
#[pyfunction]
fn value_size(value: &Bound<'_, PyAny>) -> PyResult<usize> {
    Ok(to_value(value, "value")?.size())
}

/// The checksum of a `commits` row (CRC-32C of its canonical form): backends that recount
/// a commit's rows (dropping an index, pruning old versions) rewrite it with this.
#[pyfunction]
fn commit_checksum(ts: u64, document_count: u32, index_entry_count: u32) -> u32 {
    reactive_core::log::record::CommitRecord::new(
        reactive_core::timestamp::Timestamp(ts),
        document_count,
        index_entry_count,
    )
    .checksum
}

/// The bytes of an id (as stored in `documents.id`), or `None` if `text` is not an id.
#[pyfunction]
fn id_bytes<'py>(py: Python<'py>, text: &str) -> Option<Bound<'py, PyBytes>> {
    reactive_core::id::DocumentId::parse(text)
        .ok()
        .map(|id| PyBytes::new(py, &id.to_bytes()))
}

/// The text of an id from its stored bytes.
#[pyfunction]
fn id_text(bytes: &[u8]) -> PyResult<String> {
    reactive_core::id::DocumentId::from_bytes(bytes)
        .map(|id| id.encode())
        .map_err(|e| InvalidValueError::new_err(format!("not a document id: {e}")))
}

/// The table number an id names, or `None` if `text` is not a valid id.
#[pyfunction]
fn id_table_number(text: &str) -> Option<u32> {
    reactive_core::id::DocumentId::parse(text)
        .ok()
        .map(|id| id.table.0)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(id_table_number, m)?)?;
    m.add_function(wrap_pyfunction!(commit_checksum, m)?)?;
    m.add_function(wrap_pyfunction!(id_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(id_text, m)?)?;
    m.add_function(wrap_pyfunction!(value_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(check_value, m)?)?;
    m.add_function(wrap_pyfunction!(index_key, m)?)?;
    m.add_function(wrap_pyfunction!(decode_index_key, m)?)?;
    m.add_function(wrap_pyfunction!(value_size, m)?)?;
    Ok(())
}
