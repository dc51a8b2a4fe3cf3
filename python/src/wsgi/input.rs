//! `wsgi.input` ([`Input`]): the request body as a file the app reads, fed as it
//! arrives. On the server thread a task ([`pump`]) reads the body (forkd's
//! `RequestBody`, under `max_body` and `body_read_timeout` as for ASGI) into a channel
//! of one chunk; a pool thread reading the file waits on that channel with the GIL
//! released. So at most a chunk or two of the body is in memory whatever its size,
//! and a body the app never reads is never read ahead of it (hyper and forkd drain it
//! after the response, as for any app).
//!
//! `read(n)` returns n bytes unless the body ends first (a buffered file's contract,
//! which Django's and Werkzeug's readers assume); `read()` the rest; `readline`,
//! `readlines` and iteration by lines. A body cut short (the client left, a limit)
//! raises `OSError` in the app.

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::mpsc;

/// A body chunk, or `Err` when the body failed.
pub type Piece = Result<Bytes, ()>;

/// Reads `body` into `pieces` as the reader takes them; ends with the body, when it
/// fails (an `Err` piece) or when the reader is gone.
pub async fn pump(mut body: forkd::app::RequestBody, pieces: mpsc::Sender<Piece>) {
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() && pieces.send(Ok(data)).await.is_err() {
                        return;
                    }
                }
                if body.is_end_stream() {
                    return;
                }
            }
            None => return,
            Some(Err(_)) => {
                let _ = pieces.send(Err(())).await;
                return;
            }
        }
    }
}

/// Where the file's bytes come from.
enum Source {
    /// No (more) body.
    Ended,
    Stream(mpsc::Receiver<Piece>),
}

/// `wsgi.input`.
#[pyclass(module = "forkd._native")]
pub struct Input {
    source: Source,
    /// What was received and not read yet.
    buffer: Bytes,
    /// The body failed: every later read raises too.
    failed: bool,
}

impl Input {
    pub fn empty() -> Input {
        Input {
            source: Source::Ended,
            buffer: Bytes::new(),
            failed: false,
        }
    }

    pub fn new(first: Bytes, pieces: mpsc::Receiver<Piece>) -> Input {
        Input {
            source: Source::Stream(pieces),
            buffer: first,
            failed: false,
        }
    }

    /// Refills an empty buffer, waiting with the GIL released; false at the end.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        if self.failed {
            return Err(PyOSError::new_err("the request body could not be read"));
        }
        while self.buffer.is_empty() {
            let Source::Stream(pieces) = &mut self.source else {
                return Ok(false);
            };
            let piece = match pieces.try_recv() {
                Ok(piece) => Some(piece),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    py.allow_threads(|| pieces.blocking_recv())
                }
            };
            match piece {
                Some(Ok(data)) => self.buffer = data,
                Some(Err(())) => {
                    self.failed = true;
                    self.source = Source::Ended;
                    return Err(PyOSError::new_err(
                        "the request body could not be read (the client went away, or a limit was passed)",
                    ));
                }
                None => {
                    self.source = Source::Ended;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Up to `limit` bytes (None: all) into `out`; with `line`, up to and including
    /// the first newline.
    fn take(
        &mut self,
        py: Python<'_>,
        limit: Option<usize>,
        line: bool,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        loop {
            let want = limit.map(|l| l - out.len());
            if want == Some(0) || !self.fill(py)? {
                return Ok(());
            }
            let mut n = want.map_or(self.buffer.len(), |w| w.min(self.buffer.len()));
            if line {
                if let Some(i) = self.buffer[..n].iter().position(|&b| b == b'\n') {
                    out.extend_from_slice(&self.buffer[..=i]);
                    self.buffer.advance(i + 1);
                    return Ok(());
                }
            }
            n = n.min(self.buffer.len());
            out.extend_from_slice(&self.buffer[..n]);
            self.buffer.advance(n);
        }
    }

    /// One read as a `bytes`: a single buffered chunk is returned as it is.
    fn read_bytes<'py>(
        &mut self,
        py: Python<'py>,
        limit: Option<usize>,
        line: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::new();
        self.take(py, limit, line, &mut out)?;
        Ok(PyBytes::new(py, &out))
    }
}

/// A size argument: None or negative means no limit.
fn limit_of(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.read_bytes(py, limit_of(size), false)
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.read_bytes(py, limit_of(size), true)
    }

    /// Lines until the end, or until their total passes `hint` (as `IOBase.readlines`).
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = limit_of(hint).filter(|h| *h > 0);
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.read_bytes(py, None, true)?;
            if line.as_bytes().is_empty() {
                return Ok(lines);
            }
            total += line.as_bytes().len();
            lines.push(line);
            if hint.is_some_and(|h| total >= h) {
                return Ok(lines);
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.read_bytes(py, None, true)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&mut self) {}
}
