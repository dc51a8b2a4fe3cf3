//! Day-to-day operation, end to end with the real binary: the access log (default and
//! custom formats, JSON lines, the client behind a proxy, USR1 reopen after logrotate
//! moved the file, no line lost on stop) and the Prometheus endpoint (parses as the
//! text format; its counters move with requests, reloads, crashes and rejections).

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use prometheus_parse::{Scrape, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn get_with(addr: &str, path: &str, headers: &str) -> u16 {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"),
    )
    .expect("request")
    .0
}

#[test]
fn access_log_lines_survive_a_move_and_usr1_and_a_stop() {
    let dir = temp_dir("access-log");
    let log = dir.join("access.log");
    let path = write_config(
        &dir,
        &format!(
            "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 2\n[log]\naccess_log = {:?}\n",
            log.to_str().unwrap()
        ),
    );
    let server = Forkd::new().config(&path).start();
    assert_eq!(
        get_with(
            &server.addr,
            "/first?x=1",
            "User-Agent: agent/1.0 \"quoted\"\r\nX-Forwarded-For: 203.0.113.50\r\n"
        ),
        200
    );
    assert!(
        poll_until(Duration::from_secs(5), || read(&log).lines().count() == 1),
        "no line: {:?}",
        read(&log)
    );
    let line = read(&log);
    let workers = workers_of(server.pid());
    // remote address (the client behind the trusted local proxy), time, request line,
    // status, response bytes, referer, user agent (escaped), duration in ms, pid.
    let pattern = [
        "203.0.113.50 - - [",
        " +0000] \"GET /first?x=1 HTTP/1.1\" 200 ",
        " \"-\" \"agent/1.0 \\x22quoted\\x22\" ",
    ];
    for part in pattern {
        assert!(line.contains(part), "{part:?} not in {line:?}");
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let pid: i32 = fields.last().unwrap().parse().expect("pid last");
    assert!(workers.contains(&pid), "pid {pid} not a worker {workers:?}");
    let duration: f64 = fields[fields.len() - 2].parse().expect("duration");
    assert!((0.0..5000.0).contains(&duration), "{duration}");
    let bytes: u64 = fields[9].parse().expect("bytes");
    assert!(bytes > 50, "echo's JSON is longer: {bytes}");

    // logrotate: move the file, then USR1; lines go on to the old file until then.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).expect("move");
    assert_eq!(get_with(&server.addr, "/before-usr1", ""), 200);
    assert!(poll_until(Duration::from_secs(5), || read(&rotated)
        .contains("/before-usr1")));
    server.signal(Signal::SIGUSR1);
    assert!(
        poll_until(Duration::from_secs(5), || log.exists()),
        "USR1 did not reopen the access log"
    );
    // Both workers have reopened once the file exists for each; send enough requests
    // that both serve some and check every one lands in the new file.
    server.expect_log("USR1: reopening log files", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..20 {
        assert_eq!(get_with(&server.addr, &format!("/after-usr1/{i}"), ""), 200);
    }
    assert!(
        poll_until(Duration::from_secs(5), || read(&log)
            .matches("/after-usr1/")
            .count()
            == 20),
        "new file: {}\nold file: {}",
        read(&log),
        read(&rotated)
    );
    assert!(!read(&rotated).contains("/after-usr1/"));

    // A graceful stop right after a burst loses no line.
    for i in 0..50 {
        assert_eq!(get_with(&server.addr, &format!("/burst/{i}"), ""), 200);
    }
    server.signal(Signal::SIGTERM);
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "forkd did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read(&log).matches("/burst/").count(), 50, "{}", read(&log));
}

#[test]
fn access_log_format_fields_and_json_lines() {
    let dir = temp_dir("access-json");
    let log = dir.join("access.jsonl");
    let path = write_config(
        &dir,
        &format!(
            "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\n\
             [log]\nformat = \"json\"\naccess_log = {:?}\n\
             access_log_format = \"{{method}} {{path}} {{query}} {{status}} {{bytes}} {{duration_us}} {{remote_addr}} {{worker}} {{header:x-request-id}}\"\n\
             [limits]\nrequest_line = 100\n",
            log.to_str().unwrap()
        ),
    );
    let server = Forkd::new().config(&path).start();
    assert_eq!(
        get_with(
            &server.addr,
            "/json?q=2&status=201",
            "X-Request-Id: abc-123\r\n"
        ),
        201
    );
    // A request refused by a limit is logged too, with what arrived of its line.
    let (status, _, _) = get(&server.addr, &format!("/{}", "z".repeat(150))).expect("414");
    assert_eq!(status, 414);
    assert!(
        poll_until(Duration::from_secs(5), || read(&log).lines().count() == 2),
        "{:?}",
        read(&log)
    );
    let text = read(&log);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    let ok = lines
        .iter()
        .find(|l| l["status"] == 201)
        .expect("the 201 line");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/json");
    assert_eq!(ok["query"], "q=2&status=201");
    assert_eq!(ok["header:x-request-id"], "abc-123");
    assert_eq!(ok["remote_addr"], "127.0.0.1");
    assert_eq!(ok["worker"], 1);
    assert!(ok["bytes"].as_u64().unwrap() > 0);
    assert!(ok["duration_us"].as_u64().is_some());
    let refused = lines
        .iter()
        .find(|l| l["status"] == 414)
        .expect("the 414 line");
    assert_eq!(refused["method"], serde_json::Value::Null);
    assert_eq!(refused["header:x-request-id"], serde_json::Value::Null);
}

/// Scrapes /metrics, checks every line is well-formed text format, and parses it.
fn scrape(addr: &str) -> Scrape {
    let (status, head, body) = get(addr, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let text = String::from_utf8(body).expect("utf-8");
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let name = words.next().unwrap();
            let kind = words.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        // name{label="value",...} number
        let (series, value) = line.rsplit_once(' ').expect(line);
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "{name} has no TYPE before it");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (key, quoted) = pair.split_once('=').expect(line);
                    assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(quoted.starts_with('"') && quoted.ends_with('"'), "{line}");
                }
            }
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("prometheus text format")
}

/// The value of a counter or gauge with the given labels (all others ignored).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

fn sum(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter_map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) => Some(v),
            _ => None,
        })
        .sum()
}

fn histogram_count(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .and_then(|s| match &s.value {
            Value::Histogram(buckets) => buckets.last().map(|b| b.count),
            _ => None,
        })
        .expect("histogram")
}

#[test]
fn metrics_parse_as_prometheus_text_and_their_counters_move() {
    let dir = temp_dir("metrics");
    let path = write_config(
        &dir,
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 2\n\
         [limits]\nrequest_line = 100\n[metrics]\nbind = \"127.0.0.1:0\"\n",
    );
    let server = Forkd::new().config(&path).start();
    let metrics = metrics_addr(&server);
    // The app's listener does not serve metrics, the metrics listener serves only them.
    let (status, _, body) = get(&server.addr, "/metrics").expect("app");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"path\":\"/metrics\""));
    assert_eq!(get(&metrics, "/").expect("404").0, 404);
    let first = scrape(&metrics);
    assert_eq!(value(&first, "forkd_requests_total", &[]), Some(1.0));
    assert_eq!(
        value(&first, "forkd_workers", &[("state", "ready")]),
        Some(2.0)
    );
    assert!(value(&first, "forkd_uptime_seconds", &[]).unwrap() >= 0.0);
    for pid in workers_of(server.pid()) {
        let pid = pid.to_string();
        assert!(value(&first, "forkd_worker_requests_total", &[("pid", &pid)]).is_some());
    }
    assert_eq!(sum(&first, "forkd_worker_requests_total"), 1.0);
    assert!(
        value(
            &first,
            "forkd_worker_requests_total",
            &[("generation", "1")]
        )
        .is_some(),
        "no generation label"
    );

    for _ in 0..30 {
        assert_eq!(get_with(&server.addr, "/?sleep_ms=1", ""), 200);
    }
    let (status, _, _) = get(&server.addr, &format!("/{}", "q".repeat(200))).expect("414");
    assert_eq!(status, 414);
    let after = scrape(&metrics);
    assert_eq!(value(&after, "forkd_requests_total", &[]), Some(31.0));
    assert_eq!(sum(&after, "forkd_worker_requests_total"), 31.0);
    assert_eq!(
        histogram_count(&after, "forkd_request_duration_seconds"),
        31.0
    );
    assert!(value(&after, "forkd_request_duration_seconds_sum", &[]).unwrap() >= 0.030);
    assert_eq!(
        value(
            &after,
            "forkd_requests_rejected_total",
            &[("limit", "request_line")]
        ),
        Some(1.0)
    );
    assert_eq!(sum(&after, "forkd_worker_requests_in_flight"), 0.0);

    // A reload replaces both workers; totals keep counting what they served.
    server.signal(Signal::SIGHUP);
    assert!(poll_until(Duration::from_secs(15), || {
        let s = scrape(&metrics);
        value(&s, "forkd_worker_restarts_total", &[("reason", "reload")]) == Some(2.0)
            && value(&s, "forkd_workers", &[("state", "ready")]) == Some(2.0)
            && value(&s, "forkd_workers", &[("state", "draining")]) == Some(0.0)
    }));
    let reloaded = scrape(&metrics);
    assert_eq!(value(&reloaded, "forkd_reloads_total", &[]), Some(1.0));
    assert_eq!(value(&reloaded, "forkd_requests_total", &[]), Some(31.0));
    assert_eq!(sum(&reloaded, "forkd_worker_requests_total"), 0.0);
    // Every worker's series carry its generation: all of them the reload's.
    let generations: Vec<_> = reloaded
        .samples
        .iter()
        .filter(|s| s.metric == "forkd_worker_requests_total")
        .map(|s| s.labels.get("generation").map(str::to_string))
        .collect();
    assert_eq!(generations, vec![Some("2".to_string()); 2]);
    assert_eq!(
        histogram_count(&reloaded, "forkd_request_duration_seconds"),
        31.0
    );

    // A crashed worker is counted as such.
    let victim = workers_of(server.pid())[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).expect("kill");
    assert!(poll_until(Duration::from_secs(15), || {
        value(
            &scrape(&metrics),
            "forkd_worker_restarts_total",
            &[("reason", "crash")],
        ) == Some(1.0)
    }));
    // In-flight requests show while they are served.
    let slow = {
        let addr = server.addr.clone();
        std::thread::spawn(move || get_with(&addr, "/?sleep_ms=1500", ""))
    };
    assert!(poll_until(Duration::from_secs(5), || sum(
        &scrape(&metrics),
        "forkd_worker_requests_in_flight"
    ) == 1.0));
    assert_eq!(slow.join().expect("slow request"), 200);
    let last = scrape(&metrics);
    assert_eq!(value(&last, "forkd_requests_total", &[]), Some(32.0));
}

#[test]
fn the_metrics_listener_moves_to_the_new_master_on_usr2() {
    let dir = temp_dir("metrics-usr2");
    let pidfile = dir.join("forkd.pid");
    let path = write_config(
        &dir,
        &format!(
            "app = \"hello\"\nbind = [\"127.0.0.1:0\"]\npidfile = {:?}\n[metrics]\nbind = \"127.0.0.1:0\"\n",
            pidfile.to_str().unwrap()
        ),
    );
    let server = Forkd::new().config(&path).start();
    let metrics = metrics_addr(&server);
    let old = server.pid();
    server.signal(Signal::SIGUSR2);
    assert!(
        poll_until(Duration::from_secs(20), || read_pid(&pidfile)
            .is_some_and(|pid| pid != old)),
        "{}",
        server.log()
    );
    let new = read_pid(&pidfile).expect("new master");
    let _new_master = PidGuard(new);
    server.expect_log("master exiting", Duration::from_secs(20));
    // Same address, now served by the new master's workers.
    let scraped = scrape(&metrics);
    let theirs: Vec<String> = workers_of(new).iter().map(|p| p.to_string()).collect();
    assert!(!theirs.is_empty());
    for pid in &theirs {
        assert!(
            value(&scraped, "forkd_worker_requests_total", &[("pid", pid)]).is_some(),
            "worker {pid} of the new master is not in the scrape"
        );
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(new), Signal::SIGQUIT);
    assert!(poll_until(Duration::from_secs(10), || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(new), None).is_err()
    }));
}

#[test]
fn scrapes_during_hups_all_get_answers() {
    let dir = temp_dir("metrics-hup");
    let path = write_config(
        &dir,
        "app = \"hello\"\nbind = [\"127.0.0.1:0\"]\nworkers = 2\n[metrics]\nbind = \"127.0.0.1:0\"\n",
    );
    let server = Forkd::new().config(&path).start();
    let metrics = metrics_addr(&server);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scrapers: Vec<_> = (0..4)
        .map(|_| {
            let (metrics, stop) = (metrics.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match get(&metrics, "/metrics") {
                        Ok((200, _, _)) => ok += 1,
                        other => failed.push(format!("{:?}", other.map(|r| r.0))),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    for generation in 2..=6 {
        server.signal(Signal::SIGHUP);
        server.expect_log(&format!("generation={generation}"), Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for scraper in scrapers {
        let (o, f) = scraper.join().expect("scraper");
        ok += o;
        failed.extend(f);
    }
    assert!(ok > 0);
    assert!(
        failed.is_empty(),
        "{} of {} scrapes failed during HUPs: {failed:?}\n{}",
        failed.len(),
        ok as usize + failed.len(),
        server.log()
    );
}

#[test]
fn an_idle_scraper_connection_does_not_hold_up_a_workers_drain() {
    let dir = temp_dir("metrics-idle-drain");
    let path = write_config(
        &dir,
        "app = \"hello\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[metrics]\nbind = \"127.0.0.1:0\"\n",
    );
    let server = Forkd::new().config(&path).start();
    let metrics = metrics_addr(&server);
    let old = workers_of(server.pid());
    assert_eq!(old.len(), 1, "{}", server.log());
    // A scraper's keep-alive connection (as Prometheus keeps one), left idle after a scrape.
    let stream = std::net::TcpStream::connect(&metrics).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    std::io::Write::write_all(&mut writer, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (status, close, _) = read_response_with_body(&mut reader).expect("scrape");
    assert_eq!((status, close), (200, false));

    let hup = Instant::now();
    server.signal(Signal::SIGHUP);
    let gone = poll_until(Duration::from_secs(15), || {
        !workers_of(server.pid()).contains(&old[0])
    });
    let took = hup.elapsed();
    assert!(gone, "the old worker never exited\n{}", server.log());
    // Before: the drain waited for the idle connection's 5 s read timeout (6 s at most).
    assert!(
        took < Duration::from_secs(3),
        "the old worker took {took:?} to drain with an idle metrics connection\n{}",
        server.log()
    );
    // The idle connection was closed, not left to hang: the client reads EOF.
    let mut rest = Vec::new();
    let read = std::io::Read::read_to_end(&mut reader, &mut rest);
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
}
