//! `echo`: describes the request as JSON. Query parameters steer it for tests:
//! `sleep_ms=N` (async wait), `block_ms=N` (blocks the worker thread, to trip `timeout`),
//! `status=N`, `bytes=N` (an N-byte body instead of JSON), `leak_kb=N` (a test aid for
//! `max_worker_memory`: keeps N KiB, written to so they are resident, for the life of the
//! worker process; at most 64 MiB a request). Besides the contract's fields
//! (`method`, `path`, `query`, `headers`, `body_bytes`, `remote_addr`, `pid`) the JSON
//! carries `scheme` (`https` over TLS, or when a trusted proxy says so), `version`
//! (`HTTP/1.1`, `HTTP/2.0`), `tls_server_name` (the SNI a TLS client sent) and, with a
//! verified TLS client certificate, `client_cert_subject`.

use crate::app::{
    respond, ClientAddr, ClientCertSubject, Request, Response, Scheme, TlsServerName,
};
use http_body_util::BodyExt;
use std::time::Duration;

/// Largest `bytes=N` echo produces, so a typo cannot exhaust memory.
const MAX_ECHO_BYTES: u64 = 64 * 1024 * 1024;

/// Largest `leak_kb=N` one request may keep (64 MiB).
const MAX_LEAK_KB: u64 = 64 * 1024;

/// What `leak_kb=N` keeps: a leak on purpose, to make a worker's RSS grow in tests.
static LEAKED: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Keeps `kb` KiB resident until the process exits.
fn leak(kb: u64) {
    // Non-zero bytes: every page is written, so it counts in the RSS.
    let block = vec![0xA5u8; (kb * 1024) as usize];
    if let Ok(mut leaked) = LEAKED.lock() {
        leaked.push(block);
    }
}

pub async fn echo(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_string();
    let mut status = 200u16;
    let mut bytes: Option<u64> = None;
    for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        let number = value.parse::<u64>();
        match (key, number) {
            ("sleep_ms", Ok(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
            ("block_ms", Ok(ms)) => std::thread::sleep(Duration::from_millis(ms)),
            ("status", Ok(code)) if (200..=999).contains(&code) => status = code as u16,
            ("bytes", Ok(n)) if n <= MAX_ECHO_BYTES => bytes = Some(n),
            ("leak_kb", Ok(kb)) if kb <= MAX_LEAK_KB => leak(kb),
            ("sleep_ms" | "block_ms" | "status" | "bytes" | "leak_kb", _) => {
                return respond(
                    400,
                    "text/plain",
                    format!("bad query parameter {key}={value}\n"),
                );
            }
            _ => {}
        }
    }
    let mut body_bytes = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(e) => return respond(400, "text/plain", format!("error reading body: {e}\n")),
        }
    }
    if let Some(n) = bytes {
        return respond(status, "application/octet-stream", vec![b'x'; n as usize]);
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|name| {
            let values: Vec<&str> = parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or(""))
                .collect();
            (
                name.as_str().to_string(),
                serde_json::Value::from(values.join(", ")),
            )
        })
        .collect();
    let remote = parts
        .extensions
        .get::<ClientAddr>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let scheme = parts.extensions.get::<Scheme>().map_or("http", |s| s.0);
    let mut json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": query,
        "headers": headers,
        "body_bytes": body_bytes,
        "remote_addr": remote,
        "scheme": scheme,
        "pid": std::process::id(),
        "version": format!("{:?}", parts.version),
    });
    if let Some(name) = parts.extensions.get::<TlsServerName>() {
        json["tls_server_name"] = serde_json::Value::from(&*name.0);
    }
    if let Some(subject) = parts.extensions.get::<ClientCertSubject>() {
        json["client_cert_subject"] = serde_json::Value::from(subject.0.clone());
    }
    respond(status, "application/json", format!("{json}\n"))
}
