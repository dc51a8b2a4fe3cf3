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

/// Makes the environs of one worker's requests; shared by the pool threads.
pub struct Environs {
    template: Py<PyDict>,
    root_path: String,
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
        })
    }

    /// The environ of a request.
    pub fn environ<'py>(
        &self,
        py: Python<'py>,
        parts: &hyper::http::request::Parts,
        input: Input,
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
        for (key, value) in cgi_items(parts, &context) {
            environ.set_item(PyString::new(py, &key), value)?;
        }
        let scheme = if https {
            intern!(py, "https")
        } else {
            intern!(py, "http")
        };
        environ.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
        environ.set_item(intern!(py, "wsgi.input"), Py::new(py, input)?)?;
        Ok(environ)
    }
}
