//! The bytes of what an app sends (a body, a header's name or value, a WebSocket
//! message): a `bytes` object read directly, any other buffer (bytearray, memoryview)
//! through `bytes(value)`.

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The bytes of a `bytes` object (one copy), or of a bytearray / memoryview / other
/// buffer through `bytes(value)`.
pub fn bytes_of(value: Option<Bound<'_, PyAny>>) -> PyResult<Bytes> {
    let Some(value) = value else {
        return Ok(Bytes::new());
    };
    if let Ok(bytes) = value.downcast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(bytes.as_bytes()));
    }
    let converted = value.py().get_type::<PyBytes>().call1((value,))?;
    let bytes = converted.downcast::<PyBytes>()?;
    Ok(Bytes::copy_from_slice(bytes.as_bytes()))
}

/// `f` of the bytes of a `bytes` object in place (a header's name and value are parsed
/// from it, not copied first), or of `bytes(value)` for another buffer.
pub fn with_bytes<R>(value: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(bytes) = value.downcast::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    let converted = value.py().get_type::<PyBytes>().call1((value,))?;
    Ok(f(converted.downcast::<PyBytes>()?.as_bytes()))
}
