//! Python ASGI apps in forkd's own workers: the `forkd` command of the Python package,
//! serving the FastAPI app of tests/python/fastapi_app.py.
//!
//! The tests need a virtualenv with FastAPI and forkd's Python package installed;
//! `scripts/test-deps.sh` makes it at `target/pyenv-test` (or point `PYTHON_TEST_VENV`
//! at another one). Without it these tests fail, saying so: they never skip.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// The `forkd` command the Python package installed into the test virtualenv.
pub(crate) fn python_forkd() -> PathBuf {
    let venv = std::env::var_os("PYTHON_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv-test"));
    let forkd = venv.join("bin/forkd");
    assert!(
        forkd.exists(),
        "no Python test environment: {} does not exist. Run scripts/test-deps.sh, which makes \
         a virtualenv at target/pyenv-test with FastAPI and forkd's Python package \
         (or set PYTHON_TEST_VENV to one)",
        forkd.display()
    );
    forkd
}

/// A fresh directory holding the test app (the HUP test edits its copy).
pub(crate) fn app_dir(name: &str) -> PathBuf {
    let dir = temp_dir(&format!("py-{name}"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/fastapi_app.py");
    std::fs::copy(source, dir.join("fastapi_app.py")).expect("copy the test app");
    dir
}

/// A config file in `dir` serving the app from `dir` (`[python] path`).
fn config(dir: &Path, extra: &str) -> PathBuf {
    config_with_python(dir, extra, "")
}

/// [`config`] with more `[python]` keys (`python_extra`).
fn config_with_python(dir: &Path, extra: &str, python_extra: &str) -> PathBuf {
    let path = dir.join("forkd.toml");
    let text = format!(
        "bind = [\"127.0.0.1:0\"]\napp = \"fastapi_app:app\"\n{extra}\n[python]\npath = [{:?}]\n{python_extra}\n",
        dir.display().to_string()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Environment for the Python workers: no .pyc files, so that an edit of the app is
/// always seen on the next import (the HUP test rewrites it within a second).
pub(crate) const ENV: &[(&str, &str)] = &[("PYTHONDONTWRITEBYTECODE", "1")];

fn start(dir: &Path, args: &[&str], extra_config: &str) -> Server {
    start_with_python(dir, args, extra_config, "")
}

fn start_with_python(dir: &Path, args: &[&str], extra_config: &str, python: &str) -> Server {
    Forkd::program(python_forkd())
        .config(config_with_python(dir, extra_config, python))
        .args(args)
        .envs(ENV.iter().copied())
        .start()
}

#[test]
fn a_build_without_python_support_exits_2_saying_how_to_get_it() {
    let (code, stderr) = Forkd::new()
        .local()
        .app("fastapi_app:app")
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("without Python support") && stderr.contains("pip install"),
        "{stderr}"
    );
}

#[test]
fn fastapi_json_path_query_post_stream_state_and_scope() {
    let dir = app_dir("json");
    let server = start(&dir, &["-w", "1"], "[env]\nAPP_ENV = \"staging\"\n");
    let log = server.log();
    assert!(
        log.contains("python 3.") && log.contains("loading fastapi_app:app"),
        "the worker names its interpreter:\n{log}"
    );

    let (status, _, body) = get(&server.addr, "/items/42?q=hello%20there").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        serde_json::json!({"item_id": 42, "q": "hello there"})
    );

    let payload = r#"{"name":"widget","tags":["a","b"],"price":1.5}"#;
    let (status, _, body) = request(
        &server.addr,
        &format!(
            "POST /items HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            payload.len()
        ),
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        json(&body),
        serde_json::json!({"received": {"name": "widget", "tags": ["a", "b"], "price": 1.5}})
    );

    let (status, head, body) = get(&server.addr, "/stream").unwrap();
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "a streamed response is chunked: {head}"
    );
    let text = String::from_utf8_lossy(&body);
    for i in 0..5 {
        assert!(text.contains(&format!("chunk {i}\n")), "{text}");
    }

    let (status, _, body) = get(&server.addr, "/state").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        serde_json::json!({"greeting": "hello from lifespan"})
    );

    // `[env]` reaches os.environ.
    let (_, _, body) = get(&server.addr, "/env").unwrap();
    assert_eq!(json(&body)["APP_ENV"], "staging");

    let (status, _, body) = request(
        &server.addr,
        "GET /scope/caf%C3%A9%20x?a=1&b=%20 HTTP/1.1\r\nHost: test\r\nX-Dup: one\r\nX-Dup: two\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 200);
    let scope = json(&body);
    assert_eq!(scope["type"], "http");
    assert_eq!(scope["asgi"]["version"], "3.0");
    assert_eq!(scope["asgi"]["spec_version"], "2.4");
    assert_eq!(scope["http_version"], "1.1");
    assert_eq!(scope["method"], "GET");
    assert_eq!(scope["scheme"], "http");
    assert_eq!(scope["path"], "/scope/café x");
    assert_eq!(scope["raw_path"], "/scope/caf%C3%A9%20x");
    assert_eq!(scope["query_string"], "a=1&b=%20");
    assert_eq!(scope["root_path"], "");
    let headers = scope["headers"].as_array().unwrap();
    let dups: Vec<&str> = headers
        .iter()
        .filter(|h| h[0] == "x-dup")
        .map(|h| h[1].as_str().unwrap())
        .collect();
    assert_eq!(dups, ["one", "two"], "{headers:?}");
    assert!(headers.iter().any(|h| h[0] == "host" && h[1] == "test"));
    assert_eq!(scope["client"][0], "127.0.0.1");
    assert!(scope["client"][1].as_u64().unwrap() > 0);
    let port: u64 = server.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(scope["server"], serde_json::json!(["127.0.0.1", port]));

    // https behind a trusted proxy (127.0.0.1 is trusted by default).
    let (_, _, body) = request(
        &server.addr,
        "GET /scope/x HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let scope = json(&body);
    assert_eq!(scope["scheme"], "https");
    assert_eq!(scope["client"][0], "203.0.113.7");
}

#[test]
fn an_exception_is_a_500_with_the_traceback_logged_and_the_worker_lives() {
    let dir = app_dir("boom");
    let server = start(&dir, &["-w", "1"], "");
    let (_, _, body) = get(&server.addr, "/").unwrap();
    let pid = json(&body)["pid"].clone();
    let (status, _, _) = get(&server.addr, "/boom").unwrap();
    assert_eq!(status, 500);
    server.expect_log("ValueError: kaboom", Duration::from_secs(5));
    assert!(server.log_contains("Traceback (most recent call last)"));
    let (status, _, body) = get(&server.addr, "/").unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["pid"], pid, "the same worker still serves");

    // print() and logging reach the error log, one line each, with the worker's pid.
    let (status, _, _) = get(&server.addr, "/print").unwrap();
    assert_eq!(status, 200);
    server.expect_log("hello from print", Duration::from_secs(5));
    server.expect_log("hello from logging", Duration::from_secs(5));
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("hello from print"))
        .unwrap()
        .to_string();
    assert!(line.contains(&format!("pid={pid}")), "{line}");
}

#[test]
fn a_raising_lifespan_startup_exits_3_with_its_message() {
    let dir = app_dir("startup");
    let config = config(&dir, "");
    let (code, stderr) = Forkd::program(python_forkd())
        .config(&config)
        .workers(2)
        .envs(ENV.iter().copied())
        .env("APP_FAIL_STARTUP", "1")
        .run_to_exit(Duration::from_secs(30));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("no worker could boot") && stderr.contains("database is down"),
        "{stderr}"
    );
}

/// `rounds` HUPs of a two-worker `server` under `connections` keep-alive connections,
/// the app file `app` rewritten before each with the next `VERSION = N` (2, 3, ...):
/// each HUP's new code must answer, every old worker must be retired for "reload", and
/// no request may fail (`what` names the run in the failure).
pub(crate) fn hups_with_new_code_drop_nothing(
    server: &Server,
    app: &Path,
    rounds: u64,
    connections: usize,
    what: &str,
) {
    let original = std::fs::read_to_string(app).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, connections, stop.clone());
    for round in 1..=rounds {
        let version = round + 1;
        std::fs::write(
            app,
            original.replace("VERSION = 1\n", &format!("VERSION = {version}\n")),
        )
        .unwrap();
        server.signal(nix::sys::signal::Signal::SIGHUP);
        server.expect_log(&format!("generation={version}"), Duration::from_secs(20));
        // The new code answers once a new worker is ready.
        let answered = poll_until(Duration::from_secs(20), || {
            get(&server.addr, "/")
                .ok()
                .is_some_and(|(_, _, body)| json(&body)["version"] == version)
        });
        assert!(
            answered,
            "version {version} never answered:\n{}",
            server.log()
        );
    }
    let settled = poll_until(Duration::from_secs(30), || {
        workers_of(server.pid()).len() == 2
            && server.log().matches("reason=\"reload\"").count() >= 2 * rounds as usize
    });
    finish(stop, handles);
    assert!(
        settled,
        "workers did not settle at 2: {:?}\n{}",
        workers_of(server.pid()),
        server.log()
    );
    assert_no_failures(&tally, server, what);
}

#[test]
fn twenty_hups_with_new_app_code_under_keepalive_load_drop_nothing() {
    let dir = app_dir("hup");
    let server = start(&dir, &["-w", "2"], "");
    let app = dir.join("fastapi_app.py");
    hups_with_new_code_drop_nothing(&server, &app, 20, 64, "20 HUPs of a FastAPI app");
    // Only the new code answers now.
    for _ in 0..10 {
        let (_, _, body) = get(&server.addr, "/").unwrap();
        assert_eq!(json(&body)["version"], 21);
    }
}

#[test]
fn a_handler_blocking_the_event_loop_is_killed_at_timeout_and_replaced() {
    let dir = app_dir("block");
    let server = start(&dir, &["-w", "1", "--timeout", "2"], "");
    let (_, _, body) = get(&server.addr, "/").unwrap();
    let blocked_pid = json(&body)["pid"].as_i64().unwrap();
    // time.sleep(60) in an async handler: the loop stops stamping progress, although
    // the worker's tokio thread is fine.
    let addr = server.addr.clone();
    let blocked = std::thread::spawn(move || get(&addr, "/block?seconds=60"));
    server.expect_log("worker timeout", Duration::from_secs(15));
    // faulthandler's dump of every thread, written before the abort: the handler
    // blocked in time.sleep is named, in the app's file.
    server.expect_log("in block", Duration::from_secs(5));
    let log = server.log();
    assert!(
        log.contains("fastapi_app.py") && log.contains("most recent call first"),
        "{log}"
    );
    let replaced = poll_until(Duration::from_secs(20), || {
        get(&server.addr, "/")
            .ok()
            .is_some_and(|(status, _, body)| {
                status == 200 && json(&body)["pid"].as_i64() != Some(blocked_pid)
            })
    });
    assert!(replaced, "no new worker answered:\n{}", server.log());
    // The blocked request's connection ended with its worker.
    assert!(blocked.join().unwrap().is_err());
}

#[test]
fn a_200_mib_upload_is_streamed_to_the_app_in_bounded_memory() {
    use std::io::{Read, Write};
    let dir = app_dir("upload");
    let server = start(&dir, &["-w", "1"], "[limits]\nmax_body = \"300MiB\"\n");
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
    let head = String::from_utf8_lossy(&response[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let counted = json(&response[split + 4..]);
    assert_eq!(counted["bytes"].as_u64(), Some(size as u64));
    let peak_kib = counted["peak_rss_kib"].as_u64().unwrap();
    assert!(
        peak_kib < 64 * 1024,
        "the worker's RSS reached {peak_kib} KiB while reading the upload"
    );
}

#[test]
fn term_refuses_new_connections_drains_in_flight_requests_then_runs_the_lifespan_shutdown() {
    let dir = app_dir("drain");
    let mut server = start(&dir, &["-w", "1"], "");
    let addr = server.addr.clone();
    let slow = std::thread::spawn(move || get(&addr, "/slow?seconds=3"));
    std::thread::sleep(Duration::from_millis(500));
    server.signal(nix::sys::signal::Signal::SIGTERM);
    // A connection attempt after TERM is refused at once (as Gunicorn's), while the
    // request in flight goes on (shutdown_delay is 0 here).
    let term = std::time::Instant::now();
    let refused = poll_until(Duration::from_secs(3), || {
        matches!(
            std::net::TcpStream::connect(&server.addr),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    });
    assert!(
        refused,
        "new connections were not refused after TERM:\n{}",
        server.log()
    );
    assert!(
        term.elapsed() < Duration::from_secs(2),
        "refused only after the drain ({:?})",
        term.elapsed()
    );
    let (status, _, body) = slow
        .join()
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["slept"], 3.0);
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
    let log = server.log();
    let done = log.find("slow request done").expect("the request finished");
    let shutdown = log.find("lifespan shutdown ran").expect("the shutdown ran");
    assert!(done < shutdown, "shutdown before the drain ended:\n{log}");
}

#[test]
fn max_requests_recycling_of_python_workers_under_keepalive_load_drops_nothing() {
    let dir = app_dir("recycle");
    let server = start(
        &dir,
        &[
            "-w",
            "2",
            "--max-requests",
            "500",
            "--max-requests-jitter",
            "100",
        ],
        "",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    let recycled = poll_until(Duration::from_secs(60), || {
        server.log().matches("reason=\"max_requests\"").count() >= 6
    });
    finish(stop, handles);
    assert!(recycled, "workers were not recycled:\n{}", server.log());
    assert_no_failures(&tally, &server, "max_requests recycling of FastAPI workers");
}

#[test]
fn max_worker_memory_recycles_a_python_worker_that_allocates_dropping_nothing() {
    let dir = app_dir("memory");
    let server = start(&dir, &["-w", "2"], "max_worker_memory = \"96MiB\"\n");
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, mut handles) = load(&server.addr, 64, stop.clone());
    // Grows the workers' RSS: 4 MiB kept per request.
    handles.push(leak_requests(
        &server.addr,
        "/leak?kb=4096",
        stop.clone(),
        tally.clone(),
    ));
    let recycled = poll_until(Duration::from_secs(60), || {
        server
            .log()
            .lines()
            .filter(|l| l.contains("worker exited") && l.contains("reason=\"max_worker_memory\""))
            .count()
            >= 2
    });
    finish(stop, handles);
    assert!(recycled, "workers were not recycled:\n{}", server.log());
    assert_no_failures(
        &tally,
        &server,
        "max_worker_memory recycling of FastAPI workers",
    );
}

#[test]
fn usr2_starts_a_new_python_master_under_keepalive_load_dropping_nothing() {
    let dir = app_dir("usr2");
    let pidfile = dir.join("forkd.pid");
    let server = start(&dir, &["-w", "2", "-p", pidfile.to_str().unwrap()], "");
    let old = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    let moved = poll_until(Duration::from_secs(30), || {
        read_pid(&pidfile).is_some_and(|p| p != old)
    });
    let new_pid = read_pid(&pidfile).unwrap_or(0);
    // Stops the new master (not our child) whatever happens below.
    let _new_master = PidGuard(new_pid);
    let mut server = server;
    let old_gone = poll_until(Duration::from_secs(30), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    let new_workers = workers_of(new_pid);
    assert!(moved, "the pidfile did not move:\n{}", server.log());
    assert!(old_gone, "the old master did not exit:\n{}", server.log());
    assert_eq!(new_workers.len(), 2, "{}", server.log());
    assert_no_failures(&tally, &server, "USR2 of the Python package's forkd");
}

#[test]
fn a_syntax_error_in_the_app_on_hup_leaves_the_old_workers_serving() {
    let dir = app_dir("syntax");
    let server = start(&dir, &["-w", "2"], "");
    let app = dir.join("fastapi_app.py");
    let original = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{original}\ndef broken(:\n")).unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.expect_log("SyntaxError", Duration::from_secs(20));
    server.expect_log("worker failed to boot", Duration::from_secs(20));
    for _ in 0..20 {
        let (status, _, body) = get(&server.addr, "/").unwrap();
        assert_eq!(status, 200);
        assert_eq!(json(&body)["version"], 1);
    }
    // Fixed code on the next HUP goes live.
    std::fs::write(&app, original.replace("VERSION = 1\n", "VERSION = 3\n")).unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    let fixed = poll_until(Duration::from_secs(30), || {
        get(&server.addr, "/")
            .ok()
            .is_some_and(|(_, _, body)| json(&body)["version"] == 3)
    });
    assert!(fixed, "the fixed code never answered:\n{}", server.log());
}

#[test]
fn a_streamed_response_stops_when_the_client_goes_away() {
    use std::io::{BufRead, BufReader, Write};
    let dir = app_dir("gone");
    let server = start(&dir, &["-w", "1"], "");
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut seen = String::new();
    while !seen.contains("data: tick") {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    drop(reader);
    // `send` raised OSError in the app once the client was gone: the stream ended.
    let closed = poll_until(Duration::from_secs(10), || {
        get(&server.addr, "/forever/closed")
            .ok()
            .is_some_and(|(_, _, body)| json(&body)["closed"] == true)
    });
    assert!(closed, "the app's stream never ended:\n{}", server.log());
    server.expect_log("client gone during GET /forever", Duration::from_secs(5));
    assert!(!server.log_contains("Traceback"), "{}", server.log());
}

/// A client WebSocket frame (masked, as RFC 6455 requires of clients).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads one server frame: (opcode, payload).
fn server_frame(stream: &mut impl std::io::Read) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).expect("a frame");
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext).unwrap();
            u16::from_be_bytes(ext) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).unwrap();
    (head[0] & 0x0f, payload)
}

/// Opens a WebSocket to `/ws` (the handshake response is read and checked).
fn open_websocket(addr: &str) -> std::net::TcpStream {
    open_websocket_at(addr, "/ws")
}

fn open_websocket_at(addr: &str, path: &str) -> std::net::TcpStream {
    let (stream, head) = websocket_handshake(addr, path);
    assert!(head.starts_with("http/1.1 101"), "{head}");
    stream
}

/// Sends the upgrade request with RFC 6455's example key and reads the response head,
/// lowercased; the caller asserts what it expects of it.
fn websocket_handshake(addr: &str, path: &str) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .expect("the handshake response");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    (stream, head)
}

#[test]
fn a_fastapi_websocket_echoes_and_closes() {
    use std::io::Write;
    let dir = app_dir("ws");
    let server = start(&dir, &["-w", "1"], "");
    let (mut stream, head) = websocket_handshake(&server.addr, "/ws");
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // RFC 6455's own example key and answer.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    for word in ["one", "two"] {
        stream
            .write_all(&client_frame(0x1, word.as_bytes()))
            .unwrap();
        let (opcode, payload) = server_frame(&mut stream);
        assert_eq!(opcode, 0x1);
        assert_eq!(
            String::from_utf8_lossy(&payload),
            format!("echo: {word} (hello from lifespan)")
        );
    }
    // The app closes with its own code.
    stream.write_all(&client_frame(0x1, b"bye")).unwrap();
    let (opcode, payload) = server_frame(&mut stream);
    assert_eq!(opcode, 0x8, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4000);

    // A client that closes: the app sees WebSocketDisconnect with its code.
    let (mut stream, _head) = websocket_handshake(&server.addr, "/ws");
    stream
        .write_all(&client_frame(0x8, &1001u16.to_be_bytes()))
        .unwrap();
    server.expect_log(
        "websocket closed by the client with code 1001",
        Duration::from_secs(10),
    );
    // The worker still serves HTTP.
    let (status, _, _) = get(&server.addr, "/").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn a_draining_worker_keeps_websockets_open_then_closes_them_with_1001() {
    use std::io::Write;
    let dir = app_dir("ws-drain");
    // A websocket_grace past graceful_timeout: no 1012, the drain's own 1001 at its end.
    let mut server = start_with_python(
        &dir,
        &["-w", "1", "--graceful-timeout", "3"],
        "",
        "websocket_grace = 30",
    );
    let mut stream = open_websocket(&server.addr);
    let started = std::time::Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    // Still open while the worker drains.
    stream.write_all(&client_frame(0x1, b"draining")).unwrap();
    let (opcode, payload) = server_frame(&mut stream);
    assert_eq!(opcode, 0x1);
    assert!(String::from_utf8_lossy(&payload).starts_with("echo: draining"));
    // Then "going away", before the master's SIGKILL at graceful_timeout.
    let (opcode, payload) = server_frame(&mut stream);
    assert_eq!(opcode, 0x8, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_secs(2) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        server.log_contains("websocket closed by the client with code 1001")
            || server.log_contains("exited (exit code 0)"),
        "{}",
        server.log()
    );
}

#[test]
fn a_100_mib_streamed_download_is_sent_under_backpressure() {
    use std::io::{Read, Write};
    let dir = app_dir("download");
    let server = start(&dir, &["-w", "1"], "");
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(b"GET /download?mb=100 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Read slowly at first: the app must wait for the socket, not buffer the stream.
    let mut first = vec![0u8; 1024 * 1024];
    stream.read_exact(&mut first).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (_, _, body) = get(&server.addr, "/rss").unwrap();
    let rss_kib = json(&body)["rss_kib"].as_u64().unwrap();
    assert!(
        rss_kib < 64 * 1024,
        "the worker holds {rss_kib} KiB while its client is slow"
    );
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let split = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&first[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Chunked framing adds a little; the payload is 100 MiB of 'z'.
    let total = first.len() - split - 4 + rest.len();
    assert!(total >= 100 * 1024 * 1024, "{total} bytes");
    let z = rest.iter().filter(|b| **b == b'z').count()
        + first[split + 4..].iter().filter(|b| **b == b'z').count();
    assert_eq!(z, 100 * 1024 * 1024);
}

#[test]
fn root_path_and_lifespan_off_are_applied() {
    let dir = app_dir("root-path");
    // `config` ends with the [python] table: these keys land in it.
    let config_path = config(&dir, "");
    let mut text = std::fs::read_to_string(&config_path).unwrap();
    text.push_str("root_path = \"/api\"\nlifespan = \"off\"\n");
    std::fs::write(&config_path, text).unwrap();
    let server = Forkd::program(python_forkd())
        .config(&config_path)
        .workers(1)
        .envs(ENV.iter().copied())
        .start();
    let (status, _, body) = get(&server.addr, "/scope/x").unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let scope = json(&body);
    assert_eq!(scope["root_path"], "/api");
    assert_eq!(scope["path"], "/api/scope/x");
    // No lifespan: no state.
    let (status, _, _) = get(&server.addr, "/state").unwrap();
    assert_eq!(status, 500);
    assert!(!server.log_contains("lifespan shutdown ran"));
}

#[test]
fn http2_requests_reach_the_app_with_a_host_header() {
    use http_body_util::BodyExt;
    let dir = app_dir("h2");
    let server = start(&dir, &["-w", "1"], "");
    let addr = server.addr.clone();
    let runtime = runtime();
    let body = runtime.block_on(async move {
        let mut sender = h2_client(&addr).await;
        let req = hyper::Request::get(format!("http://{addr}/scope/h2?x=1"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    });
    let scope = json(&body);
    assert_eq!(scope["http_version"], "2");
    assert_eq!(scope["query_string"], "x=1");
    let headers = scope["headers"].as_array().unwrap();
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "host" && h[1] == server.addr.as_str()),
        "{headers:?}"
    );
}

#[test]
fn a_websocket_app_sending_to_a_slow_client_waits_instead_of_buffering() {
    let dir = app_dir("ws-flood");
    // A short timeout: sending must not starve the event loop's progress stamps.
    let server = start(&dir, &["-w", "1", "--timeout", "3"], "");
    let mut stream = open_websocket_at(&server.addr, "/ws-flood");
    // 120 MB on their way; the client reads nothing for a while.
    std::thread::sleep(Duration::from_millis(1000));
    let (_, _, body) = get(&server.addr, "/rss").unwrap();
    let rss_kib = json(&body)["rss_kib"].as_u64().unwrap();
    assert!(
        rss_kib < 64 * 1024,
        "the worker holds {rss_kib} KiB for its slow WebSocket client"
    );
    let mut received = 0;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    loop {
        let (opcode, payload) = server_frame(&mut stream);
        if opcode == 0x8 {
            break;
        }
        assert_eq!(opcode, 0x2);
        assert_eq!(payload.len(), 60000);
        received += 1;
    }
    assert_eq!(received, 2000);
    assert!(!server.log_contains("worker timeout"), "{}", server.log());
}

#[test]
fn a_websocket_client_sending_faster_than_the_app_receives_is_held_back_not_buffered() {
    use std::io::Write;
    let dir = app_dir("ws-deaf");
    let server = start(&dir, &["-w", "1"], "");
    let (_, _, body) = get(&server.addr, "/rss").unwrap();
    let before_kib = json(&body)["rss_kib"].as_u64().unwrap();
    let mut stream = open_websocket_at(&server.addr, "/ws-deaf");
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Up to 256 MiB in 256 KiB messages the app never receives: once 32 wait for it,
    // forkd stops reading, the socket buffers fill and the writes time out.
    let frame = client_frame(0x2, &vec![b'x'; 256 * 1024]);
    let mut sent = 0usize;
    while sent < 1024 {
        if stream.write_all(&frame).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent < 1024, "all {sent} messages were taken in");
    let (_, _, body) = get(&server.addr, "/rss").unwrap();
    let after_kib = json(&body)["rss_kib"].as_u64().unwrap();
    assert!(
        after_kib < before_kib + 48 * 1024,
        "the worker grew from {before_kib} to {after_kib} KiB for {sent} unreceived messages"
    );
}

/// The error log's lines that contain `needle`.
fn log_lines(server: &Server, needle: &str) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn python_logging_records_arrive_with_their_level_logger_and_one_traceback() {
    let dir = app_dir("logging");
    let server = start(&dir, &["-w", "1"], "[log]\nlevel = \"info\"");
    let (status, _, _) = get(&server.addr, "/log").unwrap();
    assert_eq!(status, 200);
    server.expect_log("caught from app.db", Duration::from_secs(5));
    for (message, level) in [
        ("info from app.db", "INFO"),
        ("warning from app.db", "WARN"),
        ("error from app.db", "ERROR"),
        ("critical from app.db", "ERROR"),
        ("caught from app.db", "ERROR"),
        // Not UTF-8 (a lone surrogate): a backslash escape, doubled as forkd's escaping does.
        ("surrogate \\\\udcff from app.db", "WARN"),
    ] {
        let lines = log_lines(&server, message);
        assert_eq!(lines.len(), 1, "{message}: {lines:?}");
        assert!(
            lines[0].contains(&format!(" {level} ")) && lines[0].contains("logger=app.db"),
            "{}",
            lines[0]
        );
    }
    // Below log.level: not written (and not formatted: the root logger's level).
    assert!(!server.log_contains("debug from app.db"));
    // logger.exception: the traceback inside the one record, its newlines as \n.
    let caught = &log_lines(&server, "caught from app.db")[0];
    assert!(
        caught.contains("exc_info=\"Traceback (most recent call last):\\n")
            && caught.contains("KeyError: 'missing'"),
        "{caught}"
    );

    // An unhandled exception in a route: one error record, traceback included.
    let (status, _, _) = get(&server.addr, "/boom").unwrap();
    assert_eq!(status, 500);
    server.expect_log("ValueError: kaboom", Duration::from_secs(5));
    let lines = log_lines(&server, "kaboom");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(" ERROR ")
            && lines[0].contains("logger=forkd.asgi")
            && lines[0].contains("Exception in ASGI application (GET /boom)")
            && lines[0].contains("in boom\\n"),
        "{}",
        lines[0]
    );
    assert_eq!(log_lines(&server, "Traceback").len(), 2, "{}", server.log());
}

#[test]
fn python_logging_in_json_is_one_object_per_record_with_the_traceback_a_field() {
    let dir = app_dir("logging-json");
    let server = start(
        &dir,
        &["-w", "1"],
        "[log]\nlevel = \"debug\"\nformat = \"json\"",
    );
    let (status, _, _) = get(&server.addr, "/log").unwrap();
    assert_eq!(status, 200);
    let (status, _, _) = get(&server.addr, "/boom").unwrap();
    assert_eq!(status, 500);
    server.expect_log("kaboom", Duration::from_secs(5));
    server.expect_log("caught from app.db", Duration::from_secs(5));
    let records: Vec<serde_json::Value> = server
        .log()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let find = |message: &str| -> Vec<&serde_json::Value> {
        records
            .iter()
            .filter(|r| {
                r["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(message))
            })
            .collect()
    };
    for (message, level) in [
        ("debug from app.db", "DEBUG"),
        ("info from app.db", "INFO"),
        ("warning from app.db", "WARN"),
        ("critical from app.db", "ERROR"),
    ] {
        let found = find(message);
        assert_eq!(found.len(), 1, "{message}");
        assert_eq!(found[0]["level"], level, "{}", found[0]);
        assert_eq!(found[0]["fields"]["logger"], "app.db", "{}", found[0]);
    }
    let boom = find("Exception in ASGI application");
    assert_eq!(boom.len(), 1);
    assert_eq!(boom[0]["level"], "ERROR");
    assert_eq!(boom[0]["fields"]["logger"], "forkd.asgi");
    let trace = boom[0]["fields"]["exc_info"].as_str().unwrap();
    assert!(
        trace.starts_with("Traceback (most recent call last):\n")
            && trace.ends_with("ValueError: kaboom"),
        "{trace}"
    );
}

#[test]
fn log_config_from_a_json_file_sets_a_loggers_level() {
    let dir = app_dir("log-config");
    std::fs::write(
        dir.join("logging.json"),
        r#"{"version": 1, "disable_existing_loggers": false,
            "loggers": {"app.db": {"level": "ERROR"}}}"#,
    )
    .unwrap();
    let python = format!(
        "log_config = {:?}",
        dir.join("logging.json").display().to_string()
    );
    let server = start_with_python(&dir, &["-w", "1"], "", &python);
    let (status, _, _) = get(&server.addr, "/log").unwrap();
    assert_eq!(status, 200);
    server.expect_log("caught from app.db", Duration::from_secs(5));
    assert!(server.log_contains("error from app.db"));
    assert!(
        !server.log_contains("warning from app.db"),
        "{}",
        server.log()
    );
    assert!(!server.log_contains("info from app.db"));

    // A log_config that dictConfig refuses: a boot failure saying why.
    let bad = app_dir("log-config-bad");
    std::fs::write(
        bad.join("logging.json"),
        r#"{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}"#,
    )
    .unwrap();
    let python = format!(
        "log_config = {:?}",
        bad.join("logging.json").display().to_string()
    );
    let (code, stderr) = Forkd::program(python_forkd())
        .config(config_with_python(&bad, "", &python))
        .workers(1)
        .envs(ENV.iter().copied())
        .run_to_exit(Duration::from_secs(30));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("log_config")
            && stderr.contains("dictConfig failed")
            && stderr.contains("no.such"),
        "{stderr}"
    );
}

#[test]
fn log_config_from_a_module_attribute_is_applied_and_a_missing_one_fails_the_boot() {
    let dir = app_dir("log-config-module");
    std::fs::write(
        dir.join("logsettings.py"),
        "LOGGING = {'version': 1, 'disable_existing_loggers': False,\n\
         'loggers': {'app.db': {'level': 'CRITICAL'}}}\n",
    )
    .unwrap();
    let server = start_with_python(
        &dir,
        &["-w", "1"],
        "",
        "log_config = \"logsettings:LOGGING\"",
    );
    let (status, _, _) = get(&server.addr, "/log").unwrap();
    assert_eq!(status, 200);
    server.expect_log("critical from app.db", Duration::from_secs(5));
    assert!(
        !server.log_contains("error from app.db"),
        "{}",
        server.log()
    );
    drop(server);

    let (code, stderr) = Forkd::program(python_forkd())
        .config(config_with_python(
            &dir,
            "",
            "log_config = \"logsettings:MISSING\"",
        ))
        .workers(1)
        .envs(ENV.iter().copied())
        .run_to_exit(Duration::from_secs(30));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("log_config: module 'logsettings' has no attribute 'MISSING'"),
        "{stderr}"
    );
}

#[test]
fn a_websocket_across_a_hup_is_closed_with_1012_at_once() {
    let dir = app_dir("ws-hup");
    let server = start(&dir, &["-w", "1", "--graceful-timeout", "20"], "");
    let mut stream = open_websocket(&server.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    // The retiring worker says "Service Restart" when its drain starts, not at the end
    // of graceful_timeout.
    let (opcode, payload) = server_frame(&mut stream);
    assert_eq!(opcode, 0x8, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1012);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    // A new websocket reaches the new worker.
    let _again = open_websocket(&server.addr);
}

#[test]
fn websocket_grace_delays_the_1012_of_a_terminating_worker() {
    let dir = app_dir("ws-grace");
    let server = start_with_python(
        &dir,
        &["-w", "1", "--graceful-timeout", "20"],
        "",
        "websocket_grace = 1.5",
    );
    let mut stream = open_websocket(&server.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let (opcode, payload) = server_frame(&mut stream);
    assert_eq!(opcode, 0x8, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1012);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "closed after {waited:?}"
    );
}

/// A Gunicorn config file in `dir` (`gunicorn.conf.py`): `chdir` to `dir` (where the
/// app is), hooks writing files into `dir/hooks`, `extra` appended.
pub(crate) fn gunicorn_conf(dir: &Path, extra: &str) -> PathBuf {
    let hooks = dir.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let path = dir.join("gunicorn.conf.py");
    let text = format!(
        r#"import os
import multiprocessing

HOOKS = {hooks:?}
bind = "127.0.0.1:0"
chdir = {dir:?}
workers = 2
timeout = 20
raw_env = ["GUNICORN_CONF_ENV=yes"]
wokers_typo = 5
logconfig_dict = {{"version": 1, "incremental": True, "loggers": {{"gconf": {{"level": "ERROR"}}}}}}


def post_fork(server, worker):
    server.log.info("post_fork in %s", worker.pid)
    with open(os.path.join(HOOKS, "post_fork-%d" % worker.pid), "w") as f:
        f.write("%d %s" % (server.pid, server.cfg.workers))


def worker_exit(server, worker):
    open(os.path.join(HOOKS, "worker_exit-%d" % worker.pid), "w").close()


def on_starting(server):
    open(os.path.join(HOOKS, "on_starting-%d" % server.pid), "w").close()


def when_ready(server):
    open(os.path.join(HOOKS, "when_ready-%d" % server.pid), "w").close()


def child_exit(server, worker):
    open(os.path.join(HOOKS, "child_exit-%d" % worker.pid), "w").close()


def worker_int(worker):
    pass
{extra}
"#,
        hooks = hooks.display().to_string(),
        dir = dir.display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn hook_pids(dir: &Path, hook: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir(dir.join("hooks"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&format!("{hook}-"))?.parse().ok()
        })
        .collect();
    pids.sort();
    pids
}

#[test]
fn a_gunicorn_config_file_is_applied_with_its_worker_hooks() {
    let dir = app_dir("gconf");
    let conf = gunicorn_conf(
        &dir,
        "proc_name = \"gconf\"\nworker_tmp_dir = \"/dev/shm\"\ncapture_output = True\n",
    );
    let mut server = Forkd::program(python_forkd())
        .config(&conf)
        .app("fastapi_app:app")
        .envs(ENV.iter().copied())
        .start();
    let (status, _, _) = get(&server.addr, "/").unwrap();
    assert_eq!(status, 200, "{}", server.log());
    // Unknown names and the master hooks forkd does not run: one warning.
    let log = server.log();
    let warning = log
        .lines()
        .find(|l| l.contains("Gunicorn config"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.contains("wokers_typo"), "{warning}");
    // worker_int is run (at a quick stop), so not warned about.
    assert!(!warning.contains("worker_int"), "{warning}");
    assert!(!warning.contains("when_ready"), "{warning}");
    // What forkd always does is not warned about; proc_name names the processes.
    assert!(
        !warning.contains("worker_tmp_dir") && !warning.contains("capture_output"),
        "{warning}"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).unwrap();
    assert!(
        cmdline.starts_with(b"forkd: master [gconf]"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    // The master-side hooks, in their runner.
    for hook in ["on_starting", "when_ready"] {
        assert!(
            poll_until(Duration::from_secs(10), || hook_pids(&dir, hook)
                == vec![server.pid()]),
            "{hook} did not run with server.pid:\n{}",
            server.log()
        );
    }
    assert!(
        !warning.contains("HOOKS"),
        "a constant is no setting: {warning}"
    );
    let mut workers = workers_of(server.pid());
    workers.sort();
    assert_eq!(workers.len(), 2, "workers = 2: {workers:?}\n{log}");
    assert!(
        poll_until(Duration::from_secs(10), || hook_pids(&dir, "post_fork")
            == workers),
        "post_fork ran in each worker: {:?} vs {workers:?}\n{}",
        hook_pids(&dir, "post_fork"),
        server.log()
    );
    let first =
        std::fs::read_to_string(dir.join(format!("hooks/post_fork-{}", workers[0]))).unwrap();
    assert_eq!(
        first,
        format!("{} 2", server.pid()),
        "server.pid and server.cfg"
    );
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        server.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        server.log()
    );
    assert_eq!(hook_pids(&dir, "worker_exit"), workers, "{}", server.log());
    assert!(
        poll_until(Duration::from_secs(10), || hook_pids(&dir, "child_exit")
            == workers),
        "child_exit for each worker: {:?}\n{}",
        hook_pids(&dir, "child_exit"),
        server.log()
    );
}

#[test]
fn worker_abort_runs_at_timeout_after_the_stack_dump_and_worker_int_at_a_quick_stop() {
    let dir = app_dir("gconf-abort");
    let conf = gunicorn_conf(
        &dir,
        r#"
workers = 1
timeout = 2


def worker_abort(worker):
    worker.log.warning("worker_abort in %s", worker.pid)
    with open(os.path.join(HOOKS, "worker_abort-%d" % worker.pid), "w") as f:
        f.write("alive=%s" % worker.alive)


def worker_int(worker):
    worker.log.warning("worker_int in %s", worker.pid)
    with open(os.path.join(HOOKS, "worker_int-%d" % worker.pid), "w") as f:
        f.write("alive=%s" % worker.alive)
"#,
    );
    let mut server = Forkd::program(python_forkd())
        .config(&conf)
        .app("fastapi_app:app")
        .envs(ENV.iter().copied())
        .start();
    let (_, _, body) = get(&server.addr, "/").unwrap();
    let blocked_pid = json(&body)["pid"].as_i64().unwrap() as i32;
    let addr = server.addr.clone();
    let blocked = std::thread::spawn(move || get(&addr, "/block?seconds=60"));
    server.expect_log("worker timeout", Duration::from_secs(15));
    assert!(
        // (A worker whose boot overran `timeout` on a loaded machine is aborted, and
        // runs the hook, too.)
        poll_until(Duration::from_secs(10), || hook_pids(&dir, "worker_abort")
            .contains(&blocked_pid)),
        "worker_abort did not run in the blocked worker {blocked_pid}:\n{}",
        server.log()
    );
    let text = std::fs::read_to_string(dir.join(format!("hooks/worker_abort-{blocked_pid}")));
    assert_eq!(text.unwrap(), "alive=False");
    // The stack dump came first, then the hook.
    let log = server.log();
    let dump = log
        .find("most recent call first")
        .expect("faulthandler's dump");
    let hook = log
        .find(&format!("worker_abort in {blocked_pid}"))
        .expect("the hook's record");
    assert!(dump < hook, "{log}");
    assert!(blocked.join().unwrap().is_err());
    // The replacement serves; a quick stop runs its worker_int.
    let replaced = poll_until(Duration::from_secs(20), || {
        get(&server.addr, "/")
            .ok()
            .is_some_and(|(status, _, body)| {
                status == 200 && json(&body)["pid"].as_i64() != Some(blocked_pid as i64)
            })
    });
    assert!(replaced, "no new worker answered:\n{}", server.log());
    let workers = workers_of(server.pid());
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert!(hook_pids(&dir, "worker_int").is_empty());
    server.signal(nix::sys::signal::Signal::SIGQUIT);
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        server.log()
    );
    assert_eq!(hook_pids(&dir, "worker_int"), workers, "{}", server.log());
    // worker_exit is for a worker that drained; this one was stopped at once.
    assert!(
        hook_pids(&dir, "worker_exit").is_empty(),
        "{}",
        server.log()
    );
}

#[test]
fn the_master_side_hooks_log_into_forkds_error_log_as_records() {
    let dir = app_dir("gconf-runner-log");
    let error_log = dir.join("error.log");
    let conf = gunicorn_conf(
        &dir,
        &format!(
            r#"
errorlog = {error_log:?}


def on_starting(server):
    server.log.warning("on_starting says hi")
    print("a plain print from on_starting")


def when_ready(server):
    raise RuntimeError("when_ready broke")
"#,
            error_log = error_log.display().to_string()
        ),
    );
    let mut server = Forkd::program(python_forkd())
        .config(&conf)
        .app("fastapi_app:app")
        .envs(ENV.iter().copied())
        .start_logging_to(&error_log);
    let lines = || std::fs::read_to_string(&error_log).unwrap_or_default();
    let runner_line = |needle: &str| {
        lines()
            .lines()
            .find(|l| l.contains(needle))
            .map(String::from)
    };
    assert!(
        poll_until(Duration::from_secs(10), || runner_line("when_ready broke")
            .is_some()),
        "{}",
        lines()
    );
    let hi = runner_line("on_starting says hi").expect("the hook's record");
    assert!(
        hi.contains(" WARN ") && hi.contains("logger=forkd.hooks"),
        "{hi}"
    );
    let print = runner_line("a plain print from on_starting").expect("the print");
    assert!(print.contains(" INFO "), "{print}");
    // One record for the failure, the traceback inside it.
    let broke = runner_line("server hook when_ready raised").expect("the error record");
    assert!(
        broke.contains(" ERROR ")
            && broke.contains("Traceback")
            && broke.contains("when_ready broke"),
        "{broke}"
    );
    assert_eq!(
        lines().lines().filter(|l| l.contains("Traceback")).count(),
        1,
        "{}",
        lines()
    );
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn a_module_without_attr_serves_its_application_as_gunicorn_does() {
    let dir = app_dir("module-alone");
    std::fs::create_dir_all(dir.join("proj")).unwrap();
    std::fs::write(dir.join("proj/__init__.py"), "").unwrap();
    std::fs::write(
        dir.join("proj/asgi.py"),
        "from fastapi_app import app as application\n",
    )
    .unwrap();
    let mut server = Forkd::program(python_forkd())
        .config(config(&dir, ""))
        .app("proj.asgi")
        .envs(ENV.iter().copied())
        .start();
    let (status, _, _) = get(&server.addr, "/").unwrap();
    assert_eq!(status, 200, "{}", server.log());
    assert!(
        server.log().contains("proj.asgi:application"),
        "{}",
        server.log()
    );
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
    // A module without `application`: the boot fails, naming it and what the module has.
    let (code, log) = Forkd::program(python_forkd())
        .config(config(&dir, ""))
        .app("fastapi_app")
        .envs(ENV.iter().copied())
        .run_to_exit(Duration::from_secs(30));
    assert_eq!(code, Some(3), "{log}");
    assert!(
        log.contains("no attribute 'application'")
            && log.contains("did you mean 'fastapi_app:app'?"),
        "{log}"
    );
}

#[test]
fn a_syntax_error_in_a_gunicorn_config_file_exits_2_naming_it() {
    let dir = app_dir("gconf-syntax");
    let conf = gunicorn_conf(&dir, "def broken(:\n");
    let (code, stderr) = Forkd::program(python_forkd())
        .config(&conf)
        .app("fastapi_app:app")
        .run_to_exit(Duration::from_secs(20));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&conf.display().to_string()) && stderr.contains("SyntaxError"),
        "{stderr}"
    );
}

#[test]
fn a_gunicorn_config_file_needs_the_python_package() {
    let dir = app_dir("gconf-plain");
    let conf = gunicorn_conf(&dir, "");
    let (code, stderr) = Forkd::new()
        .config(&conf)
        .app("hello")
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("Python package"), "{stderr}");
}

#[test]
fn hup_rereads_a_gunicorn_config_file() {
    let dir = app_dir("gconf-hup");
    let conf = gunicorn_conf(&dir, "");
    let server = Forkd::program(python_forkd())
        .config(&conf)
        .app("fastapi_app:app")
        .envs(ENV.iter().copied())
        .start();
    let text = std::fs::read_to_string(&conf).unwrap();
    // A broken file on HUP: the old workers keep serving.
    std::fs::write(
        &conf,
        format!("{text}\nraise RuntimeError('half-edited')\n"),
    )
    .unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.expect_log("half-edited", Duration::from_secs(20));
    assert_eq!(get(&server.addr, "/").unwrap().0, 200);
    assert_eq!(workers_of(server.pid()).len(), 2);
    std::fs::write(&conf, text.replace("workers = 2\n", "workers = 3\n")).unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(30), || workers_of(server.pid()).len()
            == 3
            && hook_pids(&dir, "post_fork").len() == 5),
        "HUP did not apply workers = 3:\n{}",
        server.log()
    );
    assert_eq!(get(&server.addr, "/").unwrap().0, 200);
}

#[test]
fn python_hooks_from_forkd_toml_run_in_the_workers_and_the_runner() {
    let dir = app_dir("toml-hooks");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/hooks_app.py"),
        dir.join("hooks_app.py"),
    )
    .unwrap();
    let hooks = dir.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let mut server = Forkd::program(python_forkd())
        .config(config_with_python(
            &dir,
            "workers = 2",
            "[python.hooks]\npost_fork = \"hooks_app:post_fork\"\nworker_exit = \"hooks_app:worker_exit\"\nwhen_ready = \"hooks_app:when_ready\"\n",
        ))
        .envs(ENV.iter().copied())
        .env("HOOKS_DIR", &hooks)
        .start();
    let mut workers = workers_of(server.pid());
    workers.sort();
    assert!(
        poll_until(Duration::from_secs(10), || hook_pids(&dir, "post_fork")
            == workers
            && hook_pids(&dir, "when_ready") == vec![server.pid()]),
        "post_fork {:?} (workers {workers:?}), when_ready {:?}\n{}",
        hook_pids(&dir, "post_fork"),
        hook_pids(&dir, "when_ready"),
        server.log()
    );
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        server.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        server.log()
    );
    assert_eq!(hook_pids(&dir, "worker_exit"), workers, "{}", server.log());
}

#[test]
fn a_hup_follows_a_switched_release_symlink_while_max_requests_recycles_workers() {
    // root/releases/{r1,r2} each hold the app and a release.txt naming it;
    // root/current -> releases/r1. `python.path` is left at its default (".", the
    // worker's directory).
    let root = temp_dir("py-release");
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/release_app.py");
    for release in ["r1", "r2"] {
        let dir = root.join("releases").join(release);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&app, dir.join("release_app.py")).unwrap();
        std::fs::write(dir.join("release.txt"), release).unwrap();
    }
    std::os::unix::fs::symlink("releases/r1", root.join("current")).unwrap();
    let config = root.join("forkd.toml");
    std::fs::write(
        &config,
        format!(
            "bind = [\"127.0.0.1:0\"]\napp = \"release_app:app\"\nworkers = 2\nmax_requests = 50\nchdir = {:?}\n",
            root.join("current").display()
        ),
    )
    .unwrap();
    let server = Forkd::program(python_forkd())
        .config(&config)
        .envs(ENV.iter().copied())
        .start();
    let r1 = std::fs::canonicalize(root.join("releases/r1")).unwrap();
    let r2 = std::fs::canonicalize(root.join("releases/r2")).unwrap();
    let body = |server: &Server| {
        get(&server.addr, "/")
            .map(|(_, _, body)| String::from_utf8_lossy(&body).to_string())
            .unwrap_or_else(|e| e)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 8, stop.clone());
    // A deploy: the link now points at release 2 (a new link renamed over it).
    std::os::unix::fs::symlink("releases/r2", root.join("current.next")).unwrap();
    std::fs::rename(root.join("current.next"), root.join("current")).unwrap();
    let recycled = |server: &Server| server.log().matches("reason=\"max_requests\"").count();
    let before = recycled(&server);
    assert!(
        poll_until(Duration::from_secs(30), || recycled(&server) >= before + 4),
        "workers were not recycled:\n{}",
        server.log()
    );
    // Recycled before the HUP: still their generation's release.
    for _ in 0..20 {
        assert_eq!(body(&server), format!("r1 {}\n", r1.display()));
    }
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.expect_log("generation=2", Duration::from_secs(20));
    let switched = poll_until(Duration::from_secs(20), || {
        (0..10).all(|_| body(&server) == format!("r2 {}\n", r2.display()))
    });
    assert!(switched, "release 2 is not served alone:\n{}", server.log());
    let after = recycled(&server);
    assert!(poll_until(Duration::from_secs(30), || recycled(&server) >= after + 4));
    for _ in 0..20 {
        assert_eq!(body(&server), format!("r2 {}\n", r2.display()));
    }
    finish(stop, handles);
    assert_no_failures(
        &tally,
        &server,
        "a release switch with max_requests recycling",
    );
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn an_edit_under_reload_serves_the_new_code_after_one_debounced_reload() {
    let dir = app_dir("reload");
    // chdir: the app's directory is watched (without it, the directory forkd started in).
    let server = start(
        &dir,
        &["-w", "1", "--reload"],
        &format!("chdir = {:?}", dir.display().to_string()),
    );
    server.expect_log("reload: watching", Duration::from_secs(5));
    let app = dir.join("fastapi_app.py");
    let original = std::fs::read_to_string(&app).unwrap();
    // Three saves in quick succession, as an editor and a formatter make: one reload.
    for version in 2..=4 {
        std::fs::write(
            &app,
            original.replace("VERSION = 1\n", &format!("VERSION = {version}\n")),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    server.expect_log("generation=2", Duration::from_secs(20));
    let answered = poll_until(Duration::from_secs(20), || {
        get(&server.addr, "/")
            .ok()
            .is_some_and(|(_, _, body)| json(&body)["version"] == 4)
    });
    assert!(answered, "the edit was never served:\n{}", server.log());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!server.log_contains("generation=3"), "{}", server.log());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn response_headers_are_right_on_every_response_whatever_objects_the_app_sends() {
    // The reader keeps names and values by the identity of their bytes objects: each
    // response must still carry exactly its own (constant, fresh, chosen, bytearray).
    let dir = temp_dir("py-headers");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/headers_app.py"),
        dir.join("headers_app.py"),
    )
    .unwrap();
    let config = dir.join("forkd.toml");
    std::fs::write(
        &config,
        format!(
            "bind = [\"127.0.0.1:0\"]\napp = \"headers_app:app\"\nworkers = 1\n[python]\npath = [{:?}]\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let server = Forkd::program(python_forkd())
        .config(&config)
        .envs(ENV.iter().copied())
        .start();
    for n in 0..300u32 {
        let (status, head, body) = get(&server.addr, &format!("/?{n}")).unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, n.to_string().as_bytes());
        let head = head.to_ascii_lowercase();
        let choice = ["red", "green", "blue"][n as usize % 3];
        for line in [
            "content-type: text/plain".to_string(),
            format!("x-n: {n}"),
            format!("x-choice: {choice}"),
            format!("x-buffer: v{}", n % 5),
        ] {
            assert!(
                head.contains(&format!("\r\n{line}\r\n")),
                "{n}: {line} in {head}"
            );
        }
        assert_eq!(
            head.contains("\r\nx-odd: yes\r\n"),
            n % 2 == 1,
            "{n}: {head}"
        );
        assert_eq!(head.matches("\r\nx-n: ").count(), 1, "{n}: {head}");
    }
}
