//! The headers of an app's `http.response.start` into hyper's map ([`ResponseHeaders`]),
//! and the type of its `send()` messages ([`Kind`]).
//! Apps send the same few names and values again and again, as the same `bytes` objects
//! (the constants in their code: `b"content-type"`, `b"application/json"`), so the names
//! and values read are kept by the identity of their `bytes` object in two small
//! direct-mapped caches ([`Slots`]): a hit costs a pointer comparison instead of parsing
//! the name and copying the value into a new allocation (made on the loop's thread and
//! freed on the server's). An entry holds a reference to its `bytes` object, so that
//! object lives while it is cached: the same address is the same immutable bytes.

use crate::pybytes::with_bytes;
use hyper::header::{HeaderName, HeaderValue};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use std::cell::RefCell;

/// Entries per cache: more than the names and constant values of a typical app's
/// responses (a value made anew for each response, such as a content length, takes a
/// slot in passing and is replaced).
const SLOTS: usize = 64;

/// The slot of a `bytes` object at `address`: the bits above its 16-byte alignment,
/// folded so that objects allocated close together spread over the slots.
fn slot(address: usize) -> usize {
    ((address >> 4) ^ (address >> 10)) & (SLOTS - 1)
}

/// A direct-mapped cache of what was read from `bytes` objects, by their identity.
struct Slots<T> {
    entries: Vec<Option<(Py<PyBytes>, T)>>,
}

impl<T: Clone> Slots<T> {
    fn new() -> Slots<T> {
        Slots {
            entries: (0..SLOTS).map(|_| None).collect(),
        }
    }

    /// What `read` makes of `item`'s bytes: from the cache when `item` is the `bytes`
    /// object cached in its slot, else read (and cached, if `item` is exactly `bytes`).
    fn get(
        &mut self,
        item: &Bound<'_, PyAny>,
        read: impl FnOnce(&[u8]) -> PyResult<T>,
    ) -> PyResult<T> {
        let Ok(bytes) = item.downcast_exact::<PyBytes>() else {
            return with_bytes(item, read)?;
        };
        let index = slot(bytes.as_ptr() as usize);
        if let Some((cached, value)) = &self.entries[index] {
            if cached.as_ptr() == bytes.as_ptr() {
                return Ok(value.clone());
            }
        }
        let value = read(bytes.as_bytes())?;
        self.entries[index] = Some((bytes.clone().unbind(), value.clone()));
        Ok(value)
    }
}

/// The ASGI messages an HTTP request's `send()` takes.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Kind {
    Start,
    Body,
}

/// The response headers' reader, with its caches. One per worker, on the loop.
pub struct ResponseHeaders {
    names: RefCell<Slots<HeaderName>>,
    values: RefCell<Slots<HeaderValue>>,
    /// The last `type` strings found equal to `http.response.start` and
    /// `http.response.body`: an app sends the same string constants each time, and the
    /// same object needs no comparison of the text.
    kinds: RefCell<[Option<PyObject>; 2]>,
}

impl ResponseHeaders {
    pub fn new() -> ResponseHeaders {
        ResponseHeaders {
            names: RefCell::new(Slots::new()),
            values: RefCell::new(Slots::new()),
            kinds: RefCell::new([None, None]),
        }
    }

    /// The message type `kind` (a `send()` message's `type`), or None for another one.
    pub fn kind(&self, kind: &Bound<'_, PyAny>) -> PyResult<Option<Kind>> {
        let py = kind.py();
        let mut known = self.kinds.borrow_mut();
        for (index, found) in [Kind::Start, Kind::Body].into_iter().enumerate() {
            if known[index]
                .as_ref()
                .is_some_and(|k| k.as_ptr() == kind.as_ptr())
            {
                return Ok(Some(found));
            }
        }
        // Compared as Python strings: reading the text out (PyBackedStr: a borrowed
        // &str needs Python 3.10's limited API) would make a bytes object each time.
        for (index, (found, name)) in [
            (Kind::Start, pyo3::intern!(py, "http.response.start")),
            (Kind::Body, pyo3::intern!(py, "http.response.body")),
        ]
        .into_iter()
        .enumerate()
        {
            if kind.eq(name)? {
                // Only a str is kept: the same object is then the same text.
                if kind.is_exact_instance_of::<pyo3::types::PyString>() {
                    known[index] = Some(kind.clone().unbind());
                }
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// One `(name, value)` of `http.response.start`'s headers into `map`. A 2-tuple
    /// (what apps send) has its items read directly; any other sequence through
    /// `item[0]` and `item[1]` (a Python int made and a `__getitem__` called for each).
    pub fn append(&self, map: &mut hyper::HeaderMap, item: &Bound<'_, PyAny>) -> PyResult<()> {
        let (name, value) = match item.downcast::<PyTuple>() {
            Ok(pair) if pair.len() == 2 => (pair.get_item(0)?, pair.get_item(1)?),
            _ => (item.get_item(0)?, item.get_item(1)?),
        };
        let name = self.names.borrow_mut().get(&name, |name| {
            HeaderName::from_bytes(name).map_err(|_| {
                PyRuntimeError::new_err(format!(
                    "invalid header name {:?}",
                    String::from_utf8_lossy(name)
                ))
            })
        })?;
        let value = self.values.borrow_mut().get(&value, |value| {
            HeaderValue::from_bytes(value)
                .map_err(|_| PyRuntimeError::new_err(format!("invalid value for header {name}")))
        })?;
        map.append(name, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_spread_neighbouring_objects() {
        // Objects 16, 32, 48 bytes apart (small bytes objects from one pool) each get
        // a slot of their own within a run of SLOTS.
        for step in [16usize, 32, 48] {
            let base = 0x7f00_1234_5000usize;
            let used: std::collections::HashSet<usize> =
                (0..SLOTS / 4).map(|i| slot(base + i * step)).collect();
            assert_eq!(used.len(), SLOTS / 4, "step {step}");
        }
        assert!((0..10_000usize).all(|i| slot(i * 8) < SLOTS));
    }
}
