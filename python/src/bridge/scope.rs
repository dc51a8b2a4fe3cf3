//! The ASGI scope of each request ([`Scopes`]): a copy of a template dict with every
//! key in order, its values replaced; the Python objects that repeat from request to
//! request made once and kept: header names, the client's host, the server's address
//! (in the templates), and in small caches ([`Recent`]) whole client addresses, paths
//! and headers.
//! The address parsing ([`address`], [`known_host_port`]) is pure, and unit-tested.

use super::recent::Recent;
use forkd::app::{ClientAddr, Scheme, ServerAddr};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::cell::RefCell;
use std::collections::HashMap;

/// How many request header names the bridge keeps as Python bytes (see
/// `Scopes::header_names`): the standard ones and an app's own few fit many times
/// over, while a client sending made-up names cannot grow the map.
const HEADER_NAMES: usize = 256;

type NameHashing = std::hash::BuildHasherDefault<NameHash>;

/// The hash of a header name in `Scopes::header_names`: a standard name hashes as
/// one small number, another as its (short, lower-case) bytes, each step a rotate,
/// an xor and a multiplication (FxHash's). The map is bounded, so colliding names
/// chosen by a client cost at most [`HEADER_NAMES`] comparisons.
#[derive(Default)]
pub struct NameHash(u64);

impl std::hash::Hasher for NameHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u8(&mut self, byte: u8) {
        self.write_u64(u64::from(byte));
    }
    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
    fn write_isize(&mut self, word: isize) {
        self.write_u64(word as u64);
    }
}

/// Makes the scopes of one worker's requests (HTTP and WebSocket). Lives on the loop.
pub struct Scopes {
    /// The lifespan state, copied into each request's scope.
    state: PyObject,
    root_path: String,
    /// Every HTTP (WebSocket) scope starts as a copy of this (see `template`).
    http_template: Py<PyDict>,
    ws_template: Py<PyDict>,
    /// The listener address whose ASGI `server` the templates hold (the last one seen).
    server: RefCell<Option<std::net::SocketAddr>>,
    /// The last IPv4 client host seen (as written in `ClientAddr`) and its Python
    /// string: clients of a worker mostly share a few addresses (a proxy, a load
    /// balancer), and a match saves parsing the address and making the string.
    client_host: RefCell<Option<(String, PyObject)>>,
    /// Request header names as the scope gives them (lower-case `bytes`), made once
    /// per name: the same few names come with every request. At most
    /// [`HEADER_NAMES`] are kept; names past those are made for each request.
    header_names: RefCell<HashMap<hyper::header::HeaderName, Py<PyBytes>, NameHashing>>,
    /// The Python objects of what repeats from request to request, kept whole (they
    /// are immutable: every scope that has them may share them): a client address's
    /// `(host, port)` (a keep-alive connection's requests all have it), a raw path's
    /// `path` and `raw_path`, a header's `(name, value)`.
    clients: RefCell<Recent<Py<PyTuple>>>,
    paths: RefCell<Recent<(Py<PyString>, Py<PyBytes>)>>,
    headers: RefCell<Recent<Py<PyTuple>>>,
}

/// Slots of the caches of clients, paths and headers: a worker's open keep-alive
/// connections (64 clients under `wrk -c128` on 2 workers) and the headers of their
/// requests.
const RECENT_CLIENTS: usize = 128;
const RECENT_PATHS: usize = 64;
const RECENT_HEADERS: usize = 256;

/// The longest path and header (name and value) kept: longer ones are made for each
/// request (cookies, tokens: they rarely repeat, and would only take memory).
const RECENT_PATH_LEN: usize = 256;
const RECENT_HEADER_LEN: usize = 128;

impl Scopes {
    pub fn new(py: Python<'_>, state: PyObject, root_path: &str) -> PyResult<Scopes> {
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.4")?;
        Ok(Scopes {
            state,
            http_template: Self::template(py, &asgi, root_path, false)?,
            ws_template: Self::template(py, &asgi, root_path, true)?,
            server: RefCell::new(None),
            client_host: RefCell::new(None),
            header_names: RefCell::default(),
            clients: RefCell::new(Recent::new(RECENT_CLIENTS, 64)),
            paths: RefCell::new(Recent::new(RECENT_PATHS, RECENT_PATH_LEN)),
            headers: RefCell::new(Recent::new(RECENT_HEADERS, RECENT_HEADER_LEN)),
            root_path: root_path.to_string(),
        })
    }

    /// A dict with every key of a request's scope in order, the constant values set:
    /// each scope is a copy of it (CPython copies a dict's key table whole), whose
    /// values are then replaced in place, never growing the dict.
    fn template<'py>(
        py: Python<'py>,
        asgi: &Bound<'py, PyDict>,
        root_path: &str,
        websocket: bool,
    ) -> PyResult<Py<PyDict>> {
        let scope = PyDict::new(py);
        let kind = if websocket { "websocket" } else { "http" };
        scope.set_item(intern!(py, "type"), PyString::intern(py, kind))?;
        scope.set_item(intern!(py, "asgi"), asgi)?;
        scope.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
        if !websocket {
            scope.set_item(intern!(py, "method"), intern!(py, "GET"))?;
        }
        let scheme = if websocket { "ws" } else { "http" };
        scope.set_item(intern!(py, "scheme"), PyString::intern(py, scheme))?;
        for key in [
            intern!(py, "path"),
            intern!(py, "raw_path"),
            intern!(py, "query_string"),
        ] {
            scope.set_item(key, py.None())?;
        }
        scope.set_item(intern!(py, "root_path"), root_path)?;
        for key in [
            intern!(py, "headers"),
            intern!(py, "client"),
            intern!(py, "server"),
            intern!(py, "state"),
        ] {
            scope.set_item(key, py.None())?;
        }
        Ok(scope.unbind())
    }

    /// `name` as the scope's `bytes` (see `header_names`).
    fn header_name<'py>(
        &self,
        py: Python<'py>,
        name: &hyper::header::HeaderName,
    ) -> Bound<'py, PyBytes> {
        let mut names = self.header_names.borrow_mut();
        if let Some(made) = names.get(name) {
            return made.bind(py).clone();
        }
        let made = PyBytes::new(py, name.as_str().as_bytes());
        if names.len() < HEADER_NAMES {
            names.insert(name.clone(), made.clone().unbind());
        }
        made
    }

    /// The ASGI `client` of a `ClientAddr`'s text (see [`address`]), None if it is no
    /// address.
    fn client<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Option<Bound<'py, PyTuple>>> {
        if let Some(client) = self.clients.borrow().get(&[text.as_bytes()]) {
            return Ok(Some(client.bind(py).clone()));
        }
        let client = self.new_client(py, text)?;
        if let Some(client) = &client {
            self.clients
                .borrow_mut()
                .put(&[text.as_bytes()], client.clone().unbind());
        }
        Ok(client)
    }

    /// [`client`](Self::client) made anew.
    fn new_client<'py>(
        &self,
        py: Python<'py>,
        text: &str,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let mut cached = self.client_host.borrow_mut();
        if let Some((known, host)) = cached.as_ref() {
            if let Some(port) = known_host_port(text, known) {
                let port = port.into_pyobject(py)?.into_any();
                return Ok(Some(PyTuple::new(py, [host.bind(py).clone(), port])?));
            }
        }
        let Some((host, port)) = address(text) else {
            return Ok(None);
        };
        let ipv4_with_port = matches!(host, std::borrow::Cow::Borrowed(_)) && port != 0;
        let host_text = host.into_owned();
        let host = PyString::new(py, &host_text).into_any();
        if ipv4_with_port {
            *cached = Some((host_text, host.clone().unbind()));
        }
        let port = port.into_pyobject(py)?.into_any();
        Ok(Some(PyTuple::new(py, [host, port])?))
    }

    /// The templates' ASGI `server`, set to that of `addr` when it is another address
    /// than theirs (a worker with one listener sets it once); None when the listener
    /// has no address.
    fn server(&self, py: Python<'_>, addr: Option<std::net::SocketAddr>) -> PyResult<()> {
        let mut known = self.server.borrow_mut();
        if *known == addr {
            return Ok(());
        }
        let server = match addr {
            Some(addr) => (addr.ip().to_string(), addr.port())
                .into_pyobject(py)?
                .into_any()
                .unbind(),
            None => py.None(),
        };
        for template in [&self.http_template, &self.ws_template] {
            template
                .bind(py)
                .set_item(intern!(py, "server"), server.clone_ref(py))?;
        }
        *known = addr;
        Ok(())
    }

    /// The scope's `path` and `raw_path` of a request's raw path.
    fn path<'py>(
        &self,
        py: Python<'py>,
        raw_path: &str,
    ) -> (Bound<'py, PyString>, Bound<'py, PyBytes>) {
        if let Some((path, raw)) = self.paths.borrow().get(&[raw_path.as_bytes()]) {
            return (path.bind(py).clone(), raw.bind(py).clone());
        }
        let path = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
        let made = if self.root_path.is_empty() {
            (
                PyString::new(py, &path),
                PyBytes::new(py, raw_path.as_bytes()),
            )
        } else {
            // As uvicorn does: `path` includes the mount prefix, which apps strip.
            (
                PyString::new(py, &format!("{}{path}", self.root_path)),
                PyBytes::new(py, format!("{}{raw_path}", self.root_path).as_bytes()),
            )
        };
        self.paths.borrow_mut().put(
            &[raw_path.as_bytes()],
            (made.0.clone().unbind(), made.1.clone().unbind()),
        );
        made
    }

    /// A request header as the scope's `(name, value)`.
    fn header<'py>(
        &self,
        py: Python<'py>,
        name: &hyper::header::HeaderName,
        value: &[u8],
    ) -> PyResult<Bound<'py, PyTuple>> {
        let key: [&[u8]; 2] = [name.as_str().as_bytes(), value];
        if let Some(header) = self.headers.borrow().get(&key) {
            return Ok(header.bind(py).clone());
        }
        let header = PyTuple::new(py, [self.header_name(py, name), PyBytes::new(py, value)])?;
        self.headers.borrow_mut().put(&key, header.clone().unbind());
        Ok(header)
    }

    /// The scope of a request (`websocket`: of an upgrade request) with these `parts`.
    pub fn scope<'py>(
        &self,
        py: Python<'py>,
        parts: &hyper::http::request::Parts,
        websocket: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.server(py, parts.extensions.get::<ServerAddr>().map(|s| s.0))?;
        let template = if websocket {
            &self.ws_template
        } else {
            &self.http_template
        };
        let scope = template.bind(py).copy()?;
        let version = match parts.version {
            hyper::Version::HTTP_10 => Some(intern!(py, "1.0")),
            hyper::Version::HTTP_2 => Some(intern!(py, "2")),
            hyper::Version::HTTP_11 => None,
            _ => Some(intern!(py, "1.1")),
        };
        if let Some(version) = version {
            scope.set_item(intern!(py, "http_version"), version)?;
        }
        let https = parts
            .extensions
            .get::<Scheme>()
            .is_some_and(|s| s.0 == "https");
        if websocket {
            if https {
                scope.set_item(intern!(py, "scheme"), intern!(py, "wss"))?;
            }
        } else {
            if parts.method != hyper::Method::GET {
                let method = match parts.method {
                    hyper::Method::POST => intern!(py, "POST").clone(),
                    hyper::Method::HEAD => intern!(py, "HEAD").clone(),
                    hyper::Method::PUT => intern!(py, "PUT").clone(),
                    hyper::Method::DELETE => intern!(py, "DELETE").clone(),
                    hyper::Method::PATCH => intern!(py, "PATCH").clone(),
                    hyper::Method::OPTIONS => intern!(py, "OPTIONS").clone(),
                    ref other => PyString::new(py, other.as_str()),
                };
                scope.set_item(intern!(py, "method"), method)?;
            }
            if https {
                scope.set_item(intern!(py, "scheme"), intern!(py, "https"))?;
            }
        }
        let raw_path = parts.uri.path();
        let (path, raw_path) = self.path(py, raw_path);
        scope.set_item(intern!(py, "path"), path)?;
        scope.set_item(intern!(py, "raw_path"), raw_path)?;
        let query = parts.uri.query().unwrap_or("");
        scope.set_item(
            intern!(py, "query_string"),
            PyBytes::new(py, query.as_bytes()),
        )?;
        let headers = PyList::empty(py);
        if let Some(authority) = parts.uri.authority() {
            // HTTP/2 carries the host as `:authority`; ASGI apps read the `host` header.
            if !parts.headers.contains_key(hyper::header::HOST) {
                headers.append(PyTuple::new(
                    py,
                    [
                        self.header_name(py, &hyper::header::HOST),
                        PyBytes::new(py, authority.as_str().as_bytes()),
                    ],
                )?)?;
            }
        }
        for (name, value) in &parts.headers {
            headers.append(self.header(py, name, value.as_bytes())?)?;
        }
        scope.set_item(intern!(py, "headers"), headers)?;
        if let Some(client) = parts.extensions.get::<ClientAddr>() {
            if let Some(client) = self.client(py, &client.0)? {
                scope.set_item(intern!(py, "client"), client)?;
            }
        }
        let state = self.state.bind(py).downcast::<PyDict>()?.copy()?;
        scope.set_item(intern!(py, "state"), state)?;
        Ok(scope)
    }
}

/// `IP:PORT` or `IP` (from a proxy) as ASGI's `(host, port)`. An IPv4 address is
/// given as written (the parser accepts only the canonical form, so it is the same
/// text `to_string` would make, without formatting it again); IPv6 in its canonical
/// form.
pub fn address(text: &str) -> Option<(std::borrow::Cow<'_, str>, u16)> {
    use std::borrow::Cow;
    if let Some((host, port)) = text.rsplit_once(':') {
        if !host.contains(':') {
            if let (Ok(_), Ok(port)) = (host.parse::<std::net::Ipv4Addr>(), port.parse()) {
                return Some((Cow::Borrowed(host), port));
            }
        }
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Some((Cow::Owned(addr.ip().to_string()), addr.port()));
    }
    if text.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some((Cow::Borrowed(text), 0));
    }
    text.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| (Cow::Owned(ip.to_string()), 0))
}

/// The port of `text` if it is `HOST:PORT` with `host` (an IPv4 address as
/// [`address`] accepted it) as its HOST; None for anything else, which [`address`]
/// then reads.
fn known_host_port(text: &str, host: &str) -> Option<u16> {
    let port = text.strip_prefix(host)?.strip_prefix(':')?;
    // u16's parser takes a leading '+', which an address's port never has.
    if port.starts_with('+') {
        return None;
    }
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn client_addresses_as_asgi_host_and_port() {
        let v4 = address("127.0.0.1:8080").unwrap();
        assert_eq!(v4, (Cow::Borrowed("127.0.0.1"), 8080));
        assert!(matches!(v4.0, Cow::Borrowed(_)), "IPv4 as written");
        assert_eq!(address("10.1.2.3").unwrap(), (Cow::Borrowed("10.1.2.3"), 0));
        assert_eq!(address("[::1]:443").unwrap(), (Cow::Borrowed("::1"), 443));
        // IPv6 in its canonical form, with or without a port.
        assert_eq!(address("2001:DB8:0::1").unwrap().0, "2001:db8::1");
        assert_eq!(
            address("[2001:db8:0:0::1]:80").unwrap(),
            (Cow::Borrowed("2001:db8::1"), 80)
        );
        assert_eq!(address("[::ffff:1.2.3.4]:1").unwrap().0, "::ffff:1.2.3.4");
    }

    #[test]
    fn malformed_client_addresses_are_none() {
        for text in [
            "",
            ":",
            "localhost",
            "localhost:80",
            "1.2.3.4:",
            "1.2.3.4:65536",
            "1.2.3.4:-1",
            "1.2.3:80",
            "1.2.3.4.5",
            "256.1.1.1",
            "[1.2.3.4]:80",
            "::1:80:",
            "[::1]",
            "[::1]:x",
            "1.2.3.4 :80",
            "unknown",
        ] {
            assert_eq!(address(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_known_host_matches_only_itself_with_a_port() {
        assert_eq!(known_host_port("10.0.0.1:443", "10.0.0.1"), Some(443));
        assert_eq!(known_host_port("10.0.0.1:0", "10.0.0.1"), Some(0));
        for text in [
            "10.0.0.10:443",
            "10.0.0.1",
            "10.0.0.1:",
            "10.0.0.1:+443",
            "10.0.0.1:-1",
            "10.0.0.1:65536",
            "10.0.0.1:44 3",
            "10.0.0.2:443",
            "x10.0.0.1:443",
        ] {
            assert_eq!(known_host_port(text, "10.0.0.1"), None, "{text:?}");
        }
    }

    /// The short cut agrees with the full parse on any text: what `known_host_port`
    /// reads is what `address` would have given (texts made from the characters of
    /// addresses, by a fixed pseudo-random sequence).
    #[test]
    fn the_cached_host_short_cut_agrees_with_the_parser() {
        const ALPHABET: &[u8] = b"0123456789.:[]+-fa ";
        let hosts = ["1.2.3.4", "10.0.0.1", "0.0.0.0", "127.0.0.1"];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let host = hosts[round % hosts.len()];
            let len = (next() % 10) as usize;
            let mut text = String::new();
            if round % 2 == 0 {
                text.push_str(host);
            }
            for _ in 0..len {
                text.push(char::from(
                    ALPHABET[(next() % ALPHABET.len() as u64) as usize],
                ));
            }
            let parsed = address(&text);
            if let Some(port) = known_host_port(&text, host) {
                assert_eq!(parsed, Some((Cow::Borrowed(host), port)), "{text:?}");
            }
            if let Some((Cow::Borrowed(found), _)) = parsed {
                // Borrowed: IPv4 as written (the text the cache keeps).
                assert!(found.parse::<std::net::Ipv4Addr>().is_ok(), "{text:?}");
            }
        }
    }
}
