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

    /// Ends the body for the app: later reads find its end, and the server thread's
    /// reader stops (the rest is drained by forkd).
    pub fn end(&mut self) {
        self.source = Source::Ended;
        self.buffer = Bytes::new();
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

    /// See [`take`].
    fn take(
        &mut self,
        py: Python<'_>,
        limit: Option<usize>,
        line: bool,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        let mut buffer = std::mem::take(&mut self.buffer);
        let taken = take(&mut buffer, limit, line, out, |buffer| {
            self.buffer = Bytes::new();
            let more = self.fill(py)?;
            *buffer = std::mem::take(&mut self.buffer);
            Ok(more)
        });
        self.buffer = buffer;
        taken
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

/// Moves up to `limit` bytes (None: all) from `buffer` into `out`, calling `fill` to
/// refill an empty `buffer` (false: the body ended); with `line`, stops after the first
/// newline. The reading rules of `read(n)`, `read()` and `readline(n)`, without Python.
fn take<E>(
    buffer: &mut Bytes,
    limit: Option<usize>,
    line: bool,
    out: &mut Vec<u8>,
    mut fill: impl FnMut(&mut Bytes) -> Result<bool, E>,
) -> Result<(), E> {
    loop {
        let want = limit.map(|l| l.saturating_sub(out.len()));
        if want == Some(0) {
            return Ok(());
        }
        if buffer.is_empty() && !fill(buffer)? {
            return Ok(());
        }
        let n = want.map_or(buffer.len(), |w| w.min(buffer.len()));
        if line {
            if let Some(i) = buffer[..n].iter().position(|&b| b == b'\n') {
                out.extend_from_slice(&buffer[..=i]);
                buffer.advance(i + 1);
                return Ok(());
            }
        }
        out.extend_from_slice(&buffer[..n]);
        buffer.advance(n);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body arriving as `chunks`.
    struct Body(VecDeque<Bytes>);

    impl Body {
        fn new(chunks: &[&[u8]]) -> Body {
            Body(chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect())
        }
        fn read(&mut self, buffer: &mut Bytes, limit: Option<usize>, line: bool) -> Vec<u8> {
            let mut out = Vec::new();
            take(buffer, limit, line, &mut out, |b| {
                Ok::<_, ()>(match self.0.pop_front() {
                    Some(chunk) => {
                        *b = chunk;
                        true
                    }
                    None => false,
                })
            })
            .unwrap();
            out
        }
    }

    #[test]
    fn reads_sizes_and_lines_across_chunks() {
        let mut body = Body::new(&[b"ab", b"c\nde", b"", b"f\n\ngh"]);
        let mut buffer = Bytes::new();
        assert_eq!(body.read(&mut buffer, Some(2), false), b"ab");
        assert_eq!(body.read(&mut buffer, None, true), b"c\n");
        assert_eq!(body.read(&mut buffer, Some(2), true), b"de");
        assert_eq!(body.read(&mut buffer, None, true), b"f\n");
        assert_eq!(body.read(&mut buffer, None, true), b"\n");
        assert_eq!(body.read(&mut buffer, Some(0), false), b"");
        assert_eq!(body.read(&mut buffer, None, true), b"gh");
        assert_eq!(body.read(&mut buffer, None, true), b"");
        assert_eq!(body.read(&mut buffer, None, false), b"");
    }

    #[test]
    fn a_failed_body_is_an_error() {
        let mut buffer = Bytes::from_static(b"ok");
        let mut out = Vec::new();
        let failed = take(&mut buffer, None, false, &mut out, |_| Err("gone"));
        assert_eq!(failed, Err("gone"));
        assert_eq!(out, b"ok");
    }

    /// Random bodies in random chunks, read by random calls: the reads put together
    /// are the body; `read(n)` gives n bytes unless the body ended; a line ends with
    /// its first newline (or at the limit, or at the end).
    #[test]
    fn random_reads_give_back_the_body() {
        let mut state: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3_000 {
            let len = (next() % 200) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    if next() % 5 == 0 {
                        b'\n'
                    } else {
                        b'a' + (next() % 3) as u8
                    }
                })
                .collect();
            let mut chunks = Vec::new();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = ((next() % 40) as usize).min(rest.len());
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            let mut body = Body::new(&chunks);
            let mut buffer = Bytes::new();
            let mut got = Vec::new();
            loop {
                let limit = (next() % 3 != 0).then(|| (next() % 30) as usize);
                let line = next() % 2 == 0;
                let read = body.read(&mut buffer, limit, line);
                let left = data.len() - got.len();
                if let Some(limit) = limit {
                    assert!(read.len() <= limit);
                }
                if line {
                    let newline = read.iter().position(|&b| b == b'\n');
                    assert!(newline.is_none_or(|i| i == read.len() - 1), "{read:?}");
                    if newline.is_none() {
                        assert!(limit == Some(read.len()) || read.len() == left);
                    }
                } else {
                    assert_eq!(read.len(), limit.unwrap_or(left).min(left));
                }
                got.extend_from_slice(&read);
                if got.len() == data.len() && limit.is_none() {
                    break;
                }
                if read.is_empty() && limit != Some(0) {
                    break;
                }
            }
            assert_eq!(got, data);
        }
    }
}
