//! Criterion benchmark of the small-file cache-hit path, from request bytes to response
//! bytes: parse the raw request with `httparse` into a `RequestHeader` as Pingora's HTTP/1
//! server does, build the response with `SmallFileHandler::respond` from a warm `FileCache`, and
//! serialize the status line, headers and body into one buffer.
//!
//! Run: `cargo bench --bench cache_hit`. The socket reads and writes, and Pingora's session
//! bookkeeping, are not part of it; the load tests measure those.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use doris_fe_proxy::cache::{CacheLimits, FileCache, Loader};
use doris_fe_proxy::config::ErrorStatus;
use doris_fe_proxy::loader::StoreLoader;
use doris_fe_proxy::metrics::{Metrics, Outcome};
use doris_fe_proxy::small_file::{SmallFileHandler, SmallFileResponse};
use doris_fe_proxy::store::{FileStore, SmallFile};
use doris_fe_proxy::token::ClusterToken;
use object_store::memory::InMemory;
use object_store::path::Path;
use pingora::http::RequestHeader;
use tokio::runtime::Runtime;

const TOKEN: &str = "5f0c8a54-2d7e-4c1b-9a3e-b7d9e1f24c60";

/// The benchmarked files: id, name and size in bytes. The 700,000-byte file stands for a
/// large keystore, below the FE's default `max_small_file_size_bytes` of 1 MiB.
const FILES: [(i64, &str, usize); 3] = [
    (11001, "ca.pem", 1024),
    (11002, "client.key", 64 * 1024),
    (11004, "client keystore.jks", 700_000),
];

/// Builds the raw bytes of a request as a Doris BE sends it.
fn raw_request(token: &str, file_id: i64) -> Vec<u8> {
    format!(
        "GET /api/get_small_file?file_id={file_id}&token={token} HTTP/1.1\r\n\
         Host: 127.0.0.1:8030\r\n\
         Accept: */*\r\n\r\n"
    )
    .into_bytes()
}

/// Parses a complete request header the way Pingora's HTTP/1 server does, except that the
/// header values are copied instead of shared with the read buffer.
fn parse_request(raw: &[u8]) -> RequestHeader {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let status = parsed.parse(raw).expect("the benchmark request is valid");
    assert!(status.is_complete(), "the benchmark request is complete");

    let method = parsed.method.unwrap_or("");
    let path = parsed.path.unwrap_or("").as_bytes();
    let mut req = RequestHeader::build(method, path, Some(parsed.headers.len()))
        .expect("the benchmark request target is valid");
    for header in parsed.headers.iter() {
        req.append_header(header.name.to_owned(), header.value)
            .expect("the benchmark header values are valid");
    }
    req
}

/// Serializes a response as an HTTP/1.1 server writes it: status line, headers, blank
/// line, body.
fn serialize_response(response: &SmallFileResponse) -> Vec<u8> {
    let header = &response.header;
    let mut wire = Vec::with_capacity(256 + response.body.len());
    wire.extend_from_slice(b"HTTP/1.1 ");
    wire.extend_from_slice(header.status.as_str().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(header.get_reason_phrase().unwrap_or("").as_bytes());
    wire.extend_from_slice(b"\r\n");
    header.header_to_h1_wire(&mut wire);
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(&response.body);
    wire
}

/// Builds a handler over an in-memory store that contains [`FILES`], with their bytes in the
/// cache already.
fn warm_handler(runtime: &Runtime) -> SmallFileHandler {
    let store = FileStore::new(
        Arc::new(InMemory::new()),
        Path::from("small_files"),
        Duration::from_secs(10),
        1 << 20,
    );
    let metrics = Arc::new(Metrics::unregistered().expect("metrics build"));
    let loader: Arc<dyn Loader> =
        Arc::new(StoreLoader::new(store.clone(), None, Arc::clone(&metrics)));
    let limits = CacheLimits {
        max_bytes: 64 << 20,
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(5),
        negative_max_entries: 1000,
    };
    let cache = Arc::new(FileCache::new(limits, loader, Arc::clone(&metrics)));
    let handler = SmallFileHandler::new(
        Arc::new(ClusterToken::fixed(TOKEN)),
        cache,
        metrics,
        ErrorStatus::Doris,
    );

    runtime.block_on(async {
        for (id, name, size) in FILES {
            let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let file = SmallFile::new(name, Bytes::from(bytes));
            store.put_if_absent(id, &file).await.expect("store write");

            let req = parse_request(&raw_request(TOKEN, id));
            let first = handler.respond(&req).await;
            assert_eq!(first.outcome, Outcome::MissStore, "first request for {id}");
            let second = handler.respond(&req).await;
            assert_eq!(second.outcome, Outcome::Hit, "second request for {id}");
            assert_eq!(second.body.len(), size, "body of {id}");
        }
    });
    handler
}

fn cache_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let handler = warm_handler(&runtime);
    let mut group = c.benchmark_group("cache_hit");

    for (id, _, size) in FILES {
        let raw = raw_request(TOKEN, id);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("file_{size}_bytes"), |b| {
            b.to_async(&runtime).iter(|| async {
                let req = parse_request(&raw);
                let response = handler.respond(&req).await;
                serialize_response(&response)
            });
        });
    }

    let raw = raw_request("not-the-token", FILES[0].0);
    let rejected = runtime.block_on(handler.respond(&parse_request(&raw)));
    assert_eq!(rejected.outcome, Outcome::InvalidToken);
    group.throughput(Throughput::Elements(1));
    group.bench_function("error_invalid_token", |b| {
        b.to_async(&runtime).iter(|| async {
            let req = parse_request(&raw);
            let response = handler.respond(&req).await;
            serialize_response(&response)
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = cache_hit
}
criterion_main!(benches);
