//! The environ dict of each request ([`Environs`]): a copy of a template holding the
//! constant keys (`wsgi.version`, `wsgi.errors`, `wsgi.file_wrapper`, ...), then the
//! request's CGI variables (`cgi.rs`), `wsgi.url_scheme` (https on a `tls://` listener
//! or as a trusted proxy said, as for ASGI) and `wsgi.input`.

use super::cgi::{cgi_items, Context};
use super::input::Input;
use forkd::app::{ClientAddr, Scheme, ServerAddr};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

/// How many `HTTP_*` key strings are kept (see `Environs::keys`): the standard
/// headers and an app's own few fit many times over; made-up names past these are made
/// for each request, so a client cannot grow the map.
const KEYS: usize = 256;

/// Makes the environs of one worker's requests; shared by the pool threads.
pub struct Environs {
    template: Py<PyDict>,
    root_path: String,
    /// The environ's key strings, made once (their hash computed once): the fixed CGI
    /// names interned, `HTTP_*` names kept here. Only touched with the GIL held, so
    /// the lock is never contended.
    keys: Mutex<HashMap<Cow<'static, str>, Py<PyString>>>,
}

impl Environs {
    /// `file_wrapper`: `forkd._wsgi.FileWrapper`; `errors`: the stream into forkd's
    /// log (`sys.stderr` of the worker).
    pub fn new(
        py: Python<'_>,
        root_path: &str,
        multithread: bool,
        multiprocess: bool,
        errors: PyObject,
        file_wrapper: PyObject,
    ) -> PyResult<Environs> {
        let template = PyDict::new(py);
        template.set_item("wsgi.version", (1, 0))?;
        template.set_item("wsgi.multithread", multithread)?;
        template.set_item("wsgi.multiprocess", multiprocess)?;
        template.set_item("wsgi.run_once", false)?;
        // The body ends where the request's does (forkd frames it): an app may read
        // to EOF without CONTENT_LENGTH (Werkzeug, Gunicorn's meaning).
        template.set_item("wsgi.input_terminated", true)?;
        template.set_item("wsgi.errors", errors)?;
        template.set_item("wsgi.file_wrapper", file_wrapper)?;
        template.set_item("SERVER_SOFTWARE", "forkd")?;
        Ok(Environs {
            template: template.unbind(),
            root_path: root_path.to_string(),
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// The environ of a request.
    pub fn environ<'py>(
        &self,
        py: Python<'py>,
        parts: &hyper::http::request::Parts,
        input: &Py<Input>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let environ = self.template.bind(py).copy()?;
        let https = parts
            .extensions
            .get::<Scheme>()
            .is_some_and(|s| s.0 == "https");
        let context = Context {
            root_path: &self.root_path,
            https,
            client: parts
                .extensions
                .get::<ClientAddr>()
                .and_then(|c| crate::bridge::client_address(&c.0)),
            server: parts.extensions.get::<ServerAddr>().map(|s| s.0),
        };
        let items = cgi_items(parts, &context);
        // The keys first, under the lock, which is let go before the dict is filled:
        // no Python code (a finalizer that could let another thread take the GIL and
        // wait for the lock) runs while it is held.
        let keys: Vec<Bound<'py, PyString>> = {
            let mut made = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            items
                .iter()
                .map(|(key, _)| match made.get(key) {
                    Some(known) => known.bind(py).clone(),
                    None if made.len() < KEYS => {
                        let string = PyString::intern(py, key);
                        made.insert(key.clone(), string.clone().unbind());
                        string
                    }
                    None => PyString::new(py, key),
                })
                .collect()
        };
        for (key, (_, value)) in keys.into_iter().zip(items) {
            environ.set_item(key, value)?;
        }
        let scheme = if https {
            intern!(py, "https")
        } else {
            intern!(py, "http")
        };
        environ.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
        environ.set_item(intern!(py, "wsgi.input"), input)?;
        Ok(environ)
    }
}
