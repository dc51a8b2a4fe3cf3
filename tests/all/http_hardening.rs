//! HTTP hardening, end to end with the real binary: `[limits]` (414, 431, 413 for a
//! declared and a chunked body, `header_read_timeout`, `max_connections`), and that the
//! worker keeps serving after each; `[health]` readiness during `shutdown_delay`;
//! trusted proxy headers. Real sockets on loopback, deadlines on every wait, every
//! process killed by a guard.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends raw bytes (a write error is fine: the server may close early) and reads the
/// whole answer until the server closes: (status, head, body).
fn exchange(addr: &str, raw: &[u8]) -> (u16, String, String) {
    let text = converse(addr, raw, Duration::from_secs(10));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

const LIMITS: &str = "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n\
    [limits]\nrequest_line = 200\nrequest_fields = 10\nrequest_field_size = 100\nmax_body = 1000\n";

#[test]
fn oversized_line_headers_and_bodies_get_their_4xx_and_the_worker_keeps_serving() {
    let path = temp_config("limits", LIMITS);
    let server = Forkd::new().config(&path).start();
    let pid = worker_pid(&server.addr);
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(300));
    let many_fields = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        (0..12)
            .map(|i| format!("x-{i}: {i}\r\n"))
            .collect::<String>()
    );
    let large_field = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nx-big: {}\r\n\r\n",
        "b".repeat(150)
    );
    let declared = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n".to_string();
    let mut chunked =
        String::from("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..5 {
        chunked.push_str(&format!("190\r\n{}\r\n", "c".repeat(400)));
    }
    chunked.push_str("0\r\n\r\n");
    let cases: [(&str, &String, u16, &str); 5] = [
        ("request line", &long_line, 414, "limits.request_line"),
        ("header count", &many_fields, 431, "limits.request_fields"),
        (
            "header size",
            &large_field,
            431,
            "limits.request_field_size",
        ),
        ("declared body", &declared, 413, "limits.max_body"),
        ("chunked body", &chunked, 413, "limits.max_body"),
    ];
    for (what, raw, want, names) in cases {
        let (status, head, body) = exchange(&server.addr, raw.as_bytes());
        assert_eq!(status, want, "{what}: {head}\n{body}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{what}: {head}"
        );
        assert!(body.contains(names), "{what}: body {body:?}");
        // The same worker answers the next request.
        assert_eq!(worker_pid(&server.addr), pid, "{what}: the worker changed");
    }
    // Within the limits: a chunked body of exactly max_body bytes is served.
    let mut fits = String::from(
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    fits.push_str(&format!("3e8\r\n{}\r\n0\r\n\r\n", "d".repeat(1000)));
    let (status, _, body) = exchange(&server.addr, fits.as_bytes());
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"body_bytes\":1000"), "{body}");
    // On one keep-alive connection: a good request is answered, then the oversized one
    // that follows it gets 414.
    let mut pipelined = b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    pipelined.extend_from_slice(long_line.as_bytes());
    let (status, _, rest) = exchange(&server.addr, &pipelined);
    assert_eq!(status, 200);
    assert!(rest.contains("HTTP/1.1 414"), "{rest}");
    assert!(
        !server.log_contains("worker exited"),
        "a worker exited:\n{}",
        server.log()
    );
}

#[test]
fn a_slowloris_client_is_dropped_after_header_read_timeout_while_others_are_served() {
    let path = temp_config(
        "slowloris",
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[limits]\nheader_read_timeout = 1\n",
    );
    let server = Forkd::new().config(&path).start();
    let addr = server.addr.clone();
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .expect("first bytes");
    let mut served_meanwhile = 0;
    let mut dropped_after = None;
    let mut byte = [0u8; 64];
    while started.elapsed() < Duration::from_secs(8) {
        // A header line every 200 ms: never finishing, always "active".
        let _ = slow.write_all(b"X-Slow: 1\r\n");
        match slow.read(&mut byte) {
            Ok(0) => {
                dropped_after = Some(started.elapsed());
                break;
            }
            Ok(n) => panic!(
                "the slow client got an answer: {:?}",
                String::from_utf8_lossy(&byte[..n])
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                dropped_after = Some(started.elapsed());
                break;
            }
            Err(_) => {}
        }
        let (status, _, _) = get(&addr, "/").expect("normal request");
        assert_eq!(status, 200);
        served_meanwhile += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    let dropped_after = dropped_after.expect("the slowloris client was never dropped");
    assert!(
        dropped_after >= Duration::from_millis(900),
        "dropped too early: {dropped_after:?}"
    );
    assert!(
        served_meanwhile >= 3,
        "only {served_meanwhile} normal requests"
    );
    let (status, _, _) = get(&addr, "/").expect("after");
    assert_eq!(status, 200);
}

#[test]
fn past_max_connections_new_requests_get_503_with_retry_after() {
    let path = temp_config(
        "maxconn",
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\nkeepalive = 30\n[limits]\nmax_connections = 2\n",
    );
    let server = Forkd::new().config(&path).start();
    let open: Vec<BufReader<TcpStream>> = (0..2)
        .map(|_| {
            let stream = TcpStream::connect(&server.addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut reader = BufReader::new(stream);
            reader
                .get_mut()
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("write");
            let (status, close) = read_response(&mut reader).expect("keep-alive response");
            assert_eq!((status, close), (200, false));
            reader
        })
        .collect();
    let started = Instant::now();
    let (status, head, body) = get(&server.addr, "/").expect("third connection");
    assert!(started.elapsed() < Duration::from_secs(5), "it hung");
    assert_eq!(status, 503, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert!(
        String::from_utf8_lossy(&body).contains("limits.max_connections"),
        "{body:?}"
    );
    drop(open);
    assert!(
        poll_until(Duration::from_secs(10), || {
            get(&server.addr, "/").is_ok_and(|(status, _, _)| status == 200)
        }),
        "no 200 after the connections closed"
    );
}

#[test]
fn readiness_flips_to_503_during_shutdown_delay_while_requests_succeed_then_exit_0() {
    let path = temp_config(
        "ready",
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 2\n\
         [health]\nlive_path = \"/health/live\"\nready_path = \"/health/ready\"\nshutdown_delay = 2\n",
    );
    let mut server = Forkd::new().config(&path).start();
    let addr = server.addr.clone();
    let status_of = |path: &str| get(&addr, path).map(|(status, _, _)| status);
    assert_eq!(status_of("/health/live"), Ok(200));
    assert_eq!(status_of("/health/ready"), Ok(200));
    // Health paths never reach the app (echo would answer JSON).
    let (_, _, body) = get(&addr, "/health/ready").expect("ready");
    assert_eq!(body, b"ready\n");
    // A HUP does not flip readiness: the server as a whole stays ready.
    server.signal(Signal::SIGHUP);
    let reloaded = Instant::now();
    while reloaded.elapsed() < Duration::from_millis(800) {
        assert_eq!(status_of("/health/ready"), Ok(200), "during a reload");
        assert_eq!(status_of("/"), Ok(200));
    }
    assert!(poll_until(Duration::from_secs(10), || server
        .log_contains("HUP: reload finished")
        || server.log().matches("reason=\"reload\"").count() >= 2));
    let term = Instant::now();
    server.signal(Signal::SIGTERM);
    assert!(
        poll_until(Duration::from_secs(5), || status_of("/health/ready")
            == Ok(503)),
        "readiness did not flip:\n{}",
        server.log()
    );
    // Not ready, but serving everything else as usual for the rest of the delay.
    let mut served = 0;
    while term.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            status_of("/"),
            Ok(200),
            "a request failed during shutdown_delay"
        );
        assert_eq!(status_of("/health/live"), Ok(200));
        assert_eq!(status_of("/health/ready"), Ok(503));
        served += 1;
    }
    assert!(served > 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "forkd did not exit:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(
        term.elapsed() >= Duration::from_millis(1800),
        "exited before shutdown_delay was over: {:?}",
        term.elapsed()
    );
    assert!(server.log_contains("shutdown_delay"), "{}", server.log());
}

#[test]
fn proxy_headers_are_trusted_only_from_allowed_addresses() {
    let xff = "X-Forwarded-For: 198.51.100.77, 203.0.113.9\r\nX-Forwarded-Proto: https\r\n";
    let forwarded = "Forwarded: for=\"[2001:db8::5]:1234\";proto=https\r\n";
    // The default list trusts loopback, where the test connects from; both kinds of
    // header are read (the default reads X-Forwarded-* alone: see
    // forwarded_headers_decides_which_proxy_headers_are_believed).
    let path = temp_config(
        "proxies-default",
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nforwarded_headers = \"both\"\n",
    );
    let server = Forkd::new().config(&path).start();
    let json = echo_json(&server.addr, xff);
    // 203.0.113.9 was appended by the trusted proxy; 198.51.100.77 could be forged.
    assert_eq!(json["remote_addr"], "203.0.113.9");
    assert_eq!(json["scheme"], "https");
    let json = echo_json(&server.addr, forwarded);
    assert_eq!(json["remote_addr"], "2001:db8::5");
    assert_eq!(json["scheme"], "https");
    let json = echo_json(&server.addr, "");
    assert!(json["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(json["scheme"], "http");
    drop(server);

    // A CIDR that trusts a chain of proxies: walked until the first untrusted hop.
    let path = temp_config(
        "proxies-cidr",
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nforwarded_allow_ips = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n",
    );
    let server = Forkd::new().config(&path).start();
    let json = echo_json(
        &server.addr,
        "X-Forwarded-For: 192.0.2.1, 198.51.100.2, 10.9.8.7\r\n",
    );
    assert_eq!(json["remote_addr"], "198.51.100.2");
    drop(server);

    // Not from an allowed address: the headers are ignored.
    let path = temp_config(
        "proxies-untrusted",
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nforwarded_allow_ips = [\"10.0.0.1\"]\n",
    );
    let server = Forkd::new().config(&path).start();
    for headers in [xff, forwarded] {
        let json = echo_json(&server.addr, headers);
        let remote = json["remote_addr"].as_str().unwrap();
        assert!(remote.starts_with("127.0.0.1:"), "{remote}");
        assert_eq!(json["scheme"], "http");
    }
}

/// Issue 12, item 7: behind a proxy that appends to what the client sent (nginx's
/// `$proxy_add_x_forwarded_for`), a malformed entry must not make the proxy the client.
#[test]
fn malformed_proxy_headers_never_make_the_proxy_the_client() {
    let dir = temp_dir("proxies-malformed");
    let log = dir.join("access.log");
    let path = dir.join("forkd.toml");
    std::fs::write(
        &path,
        format!(
            "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nforwarded_allow_ips = [\"127.0.0.1\"]\n\
             forwarded_headers = \"both\"\n[log]\naccess_log = {:?}\naccess_log_format = \"{{path}} {{remote_addr}}\"\n",
            log.to_str().unwrap()
        ),
    )
    .expect("write config");
    let server = Forkd::new().config(&path).start();
    let cases: [(&str, &[u8], &str); 6] = [
        // What the proxy wrote itself is malformed: the client is unknown.
        ("/xff-alone", b"X-Forwarded-For: \xff", "unknown"),
        ("/fwd-alone", b"Forwarded: for=\"203.0.113.9", "unknown"),
        // The client's garbage, then the address the proxy appended: that address.
        (
            "/xff-appended",
            b"X-Forwarded-For: \xff, 203.0.113.9",
            "203.0.113.9",
        ),
        (
            "/fwd-appended",
            b"Forwarded: for=\"\xff, for=203.0.113.9",
            "203.0.113.9",
        ),
        (
            "/fwd-lines",
            b"Forwarded: for=\"\r\nForwarded: for=\"[2001:db8::5]:80\"",
            "2001:db8::5",
        ),
        // A malformed Forwarded wins all the same: no fallback to X-Forwarded-For.
        (
            "/fwd-over-xff",
            b"X-Forwarded-For: 203.0.113.9\r\nForwarded: for=\"\xff",
            "unknown",
        ),
    ];
    for (target, header, want) in cases {
        let mut raw = format!("GET {target} HTTP/1.1\r\nHost: t\r\n").into_bytes();
        raw.extend_from_slice(header);
        raw.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let (status, head, body) = exchange(&server.addr, &raw);
        assert_eq!(status, 200, "{target}: {head}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("echo json");
        assert_eq!(json["remote_addr"], want, "{target}");
        assert_eq!(json["scheme"], "http", "{target}");
    }
    let logged = |text: &str| {
        cases.iter().all(|(target, _, want)| {
            let want = if *want == "unknown" { "-" } else { want };
            text.lines().any(|line| line == format!("{target} {want}"))
        })
    };
    assert!(
        poll_until(Duration::from_secs(5), || logged(
            &std::fs::read_to_string(&log).unwrap_or_default()
        )),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn bad_access_log_format_and_proxy_entries_are_config_errors() {
    for (name, text, needles) in [
        (
            "format",
            "app = \"hello\"\n[log]\naccess_log_format = \"{status} {stauts}\"\n",
            &["line 3", "log.access_log_format", "unknown field {stauts}"][..],
        ),
        (
            "cidr",
            "app = \"hello\"\nforwarded_allow_ips = [\"10.0.0.0/40\"]\n",
            &["line 2", "forwarded_allow_ips", "prefix length"][..],
        ),
    ] {
        let path = temp_config(&format!("bad-{name}"), text);
        let (code, stderr) = Forkd::new()
            .config(&path)
            .arg("--check-config")
            .run_to_exit(Duration::from_secs(10));
        assert_eq!(code, Some(2), "{name}: {stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{name}: {needle:?} not in {stderr}"
            );
        }
    }
}

/// Reads lines from a child's pipe into a shared buffer.
fn collect_lines(pipe: impl Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<String>> {
    let sink = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let writer = sink.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            writer.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    sink
}

/// Kills a started process and its workers on drop.
struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        for pid in children_of(self.0.id() as i32) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn access_log_dash_writes_to_stdout() {
    // A raw command: stdout (the access log here) is read as it comes, which `Server`
    // (it drops stdout) does not do.
    let mut child = Forkd::new()
        .local()
        .args(["--access-log", "-"])
        .app("hello")
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start forkd");
    let stdout = collect_lines(child.stdout.take().expect("stdout"));
    let stderr = collect_lines(child.stderr.take().expect("stderr"));
    let _guard = Guard(child);
    assert!(poll_until(Duration::from_secs(10), || stderr
        .lock()
        .unwrap()
        .contains("all workers ready")));
    let log = stderr.lock().unwrap().clone();
    let addr = log
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("address")
        .to_string();
    let (status, _, _) = request(
        &addr,
        "GET /to-stdout HTTP/1.1\r\nHost: t\r\nUser-Agent: stdout-test\r\nConnection: close\r\n\r\n",
    )
    .expect("request");
    assert_eq!(status, 200);
    assert!(
        poll_until(Duration::from_secs(5), || {
            let out = stdout.lock().unwrap();
            out.contains("\"GET /to-stdout HTTP/1.1\" 200 13") && out.contains("\"stdout-test\"")
        }),
        "stdout: {}",
        stdout.lock().unwrap()
    );
}

/// A proxy that manages only `X-Forwarded-For` (nginx's usual
/// `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`) passes the client's own
/// `Forwarded` through: by default it is not believed, so no client picks its address.
#[test]
fn forwarded_headers_decides_which_proxy_headers_are_believed() {
    // What reaches forkd from such a proxy: the client's spoof, the proxy's XFF.
    let spoofed = "Forwarded: for=1.2.3.4;proto=https\r\nX-Forwarded-For: 203.0.113.9\r\n";
    let forwarded_only = "Forwarded: for=1.2.3.4;proto=https\r\n";
    let xff_only = "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n";
    let peer = |json: &serde_json::Value| {
        let remote = json["remote_addr"].as_str().unwrap().to_string();
        assert!(remote.starts_with("127.0.0.1:"), "{remote}");
    };
    for (mode, line) in [
        ("default", ""),
        ("x-forwarded", "forwarded_headers = \"x-forwarded\"\n"),
    ] {
        let path = temp_config(
            &format!("proxy-headers-{mode}"),
            &format!("app = \"echo\"\nbind = [\"127.0.0.1:0\"]\n{line}"),
        );
        let server = Forkd::new().config(&path).start();
        let json = echo_json(&server.addr, spoofed);
        assert_eq!(json["remote_addr"], "203.0.113.9", "{mode}");
        assert_eq!(json["scheme"], "http", "{mode}");
        let json = echo_json(&server.addr, forwarded_only);
        peer(&json);
        assert_eq!(json["scheme"], "http", "{mode}");
        let json = echo_json(&server.addr, xff_only);
        assert_eq!(json["remote_addr"], "203.0.113.9", "{mode}");
        assert_eq!(json["scheme"], "https", "{mode}");
    }

    let path = temp_config(
        "proxy-headers-forwarded",
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nforwarded_headers = \"forwarded\"\n",
    );
    let server = Forkd::new().config(&path).start();
    let json = echo_json(&server.addr, spoofed);
    assert_eq!(json["remote_addr"], "1.2.3.4");
    assert_eq!(json["scheme"], "https");
    let json = echo_json(&server.addr, xff_only);
    peer(&json);
    assert_eq!(json["scheme"], "http");
    drop(server);

    let path = temp_config(
        "proxy-headers-both",
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nforwarded_headers = \"both\"\n",
    );
    let server = Forkd::new().config(&path).start();
    let json = echo_json(&server.addr, spoofed);
    assert_eq!(json["remote_addr"], "1.2.3.4");
    assert_eq!(json["scheme"], "https");
    let json = echo_json(&server.addr, xff_only);
    assert_eq!(json["remote_addr"], "203.0.113.9");
    assert_eq!(json["scheme"], "https");
    drop(server);

    // The environment sets it as any key; --print-config shows it.
    let path = temp_config("proxy-headers-print", "app = \"echo\"\n");
    let print = Forkd::new()
        .config(&path)
        .arg("--print-config")
        .env("FORKD_FORWARDED_HEADERS", "forwarded");
    // Bounded first; then read what it prints.
    let (code, stderr) = print.run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    let printed = print.command().output().expect("print-config");
    let stdout = String::from_utf8_lossy(&printed.stdout);
    assert!(
        stdout.contains("forwarded_headers = \"forwarded\""),
        "{stdout}"
    );

    // A bad value names the key and what is allowed.
    let path = temp_config(
        "proxy-headers-bad",
        "app = \"echo\"\nforwarded_headers = \"auto\"\n",
    );
    let (code, stderr) = Forkd::new()
        .config(&path)
        .arg("--check-config")
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(2), "{stderr}");
    for needle in [
        "line 2",
        "forwarded_headers",
        "x-forwarded | forwarded | both",
        "\"auto\"",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
}

/// The value of one sample line of /metrics (`name{labels}`), 0 if absent.
fn sample(metrics: &str, name: &str) -> f64 {
    let (status, _, body) = get(metrics, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .sum()
}

/// An echo server with an access log file and metrics: (server, access log path,
/// metrics address).
fn logged_echo(name: &str) -> (Server, std::path::PathBuf, String) {
    let dir = temp_dir(name);
    let access = dir.join("access.log");
    let config = write_config(
        &dir,
        &format!(
            "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[log]\naccess_log = {access:?}\n\
             [metrics]\nbind = \"127.0.0.1:0\"\n[limits]\nrequest_line = 200\n"
        ),
    );
    let server = Forkd::new().config(&config).start();
    let metrics = metrics_addr(&server);
    (server, access, metrics)
}

fn access_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read(path)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

const MALFORMED: &str = "forkd_requests_rejected_total{limit=\"malformed\"}";

/// Issue 20 (7, 8): RFC 9112 §3.2's Host rules, and the heads hyper's own parser
/// refuses, each get forkd's 400: access-logged and counted as `malformed`; what
/// ordinary clients send is served, and an absolute-form target's host is the one the
/// app sees.
#[test]
fn bad_hosts_and_heads_hyper_refuses_are_400_logged_and_counted() {
    let (server, access, metrics) = logged_echo("host-400");
    let refused: [(&str, &[u8]); 12] = [
        ("no Host on HTTP/1.1", b"GET /a HTTP/1.1\r\n\r\n"),
        (
            "two Host lines",
            b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        (
            "invalid Host",
            b"GET /a HTTP/1.1\r\nHost: a b/c@d:99999\r\n\r\n",
        ),
        (
            "port past 65535",
            b"GET /a HTTP/1.1\r\nHost: x:65536\r\n\r\n",
        ),
        ("* with GET", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "userinfo in absolute-form",
            b"GET http://u@x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "NUL in the target",
            b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "space in a field name",
            b"GET /a HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        ),
        (
            "control byte in a value",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
        ),
        ("HTTP/9.9", b"GET /a HTTP/9.9\r\nHost: x\r\n\r\n"),
        (
            "obs-fold",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n",
        ),
        ("< in the path", b"GET /a<b HTTP/1.1\r\nHost: x\r\n\r\n"),
    ];
    for (what, raw) in refused {
        let (status, head, body) = exchange(&server.addr, raw);
        assert_eq!(status, 400, "{what}: {head}\n{body}");
        assert!(body.contains("malformed request"), "{what}: {body}");
    }
    // What ordinary clients send is served.
    for (what, raw) in [
        (
            "trailing dot, uppercase",
            &b"GET /ok HTTP/1.1\r\nHost: EXAMPLE.COM.\r\nConnection: close\r\n\r\n"[..],
        ),
        (
            "IPv6 literal with port",
            b"GET /ok HTTP/1.1\r\nHost: [::1]:8000\r\nConnection: close\r\n\r\n",
        ),
        (
            "IPv4 with port",
            b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n",
        ),
        ("HTTP/1.0 without Host", b"GET /ok HTTP/1.0\r\n\r\n"),
        (
            "OPTIONS *",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let (status, head, body) = exchange(&server.addr, raw);
        assert_eq!(status, 200, "{what}: {head}\n{body}");
    }
    // Absolute-form: the target's authority is the one host the app sees.
    let (status, _, body) = exchange(
        &server.addr,
        b"GET http://target.example:8080/p HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(body.as_bytes())["headers"]["host"],
        "target.example:8080",
        "{body}"
    );
    assert!(
        poll_until(Duration::from_secs(5), || sample(&metrics, MALFORMED)
            == refused.len() as f64),
        "{MALFORMED} = {}",
        sample(&metrics, MALFORMED)
    );
    assert!(
        poll_until(Duration::from_secs(5), || access_lines(&access)
            .iter()
            .filter(|l| l.contains("\" 400 "))
            .count()
            == refused.len()),
        "{:#?}",
        access_lines(&access)
    );
}

/// Issue 20 (10): a refused request line is logged with its bytes as they came
/// (`\xFF\xFE`), not as the UTF-8 replacement character they would decode to.
#[test]
fn refused_request_bytes_are_logged_as_sent() {
    let (server, access, _) = logged_echo("raw-bytes");
    let mut raw = b"GET /\xff\xfe".to_vec();
    raw.extend_from_slice(&[b'a'; 300]);
    raw.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, _, _) = exchange(&server.addr, &raw);
    assert_eq!(status, 414);
    assert!(
        poll_until(Duration::from_secs(5), || access_lines(&access)
            .iter()
            .any(|l| l.contains("\"GET /\\xFF\\xFEaaa"))),
        "{:#?}",
        access_lines(&access)
    );
    assert!(
        !access_lines(&access)
            .iter()
            .any(|l| l.contains("\\xEF\\xBF\\xBD")),
        "{:#?}",
        access_lines(&access)
    );
}
