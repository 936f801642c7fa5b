//! Support code for the integration tests: real servers on loopback and a raw HTTP client.
//!
//! Every test file that needs it declares `mod support;` and uses the parts below.
//!
//! - [`http`]: [`free_port`], the raw HTTP/1.1 client [`raw_request`] / [`get`] /
//!   [`RawConnection`] that sends request bytes exactly as written, and [`wait_for`].
//! - [`fake_fe`]: [`FakeFe`], a hyper server that plays a Doris FE (health, small files,
//!   stream load 307, `/check`, `/image`, uploads, hanging requests) and records every
//!   request it gets.
//! - [`proxy`]: [`ProxyProcess`], the real `doris-fe-proxy` binary started from a YAML file
//!   that [`ProxyBuilder`] writes with test defaults.
//! - [`s3`]: [`S3Server`], an `s3s-fs` process that serves a folder over the S3 protocol;
//!   [`s3_proxy`]: the proxy setup shared by the S3 store tests.
//! - [`cases`]: the shared small-file cases (`requests.tsv`, the case files, the token).
//!
//! Every server and process listens on 127.0.0.1 and is stopped when its handle is dropped,
//! also when a test panics.

// Each test binary compiles this module and uses only a part of it.
#![allow(dead_code, unused_imports)]

pub mod cases;
pub mod checks;
pub mod fake_fe;
pub mod http;
pub mod load;
pub mod proxy;
pub mod relay;
pub mod s3;
pub mod s3_proxy;
pub mod scripted_fe;
pub mod second_proxy;
pub mod streaming;

pub use fake_fe::{FakeFe, FakeFeBuilder, FeHealth, RecordedRequest};
pub use http::{
    RawConnection, RawResponse, free_port, get, raw_request, try_raw_request, wait_for,
};
pub use proxy::{ProxyBuilder, ProxyProcess};
pub use s3::S3Server;

/// The cluster token that [`FakeFe`] and [`ProxyBuilder`] use unless a test sets another;
/// a UUID like the tokens FEs generate.
pub const TEST_TOKEN: &str = "0b6c3a1e-7d2f-4e59-8a14-c3f5e9d2b7a0";
