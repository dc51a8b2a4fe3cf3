//! The library serving a tower service: the axum example (examples/axum.rs), built and
//! run as a user would, answers each of its routes (JSON, extractors, a streamed body,
//! forkd's client address) and loses no request across HUPs under keep-alive load, as
//! `tests/all/zero_downtime.rs` checks for the built-in `hello`.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use std::time::Duration;

/// The body of a `Transfer-Encoding: chunked` response, decoded.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_line = std::str::from_utf8(&raw[..end]).unwrap();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        raw = &raw[end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n", "chunk not ended by CRLF");
        raw = &raw[size + 2..];
    }
}

fn post_json(addr: &str, path: &str, body: &str) -> (u16, String, Vec<u8>) {
    request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap()
}

#[test]
fn the_axum_example_answers_its_routes() {
    let server = Forkd::program(axum_example()).local().workers(2).start();
    let addr = &server.addr;
    assert!(
        poll_until(Duration::from_secs(10), || workers_of(server.pid()).len()
            == 2),
        "two workers did not start:\n{}",
        server.log()
    );
    let workers = workers_of(server.pid());

    let (status, _, body) = get(addr, "/").unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let pid: i32 = text
        .trim()
        .strip_prefix("hello from worker ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected greeting {text:?}"));
    assert!(
        workers.contains(&pid),
        "pid {pid} is not a worker {workers:?}"
    );

    // Path, Query and State extractors, a JSON answer.
    let (status, head, body) = get(addr, "/hello/ann?greeting=hi").unwrap();
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let hello = json(&body);
    assert_eq!(hello["message"], "hi, ann");
    let pid = hello["pid"].as_i64().unwrap() as i32;
    assert!(
        workers.contains(&pid),
        "pid {pid} is not a worker {workers:?}"
    );
    assert!(hello["served"].as_u64().unwrap() >= 1);
    let (_, _, body) = get(addr, "/hello/bob").unwrap();
    assert_eq!(json(&body)["message"], "hello, bob");

    // A JSON request body, read through forkd's RequestBody.
    let (status, _, body) = post_json(addr, "/echo", r#"{"id":7,"items":["a","b","c"]}"#);
    assert_eq!(status, 200);
    let order = json(&body);
    assert_eq!(order["id"], 7);
    assert_eq!(order["count"], 3);
    assert_eq!(order["items"][2], "c");
    let (status, _, _) = post_json(addr, "/echo", r#"{"id": "#);
    assert!((400..500).contains(&status), "bad JSON got {status}");

    // A streamed body: chunked, every chunk in order.
    let (status, head, body) = get(addr, "/stream?chunks=200").unwrap();
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let expected: String = (0..200).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(String::from_utf8(dechunk(&body)).unwrap(), expected);

    // forkd's request extensions reach axum's extractors.
    let (status, _, body) = get(addr, "/client").unwrap();
    assert_eq!(status, 200);
    let client = String::from_utf8(body).unwrap();
    assert!(
        client.starts_with("127.0.0.1:"),
        "client address {client:?}"
    );

    let (status, _, _) = get(addr, "/no/such/route").unwrap();
    assert_eq!(status, 404);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn twelve_hups_under_keepalive_load_drop_nothing_for_the_axum_example() {
    let server = Forkd::program(axum_example()).local().workers(2).start();
    hups_under_load(&server, 12, 48, 2);
}

/// POSTs `body` over HTTP/2 (prior knowledge) in 1 KiB data frames and without a
/// content-length: (status, response body).
async fn h2_post(addr: &str, path: &str, body: String) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt, StreamBody};
    let mut sender = h2_client(addr).await;
    let req = hyper::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(StreamBody::new(futures_util::stream::iter(
            bytes::Bytes::from(body)
                .chunks(1024)
                .map(|c| {
                    Ok::<_, std::io::Error>(hyper::body::Frame::data(
                        bytes::Bytes::copy_from_slice(c),
                    ))
                })
                .collect::<Vec<_>>(),
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

#[test]
fn forkd_limits_hold_for_the_routers_request_bodies_over_http1_and_http2() {
    let server = Forkd::program(axum_example())
        .local()
        .workers(1)
        .env("FORKD_LIMITS_MAX_BODY", "4096")
        .start();
    let addr = server.addr.clone();
    let items: Vec<String> = (0..100).map(|i| format!("{i:0>100}")).collect();
    let big = serde_json::json!({ "id": 1, "items": items }).to_string();
    assert!(big.len() > 4096);
    let small = r#"{"id":2,"items":["a"]}"#.to_string();

    let (status, _, _) = post_json(&addr, "/echo", &big);
    assert_eq!(status, 413, "HTTP/1 body past limits.max_body");
    let (status, _, body) = post_json(&addr, "/echo", &small);
    assert_eq!((status, json(&body)["count"].clone()), (200, 1.into()));

    let runtime = runtime();
    runtime.block_on(async {
        // No content-length: the limit is enforced on the stream's data frames, by
        // forkd's RequestBody under axum's Json extractor.
        let (status, _) = h2_post(&addr, "/echo", big).await;
        assert_eq!(status, 413, "HTTP/2 body past limits.max_body");
        let (status, body) = h2_post(&addr, "/echo", small).await;
        assert_eq!((status, json(&body)["count"].clone()), (200, 1.into()));
    });
}
