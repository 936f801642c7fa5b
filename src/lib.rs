//! doris-fe-proxy: a Pingora proxy in front of an Apache Doris FE cluster that serves
//! `GET /api/get_small_file` from a store with an in-memory cache and forwards every other
//! request to the FEs.
//!
//! To mount the small-file endpoint in another Pingora proxy, build a
//! [`small_file::SmallFileHandler`] and call its `handle` from `request_filter`.

pub mod access_log;
pub mod cache;
pub mod config;
pub mod envelope;
pub mod fallback;
pub mod fe_proxy;
pub mod file_id;
pub mod health;
pub mod loader;
pub mod log_limit;
pub mod metrics;
pub mod server;
pub mod small_file;
pub mod store;
pub mod token;
