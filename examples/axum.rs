//! An axum app served by forkd: the `Router` is handed to forkd as it is, with no
//! adapter code, and forkd supplies the command line, config file, signals and
//! supervision. Each worker builds the router and its state after the fork, so the
//! state (here a counter; a database pool in a real app) is the worker's own. Run it
//! like forkd itself:
//!
//!     cargo run --example axum -- -b 127.0.0.1:8000 -w 2
//!
//! Routes:
//!
//! - `GET /`: a plain-text greeting with the worker's pid;
//! - `GET /hello/{name}?greeting=...`: JSON, from the `Path`, `Query` and `State`
//!   extractors;
//! - `POST /echo`: the JSON object posted, returned with the size of its `items`;
//! - `GET /stream?chunks=N`: a body streamed as N chunks, produced one at a time;
//! - `GET /client`: the client's address as forkd reports it (an `Extension`).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use forkd::app::ClientAddr;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One worker's state, built after the fork.
struct Worker {
    pid: u32,
    served: AtomicU64,
}

type Shared = State<Arc<Worker>>;

fn main() -> std::process::ExitCode {
    forkd::run_service(|| async {
        let worker = Arc::new(Worker {
            pid: std::process::id(),
            served: AtomicU64::new(0),
        });
        Ok(Router::new()
            .route("/", get(index))
            .route("/hello/{name}", get(hello))
            .route("/echo", post(echo))
            .route("/stream", get(stream))
            .route("/client", get(client))
            .with_state(worker))
    })
}

async fn index(State(worker): Shared) -> String {
    worker.served.fetch_add(1, Ordering::Relaxed);
    format!("hello from worker {}\n", worker.pid)
}

#[derive(Deserialize)]
struct Greeting {
    greeting: Option<String>,
}

#[derive(Serialize)]
struct Hello {
    message: String,
    pid: u32,
    served: u64,
}

async fn hello(
    State(worker): Shared,
    Path(name): Path<String>,
    Query(query): Query<Greeting>,
) -> Json<Hello> {
    let served = worker.served.fetch_add(1, Ordering::Relaxed) + 1;
    let greeting = query.greeting.as_deref().unwrap_or("hello");
    Json(Hello {
        message: format!("{greeting}, {name}"),
        pid: worker.pid,
        served,
    })
}

#[derive(Deserialize, Serialize)]
struct Order {
    id: u64,
    items: Vec<String>,
    #[serde(default)]
    count: usize,
}

async fn echo(Json(mut order): Json<Order>) -> Json<Order> {
    order.count = order.items.len();
    Json(order)
}

#[derive(Deserialize)]
struct Chunks {
    chunks: Option<u32>,
}

async fn stream(Query(query): Query<Chunks>) -> Body {
    let total = query.chunks.unwrap_or(5).min(10_000);
    let chunks = futures_util::stream::unfold(0, move |i| async move {
        if i == total {
            return None;
        }
        // Produced one at a time, as a query's rows would be.
        tokio::task::yield_now().await;
        Some((Ok::<_, Infallible>(format!("chunk {i}\n")), i + 1))
    });
    Body::from_stream(chunks)
}

async fn client(Extension(addr): Extension<ClientAddr>) -> String {
    format!("{}\n", addr.0)
}
