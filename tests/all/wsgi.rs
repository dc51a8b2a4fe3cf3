//! WSGI apps (PEP 3333) in forkd's own workers, from a thread pool of `threads` per
//! worker: a real Flask app, a real Django project (ORM on SQLite, a JSON POST view, a
//! streamed response, static files), the spec's corners on tests/python/wsgi_app.py,
//! `timeout` on a stuck pool, a HUP under load, and telling ASGI from WSGI.
//!
//! The virtualenv `scripts/test-deps.sh` makes (target/pyenv-test) has Flask and
//! Django; without it these tests fail, saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness::*;
use crate::python::python_forkd;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

const ENV: &[(&str, &str)] = &[("PYTHONDONTWRITEBYTECODE", "1")];

fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// A fresh directory with a copy of `files` (under tests/python; a directory is copied
/// whole).
fn app_dir(name: &str, files: &[&str]) -> PathBuf {
    let dir = temp_dir(&format!("wsgi-{name}"));
    for file in files {
        copy_tree(
            &source(file),
            &dir.join(Path::new(file).file_name().unwrap()),
        );
    }
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

/// Starts the `forkd` of the Python package on `app` from `dir` (on `python.path`).
fn start(dir: &Path, app: &str, args: &[&str], extra: &str, python: &str) -> Server {
    Forkd::program(python_forkd())
        .config(write_config(dir, app, extra, python))
        .args(args)
        .envs(ENV.iter().copied())
        .start()
}

fn write_config(dir: &Path, app: &str, extra: &str, python: &str) -> PathBuf {
    let path = dir.join("forkd.toml");
    let text = format!(
        "bind = [\"127.0.0.1:0\"]\napp = \"{app}\"\n{extra}\n[python]\npath = [{:?}]\n{python}\n",
        dir.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn post(addr: &str, path: &str, content_type: &str, body: &str) -> (u16, String, Vec<u8>) {
    request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap()
}

/// Raw bytes on a fresh connection, read until the server closes it (or 10 s pass).
fn exchange(addr: &str, raw: &[u8]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut data = Vec::new();
    let _ = stream.read_to_end(&mut data);
    data
}

/// A chunked body's data.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size");
        let size = usize::from_str_radix(&text(&body[..line_end]), 16).expect("hex size");
        body = &body[line_end + 2..];
        if size == 0 {
            return data;
        }
        data.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_flask_app_serves_json_posts_forms_streams_and_errors() {
    let dir = app_dir("flask", &["flask_app.py"]);
    let server = start(
        &dir,
        "flask_app:app",
        &["-w", "2", "--threads", "4"],
        "",
        "",
    );
    let (status, _, body) = get(&server.addr, "/").unwrap();
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(json(&body)["framework"], "flask");
    let (status, _, body) = get(&server.addr, "/items/42?q=caf%C3%A9").unwrap();
    assert_eq!(status, 200);
    let item = json(&body);
    assert_eq!(item["id"], 42);
    assert_eq!(item["q"], "café");
    assert_eq!(item["host"], "test");
    assert_eq!(item["remote"], "127.0.0.1");
    let (status, _, body) = post(&server.addr, "/echo", "application/json", "{\"a\": [1, 2]}");
    assert_eq!(status, 201, "{}", text(&body));
    assert_eq!(json(&body)["got"]["a"][1], 2);
    assert_eq!(json(&body)["length"], 13);
    let form = "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nforkd\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello file\r\n--XyZ--\r\n";
    let (status, _, body) = post(
        &server.addr,
        "/form",
        "multipart/form-data; boundary=XyZ",
        form,
    );
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(json(&body)["name"], "forkd");
    assert_eq!(json(&body)["file"], "a.txt");
    assert_eq!(json(&body)["size"], 10);
    let (status, head, body) = get(&server.addr, "/stream").unwrap();
    assert_eq!(status, 200);
    assert!(
        head.to_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert_eq!(
        text(&dechunk(&body)),
        "line 0\nline 1\nline 2\nline 3\nline 4\n"
    );
    let (status, _, _) = get(&server.addr, "/boom").unwrap();
    assert_eq!(status, 500);
    server.expect_log("ValueError: flask kaboom", Duration::from_secs(5));
    let (status, _, _) = get(&server.addr, "/").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn a_django_project_serves_its_orm_json_posts_a_stream_and_static_files() {
    let dir = app_dir("django", &["django_site"]);
    let site = dir.join("django_site");
    let venv_python = python_forkd().parent().unwrap().join("python");
    let migrated = std::process::Command::new(&venv_python)
        .args(["manage.py", "migrate", "--run-syncdb", "--verbosity", "0"])
        .current_dir(&site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    let server = start(
        &site,
        "wsgi:application",
        &["-w", "2", "--threads", "4"],
        "",
        "",
    );
    let (status, _, body) = get(&server.addr, "/").unwrap();
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(json(&body)["framework"], "django");
    assert_eq!(json(&body)["notes"], 0);
    // JSON POSTs from many connections at once, into SQLite through the ORM, spread
    // over both workers and their threads.
    let posts: Vec<_> = (0..16)
        .map(|i| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                post(
                    &addr,
                    "/notes/",
                    "application/json",
                    &format!("{{\"text\": \"note {i}\"}}"),
                )
            })
        })
        .collect();
    for handle in posts {
        let (status, _, body) = handle.join().unwrap();
        assert_eq!(status, 201, "{}", text(&body));
    }
    let (_, _, body) = get(&server.addr, "/notes/").unwrap();
    assert_eq!(json(&body)["notes"].as_array().unwrap().len(), 16);
    // StreamingHttpResponse: chunked, every row.
    let (status, head, body) = get(&server.addr, "/stream/?n=100").unwrap();
    assert_eq!(status, 200);
    assert!(
        head.to_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    let rows = text(&dechunk(&body));
    assert_eq!(rows.lines().count(), 100);
    assert!(rows.ends_with("row 99\n"));
    // A static file through django.views.static.serve (a FileResponse: file_wrapper).
    let (status, head, body) = get(&server.addr, "/static/site.css").unwrap();
    assert_eq!(status, 200, "{head}");
    assert_eq!(text(&body), "body { color: teal; }\n");
    assert!(
        head.to_lowercase().contains("content-type: text/css"),
        "{head}"
    );
    let (status, _, _) = get(&server.addr, "/static/missing.css").unwrap();
    assert_eq!(status, 404);
    let (status, _, _) = get(&server.addr, "/boom/").unwrap();
    assert_eq!(status, 500);
    server.expect_log("django kaboom", Duration::from_secs(5));
}

#[test]
fn the_environ_has_every_pep_3333_key_with_forwarded_headers_and_root_path() {
    let dir = app_dir("environ", &["wsgi_app.py"]);
    let server = start(
        &dir,
        "wsgi_app:app",
        &["-w", "1", "--threads", "2"],
        "forwarded_allow_ips = [\"127.0.0.1\"]\n",
        "root_path = \"/api\"\n",
    );
    let (status, _, body) = request(
        &server.addr,
        "GET /api/environ?x=1&y=%C3%A9 HTTP/1.1\r\nHost: Example.org:8080\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nX-Token: a\r\nX-Token: b\r\nX_Spoof: 1\r\nCookie: a=1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 200, "{}", text(&body));
    let environ = json(&body);
    for (key, value) in [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/api"),
        ("PATH_INFO", "/environ"),
        ("QUERY_STRING", "x=1&y=%C3%A9"),
        ("SERVER_NAME", "example.org"),
        ("SERVER_PORT", "8080"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "203.0.113.9"),
        ("HTTP_HOST", "Example.org:8080"),
        ("HTTP_X_TOKEN", "a,b"),
        ("HTTP_COOKIE", "a=1"),
        ("wsgi.url_scheme", "https"),
        ("input_type", "Input"),
    ] {
        assert_eq!(environ[key], value, "{key}: {environ}");
    }
    assert!(environ.get("HTTP_X_SPOOF").is_none(), "{environ}");
    assert!(environ.get("CONTENT_LENGTH").is_none(), "{environ}");
    assert_eq!(environ["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(environ["wsgi.multithread"], true);
    assert_eq!(environ["wsgi.multiprocess"], true);
    assert_eq!(environ["wsgi.run_once"], false);
    assert_eq!(environ["has_file_wrapper"], true);
    // wsgi.errors reaches forkd's log.
    server.expect_log("hello from wsgi.errors", Duration::from_secs(5));
    // A path the proxy already stripped; latin-1 decoding of the raw bytes.
    let (_, _, body) = get(&server.addr, "/environ/caf%C3%A9").unwrap();
    let environ = json(&body);
    assert_eq!(environ["PATH_INFO"], "/environ/caf\u{c3}\u{a9}");
    assert_eq!(environ["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(environ["wsgi.url_scheme"], "http");
    assert!(environ["REMOTE_PORT"]
        .as_str()
        .unwrap()
        .parse::<u16>()
        .is_ok());
}

#[test]
fn http2_requests_reach_a_wsgi_app() {
    use http_body_util::BodyExt;
    let dir = app_dir("h2", &["wsgi_app.py"]);
    let server = start(&dir, "wsgi_app:app", &["-w", "1"], "", "");
    let addr = server.addr.clone();
    let (environ, streamed) = runtime().block_on(async move {
        let mut sender = h2_client(&addr).await;
        let req = hyper::Request::get(format!("http://{addr}/environ?h=2"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let environ = resp.into_body().collect().await.unwrap().to_bytes();
        let req = hyper::Request::get(format!("http://{addr}/hop"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        // The app's Connection and Transfer-Encoding headers are not sent (HTTP/2
        // forbids them: the stream would be reset).
        let resp = sender.send_request(req).await.unwrap();
        assert!(resp.headers().get("connection").is_none());
        let streamed = resp.into_body().collect().await.unwrap().to_bytes();
        (environ, streamed)
    });
    let environ = json(&environ);
    assert_eq!(environ["SERVER_PROTOCOL"], "HTTP/2");
    assert_eq!(environ["HTTP_HOST"], server.addr.as_str());
    assert_eq!(environ["QUERY_STRING"], "h=2");
    assert_eq!(&streamed[..], b"hop");
}

#[test]
fn wsgi_input_streams_a_200_mib_upload_in_bounded_memory_and_reads_lines() {
    let dir = app_dir("upload", &["wsgi_app.py"]);
    let server = start(
        &dir,
        "wsgi_app:app",
        &["-w", "1"],
        "[limits]\nmax_body = \"300MiB\"\n",
        "",
    );
    let size: usize = 200 * 1024 * 1024;
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'x'; 256 * 1024];
    let mut sent = 0;
    while sent < size {
        stream.write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response");
    assert!(response.starts_with(b"HTTP/1.1 200"), "{}", text(&response));
    let counted = json(&response[split + 4..]);
    assert_eq!(counted["bytes"].as_u64(), Some(size as u64));
    let peak_kib = counted["peak_rss_kib"].as_u64().unwrap();
    assert!(
        peak_kib < 64 * 1024,
        "the worker's RSS reached {peak_kib} KiB while reading the upload"
    );

    // readline (with a size), readlines (with a hint), iteration, read() at the end.
    let (status, _, body) = post(&server.addr, "/lines", "text/plain", "l1\nabcdef\nx\ny\nz");
    assert_eq!(status, 200, "{}", text(&body));
    let lines = json(&body);
    assert_eq!(lines["first"], "l1\n");
    assert_eq!(lines["limited"], "abc");
    assert_eq!(lines["rest_of_line"], "def\n");
    assert_eq!(lines["two"], serde_json::json!(["x\n"]));
    assert_eq!(lines["remaining"], serde_json::json!(["y\n", "z"]));
    assert_eq!(lines["after"], "");
    // A chunked upload, read whole with read().
    let mut raw = b"POST /read_all HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..50 {
        raw.extend_from_slice(b"1000\r\n");
        raw.extend_from_slice(&[1u8; 0x1000]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let response = exchange(&server.addr, &raw);
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(json(&response[split + 4..])["bytes"], 50 * 0x1000);
    // A body over max_body is refused by forkd, as for any app.
    let big = "y".repeat(1024);
    let server_small = start(
        &app_dir("upload-limit", &["wsgi_app.py"]),
        "wsgi_app:app",
        &["-w", "1"],
        "[limits]\nmax_body = 100\n",
        "",
    );
    let (status, _, _) = post(&server_small.addr, "/read_all", "text/plain", &big);
    assert_eq!(status, 413);
}

#[test]
fn start_response_exc_info_and_write_follow_pep_3333() {
    let dir = app_dir("exc-info", &["wsgi_app.py"]);
    let server = start(&dir, "wsgi_app:app", &["-w", "1"], "", "");
    // write() before the iterable, whose empty chunk is skipped.
    let (status, _, body) = get(&server.addr, "/write").unwrap();
    assert_eq!(status, 200);
    assert_eq!(text(&dechunk(&body)), "from write; from the iterable");
    // exc_info before the head went: the new status and headers replace the old.
    let (status, head, body) = get(&server.addr, "/exc_info_before").unwrap();
    assert_eq!(status, 503);
    assert!(head.to_lowercase().contains("x-replaced: yes"), "{head}");
    assert_eq!(text(&body), "replaced");
    // exc_info after the head went: start_response re-raises, the response is cut.
    let response = exchange(
        &server.addr,
        b"GET /exc_info_after HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let response = text(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("first chunk"), "{response}");
    assert!(
        !response.ends_with("0\r\n\r\n"),
        "a cut response is no complete chunked body: {response:?}"
    );
    server.expect_log("RuntimeError: late failure", Duration::from_secs(5));
    // start_response twice without exc_info is the app's error.
    let (status, _, _) = get(&server.addr, "/twice").unwrap();
    assert_eq!(status, 500);
    server.expect_log(
        "start_response() called again without exc_info",
        Duration::from_secs(5),
    );
}

#[test]
fn content_length_from_the_app_is_held_short_bodies_close_the_connection() {
    let dir = app_dir("length", &["wsgi_app.py"]);
    let server = start(&dir, "wsgi_app:app", &["-w", "1"], "", "");
    for path in ["/short", "/short_stream"] {
        // Keep-alive request: the connection must close after a short body, never
        // wait for the missing 90 bytes nor serve the next request on it.
        let response = exchange(
            &server.addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .as_bytes(),
        );
        let response = text(&response);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("content-length: 100"), "{response}");
        assert!(response.ends_with("only ten!\n"), "{path}: {response:?}");
        assert_eq!(response.matches("HTTP/1.1").count(), 1, "{response}");
    }
    server.expect_log("sent 10 of the 100 bytes", Duration::from_secs(5));
    // A longer body is cut at the app's length, and the connection goes on.
    for path in ["/long", "/long_stream"] {
        let response = exchange(
            &server.addr,
            format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\n\r\nGET /stream?n=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let response = text(&response);
        assert!(
            response.contains("content-length: 5\r\n"),
            "{path}: {response:?}"
        );
        assert!(
            response.contains("\r\n\r\n12345HTTP/1.1 200"),
            "{path}: {response:?}"
        );
        assert!(response.contains("chunk 0"), "{response:?}");
    }
}

#[test]
fn malformed_status_or_headers_and_raising_apps_are_500s_and_the_worker_lives() {
    let dir = app_dir("malformed", &["wsgi_app.py"]);
    let server = start(&dir, "wsgi_app:app", &["-w", "1"], "", "");
    let (_, _, body) = get(&server.addr, "/").unwrap();
    let pid = json(&body)["pid"].clone();
    for path in [
        "/bad_status",
        "/bad_status?status=2000%20OK",
        "/bad_status?status=200%0D%0AX:1",
        "/bad_status?status=100%20Continue",
        "/bad_header",
        "/bytes_header",
        "/boom",
        "/none",
    ] {
        let (status, head, body) = get(&server.addr, path).unwrap();
        assert_eq!(status, 500, "{path}: {head}\n{}", text(&body));
        assert!(!head.to_lowercase().contains("x-injected"), "{head}");
    }
    server.expect_log("does not start with a 3-digit code", Duration::from_secs(5));
    server.expect_log("contains a control character", Duration::from_secs(5));
    server.expect_log(
        "header names and values must be str",
        Duration::from_secs(5),
    );
    server.expect_log("ValueError: kaboom", Duration::from_secs(5));
    server.expect_log("before calling start_response()", Duration::from_secs(5));
    // Failing after the head: the response is cut, close() still called.
    let response = text(&exchange(
        &server.addr,
        b"GET /boom_late HTTP/1.1\r\nHost: t\r\n\r\n",
    ));
    assert!(
        response.starts_with("HTTP/1.1 200") && !response.ends_with("0\r\n\r\n"),
        "{response:?}"
    );
    server.expect_log("late kaboom", Duration::from_secs(5));
    let (status, _, body) = get(&server.addr, "/closed").unwrap();
    assert_eq!(status, 200);
    assert!(json(&body)["closed"].as_u64().unwrap() >= 1);
    let (status, _, body) = get(&server.addr, "/").unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["pid"], pid, "the same worker still serves");
}

#[test]
fn close_is_called_when_the_client_leaves_mid_stream() {
    use std::io::{BufRead, BufReader};
    let dir = app_dir("gone", &["wsgi_app.py"]);
    let server = start(&dir, "wsgi_app:app", &["-w", "1", "--threads", "2"], "", "");
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut seen = 0;
    while seen < 5 {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        if line.starts_with("data: tick") {
            seen += 1;
        }
    }
    drop(reader);
    let closed = poll_until(Duration::from_secs(10), || {
        get(&server.addr, "/closed")
            .ok()
            .is_some_and(|(_, _, body)| json(&body)["forever_closed"] == true)
    });
    assert!(closed, "close() was never called:\n{}", server.log());
    server.expect_log("client gone during GET /forever", Duration::from_secs(5));
    assert!(!server.log_contains("Traceback"), "{}", server.log());
}

#[test]
fn file_wrapper_sends_a_file_whole() {
    let dir = app_dir("file", &["wsgi_app.py"]);
    let file = dir.join("data.bin");
    let data: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let server = start(&dir, "wsgi_app:app", &["-w", "1"], "", "");
    let (status, _, body) = get(&server.addr, &format!("/file?name={}", file.display())).unwrap();
    assert_eq!(status, 200);
    let body = dechunk(&body);
    assert!(body == data, "{} bytes of {}", body.len(), data.len());
}

#[test]
fn a_pool_whose_threads_are_all_stuck_is_killed_at_timeout_and_replaced() {
    let dir = app_dir("stuck", &["wsgi_app.py"]);
    let server = start(
        &dir,
        "wsgi_app:app",
        &["-w", "1", "--threads", "2", "--timeout", "3"],
        "",
        "",
    );
    let (_, _, body) = get(&server.addr, "/").unwrap();
    let stuck_pid = json(&body)["pid"].as_i64().unwrap();
    // One thread stuck: the other still serves, and the idle pool keeps stamping.
    let addr = server.addr.clone();
    let first = std::thread::spawn(move || get(&addr, "/block?seconds=60"));
    std::thread::sleep(Duration::from_secs(5));
    let (status, _, body) = get(&server.addr, "/").unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["pid"].as_i64(), Some(stuck_pid));
    assert!(!server.log_contains("worker timeout"), "{}", server.log());
    // Both stuck: no progress, the master kills the worker, with the Python stacks.
    let addr = server.addr.clone();
    let second = std::thread::spawn(move || get(&addr, "/block?seconds=60"));
    server.expect_log("worker timeout", Duration::from_secs(20));
    server.expect_log("most recent call first", Duration::from_secs(5));
    assert!(server.log_contains("wsgi_app.py"), "{}", server.log());
    let replaced = poll_until(Duration::from_secs(20), || {
        get(&server.addr, "/")
            .ok()
            .is_some_and(|(status, _, body)| {
                status == 200 && json(&body)["pid"].as_i64() != Some(stuck_pid)
            })
    });
    assert!(replaced, "no new worker answered:\n{}", server.log());
    assert!(first.join().unwrap().is_err());
    assert!(second.join().unwrap().is_err());
}

#[test]
fn requests_beyond_the_pool_wait_and_are_counted_in_the_metrics() {
    let dir = app_dir("queue", &["wsgi_app.py"]);
    let server = start(
        &dir,
        "wsgi_app:app",
        &["-w", "1", "--threads", "2"],
        "[metrics]\nbind = \"127.0.0.1:0\"\n",
        "",
    );
    let metrics = metrics_addr(&server);
    let started = std::time::Instant::now();
    let sleepers: Vec<_> = (0..6)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || get(&addr, "/sleep?s=0.5").unwrap())
        })
        .collect();
    let mut threads = std::collections::HashSet::new();
    for sleeper in sleepers {
        let (status, _, body) = sleeper.join().unwrap();
        assert_eq!(status, 200);
        threads.insert(json(&body)["thread"].as_u64().unwrap());
    }
    // Two threads: six half-second requests take three rounds.
    assert_eq!(threads.len(), 2, "{threads:?}");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    let (_, _, body) = get(&metrics, "/metrics").unwrap();
    let body = text(&body);
    let queued: u64 = body
        .lines()
        .find(|l| l.starts_with("forkd_worker_wsgi_queued_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{body}"));
    assert!(queued >= 4, "{body}");
    assert!(body.contains("forkd_worker_wsgi_waiting{"), "{body}");
}

#[test]
fn hups_under_keepalive_load_with_new_wsgi_code_drop_nothing() {
    let dir = app_dir("hup", &["wsgi_app.py"]);
    let server = start(&dir, "wsgi_app:app", &["-w", "2", "--threads", "4"], "", "");
    let app = dir.join("wsgi_app.py");
    crate::python::hups_with_new_code_drop_nothing(&server, &app, 10, 32, "10 HUPs of a WSGI app");
}

#[test]
fn the_interface_is_told_from_the_app_or_said_in_the_config() {
    let dir = app_dir("interface", &["wsgi_app.py"]);
    // auto: a function, a callable object (WSGI), a coroutine function and a partial
    // of one (ASGI).
    for (app, expect) in [
        ("wsgi_app:app", "WSGI"),
        ("wsgi_app:wrapped", "WSGI"),
        ("wsgi_app:asgi_app", "ASGI"),
        ("wsgi_app:asgi_partial", "ASGI"),
    ] {
        let server = start(&dir, app, &["-w", "1"], "", "");
        let (status, _, body) = get(&server.addr, "/").unwrap();
        assert_eq!(status, 200, "{app}");
        if expect == "WSGI" {
            assert!(server.log_contains("serving a WSGI app"), "{app}");
            assert!(json(&body)["pid"].is_number());
        } else {
            assert!(!server.log_contains("serving a WSGI app"), "{app}");
            assert_eq!(text(&body), "asgi");
        }
    }
    // Said explicitly, and matching.
    let server = start(
        &dir,
        "wsgi_app:app",
        &["-w", "1"],
        "",
        "interface = \"wsgi\"\n",
    );
    assert_eq!(get(&server.addr, "/").unwrap().0, 200);
    drop(server);
    // Said explicitly, and not matching: the worker cannot boot, forkd exits 3.
    for (app, interface, says) in [
        ("wsgi_app:asgi_app", "wsgi", "is an ASGI app"),
        ("wsgi_app:app", "asgi", "is a WSGI app"),
    ] {
        let config = write_config(&dir, app, "", &format!("interface = \"{interface}\"\n"));
        let (code, stderr) = Forkd::program(python_forkd())
            .config(&config)
            .workers(1)
            .envs(ENV.iter().copied())
            .run_to_exit(Duration::from_secs(30));
        assert_eq!(code, Some(3), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

#[test]
fn recycling_hooks_access_log_logging_and_term_drain_work_as_for_asgi() {
    let dir = app_dir("shared-path", &["wsgi_app.py"]);
    let access = dir.join("access.log");
    let mut server = start(
        &dir,
        "wsgi_app:app",
        &["-w", "2", "--threads", "4", "--max-requests", "200"],
        &format!("[log]\naccess_log = {:?}\n", access.display().to_string()),
        "[python.hooks]\npost_fork = \"wsgi_app:post_fork\"\nworker_exit = \"wsgi_app:worker_exit\"\n",
    );
    server.expect_log("post_fork hook ran", Duration::from_secs(5));
    // Python logging from a pool thread: one record with its level and logger.
    assert_eq!(get(&server.addr, "/log").unwrap().0, 200);
    server.expect_log(
        "hello from logging in a pool thread",
        Duration::from_secs(5),
    );
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("hello from logging"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("WARN") && line.contains("logger=app.views"),
        "{line}"
    );
    // max_requests under keep-alive load: workers recycled, nothing dropped, and each
    // retiring worker runs its worker_exit hook.
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 16, stop.clone());
    let recycled = poll_until(Duration::from_secs(60), || {
        server.log().matches("reason=\"max_requests\"").count() >= 4
    });
    finish(stop, handles);
    assert!(recycled, "workers were not recycled:\n{}", server.log());
    assert_no_failures(&tally, &server, "max_requests recycling of WSGI workers");
    server.expect_log("worker_exit hook ran", Duration::from_secs(10));
    // The access log has the requests.
    let logged = poll_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&access)
            .is_ok_and(|text| text.contains("\"GET /log HTTP/1.1\" 200"))
    });
    assert!(logged, "{:?}", std::fs::read_to_string(&access));
    // TERM: the in-flight request finishes, then the worker_exit hook runs.
    let addr = server.addr.clone();
    let slow = std::thread::spawn(move || get(&addr, "/slow?s=1.5"));
    std::thread::sleep(Duration::from_millis(500));
    let exits_before = server.log().matches("worker_exit hook ran").count();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _, body) = slow
        .join()
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["slept"], 1.5);
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
    let log = server.log();
    let done = log.find("slow request done").expect("the request finished");
    let exit = log.rfind("worker_exit hook ran").unwrap();
    assert!(done < exit, "{log}");
    assert!(
        log.matches("worker_exit hook ran").count() >= exits_before + 2,
        "{log}"
    );
}

#[test]
fn usr2_starts_a_new_master_serving_the_wsgi_app_dropping_nothing() {
    let dir = app_dir("usr2", &["wsgi_app.py"]);
    let pidfile = dir.join("forkd.pid");
    let server = start(
        &dir,
        "wsgi_app:app",
        &["-w", "2", "--threads", "4", "-p", pidfile.to_str().unwrap()],
        "",
        "",
    );
    let old = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 32, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    let moved = poll_until(Duration::from_secs(30), || {
        read_pid(&pidfile).is_some_and(|p| p != old)
    });
    let new_pid = read_pid(&pidfile).unwrap_or(0);
    let _new_master = PidGuard(new_pid);
    let mut server = server;
    let old_gone = poll_until(Duration::from_secs(30), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    assert!(moved, "the pidfile did not move:\n{}", server.log());
    assert!(old_gone, "the old master did not exit:\n{}", server.log());
    assert_eq!(workers_of(new_pid).len(), 2, "{}", server.log());
    assert_no_failures(&tally, &server, "USR2 with a WSGI app");
}

#[test]
fn https_requests_reach_a_wsgi_app_with_the_https_scheme() {
    let pki = crate::tls::Pki::serving_localhost("wsgi");
    let dir = app_dir("tls", &["wsgi_app.py"]);
    let server = Forkd::program(python_forkd())
        .config(write_config(&dir, "wsgi_app:app", "", ""))
        .args(["-w", "1", "-b", "tls://127.0.0.1:0"])
        .envs(ENV.iter().copied())
        .envs(pki.env())
        .start();
    let client = pki.client(&[b"http/1.1"], None);
    let (status, body, _) = crate::tls::https_get(&server.addr, &client, "/environ").unwrap();
    assert_eq!(status, 200, "{body}");
    let environ: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(environ["wsgi.url_scheme"], "https");
    assert_eq!(environ["SERVER_NAME"], "localhost");
    assert_eq!(environ["SERVER_PORT"], "443");
    assert_eq!(environ["HTTP_HOST"], "localhost");
}

#[test]
fn an_unread_body_whose_environ_outlives_the_response_does_not_stall_keepalive() {
    let dir = app_dir("unread", &["wsgi_app.py"]);
    let server = start(&dir, "wsgi_app:app", &["-w", "1"], "", "");
    let size = 4 * 1024 * 1024;
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw =
        format!("POST /keep HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n").into_bytes();
    raw.resize(raw.len() + size, b'z');
    raw.extend_from_slice(b"GET /stream?n=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&raw))
    };
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    writer.join().unwrap().unwrap();
    let response = text(&response);
    assert!(response.contains("{\"kept\": 1}"), "{response}");
    assert!(
        response.contains("chunk 0"),
        "the next request was not served: {response}"
    );
}

#[test]
fn a_preloaded_flask_app_forks_from_its_zygote_and_reloads_with_worker_int_at_a_quick_stop() {
    let dir = app_dir("flask-preload", &["flask_app.py"]);
    std::fs::write(
        dir.join("hooks.py"),
        "import os\n\n\ndef worker_int(worker):\n    open(os.path.join(os.path.dirname(__file__), \"int-%d\" % worker.pid), \"w\").close()\n",
    )
    .unwrap();
    let mut server = start(
        &dir,
        "flask_app:app",
        &["-w", "2", "--threads", "2"],
        "preload_app = true",
        "[python.hooks]\nworker_int = \"hooks:worker_int\"",
    );
    let (status, _, body) = get(&server.addr, "/").unwrap();
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(json(&body)["framework"], "flask");
    let log = server.log();
    assert!(log.contains("zygote ready"), "{log}");
    assert!(log.contains("serving a WSGI app from 2 threads"), "{log}");
    // A HUP: a new zygote imports the app again, new workers fork from it.
    let before = workers_of(server.pid());
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(30), || {
            let now = workers_of(server.pid());
            now.len() == 2 && now.iter().all(|w| !before.contains(w))
        }),
        "the workers were not replaced:\n{}",
        server.log()
    );
    assert_eq!(get(&server.addr, "/").unwrap().0, 200);
    assert_eq!(
        server.log().matches("zygote ready").count(),
        2,
        "{}",
        server.log()
    );
    // worker_int in each WSGI worker at a quick stop.
    let mut workers = workers_of(server.pid());
    workers.sort();
    server.signal(nix::sys::signal::Signal::SIGQUIT);
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        server.log()
    );
    let mut ran: Vec<i32> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("int-")?.parse().ok())
        .collect();
    ran.sort();
    assert_eq!(ran, workers, "{}", server.log());
}
