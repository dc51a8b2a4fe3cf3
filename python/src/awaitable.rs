//! What `receive()` and `send()` return to the app, for HTTP and WebSockets alike: an
//! awaitable already done ([`ready`], [`done`]), or an asyncio future the bridge later
//! settles with [`resolve`] or [`fail`].

use pyo3::exceptions::PyStopIteration;
use pyo3::intern;
use pyo3::prelude::*;

/// An awaitable that is already done (no asyncio future, no loop iteration).
#[pyclass]
pub struct Ready {
    value: Option<PyObject>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __next__(&mut self, py: Python<'_>) -> PyResult<PyObject> {
        let value = self.value.take().unwrap_or_else(|| py.None());
        Err(PyStopIteration::new_err((value,)))
    }
}

pub fn ready(py: Python<'_>, value: PyObject) -> PyResult<PyObject> {
    Ok(Py::new(py, Ready { value: Some(value) })?.into_any())
}

/// The loop's future that is done with None (set by [`set_done`]).
static DONE: pyo3::sync::GILOnceCell<PyObject> = pyo3::sync::GILOnceCell::new();

/// Makes the future [`done`] returns, on `event_loop` (once, when the bridge is made).
pub fn set_done(py: Python<'_>, event_loop: &PyObject) -> PyResult<()> {
    let finished = event_loop.call_method0(py, "create_future")?;
    finished.call_method1(py, "set_result", (py.None(),))?;
    let _ = DONE.set(py, finished);
    Ok(())
}

/// An awaitable that is done with None: one shared asyncio future, not a new object per
/// `send` (every `await` of a done future returns its result at once, in C, without the
/// StopIteration a [`Ready`] raises).
pub fn done(py: Python<'_>) -> PyResult<PyObject> {
    match DONE.get(py) {
        Some(future) => Ok(future.clone_ref(py)),
        None => ready(py, py.None()),
    }
}

/// Resolves an asyncio future unless it is done (cancelled) already.
pub fn resolve(py: Python<'_>, future: &PyObject, value: PyObject) -> PyResult<()> {
    if !future
        .call_method0(py, intern!(py, "done"))?
        .is_truthy(py)?
    {
        future.call_method1(py, intern!(py, "set_result"), (value,))?;
    }
    Ok(())
}

/// Fails an asyncio future with `error` unless it is done (cancelled) already.
pub fn fail(py: Python<'_>, future: &PyObject, error: PyErr) -> PyResult<()> {
    if !future
        .call_method0(py, intern!(py, "done"))?
        .is_truthy(py)?
    {
        future.call_method1(py, intern!(py, "set_exception"), (error.value(py),))?;
    }
    Ok(())
}
