//! Store faults against a real S3-protocol server (`s3s-fs` on loopback): S3 killed while
//! requests run, S3 responding slower than the store timeout, objects over the size limit or
//! ambiguous, and memory while many unknown ids are requested.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::cases::{self, CaseFile};
use support::checks::{
    NOT_FOUND_BODY, assert_internal_error, check_file, check_json, object_key, seed_bucket,
};
use support::http::{build_request, wait_until};
use support::relay::DelayRelay;
use support::s3_proxy::{
    CLIENT_TIMEOUT, HANG_MARGIN, PREFIX, SMALL_FILE_PATH, assert_file, get_file, metric,
    s3_proxy_builder, settled_metric, start_forwarding, target,
};
use support::{FakeFe, ProxyBuilder, ProxyProcess, RawConnection, RawResponse, S3Server};

/// Returns the ids that `fe` received a `GET /api/get_small_file` for.
fn fe_fetched_ids(fe: &FakeFe) -> Vec<i64> {
    fe.requests_to(SMALL_FILE_PATH)
        .iter()
        .filter(|r| r.method == "GET")
        .filter_map(|r| {
            r.target
                .split(['?', '&'])
                .find_map(|part| part.strip_prefix("file_id="))
                .and_then(|id| id.parse().ok())
        })
        .collect()
}

/// Writes `count` small files with ids from `first_id` into the store folder `folder`, each
/// with its own name and bytes, and returns them.
fn write_generated_files(folder: &Path, first_id: i64, count: usize) -> Vec<CaseFile> {
    (0..count)
        .map(|index| {
            let id = first_id + index as i64;
            let name = format!("cert-{id}.pem");
            let bytes = format!("generated certificate {id}\n")
                .repeat(1 + index % 7)
                .into_bytes();
            let dir = folder.join(id.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(&name), &bytes).unwrap();
            CaseFile { id, name, bytes }
        })
        .collect()
}

/// Requests of the loop that runs while S3 is killed, at most.
const LOAD_MAX_REQUESTS: usize = 2_000;

/// Time the loop runs, at most.
const LOAD_MAX_TIME: Duration = Duration::from_secs(20);

/// Requests done before S3 is killed, unless half of [`LOAD_MAX_TIME`] passes first.
const REQUESTS_BEFORE_KILL: usize = 400;

/// Client threads of the loop, each with one keep-alive connection.
const LOAD_WORKERS: usize = 4;

/// Files warmed into the cache before the loop.
const CACHED_FILES: usize = 5;

/// One request of the loop and how it went.
struct LoadRecord {
    id: i64,
    cached: bool,
    /// Whether S3 had been killed before the request was sent.
    after_kill: bool,
    error: Option<String>,
}

/// State shared by the loop workers.
struct LoadShared {
    done: AtomicUsize,
    next_uncached: AtomicUsize,
    killed: AtomicBool,
    records: Mutex<Vec<LoadRecord>>,
}

/// Runs one worker of the loop: alternately a cached and a fresh uncached id on one
/// keep-alive connection, until the request or time bound or the uncached files run out.
fn run_load_worker(
    proxy_addr: std::net::SocketAddr,
    worker: usize,
    cached: &[CaseFile],
    uncached: &[CaseFile],
    shared: &LoadShared,
    deadline: Instant,
) {
    let mut connection = RawConnection::open(proxy_addr, CLIENT_TIMEOUT).unwrap();
    let mut round = worker;
    while Instant::now() < deadline && shared.done.load(Ordering::SeqCst) < LOAD_MAX_REQUESTS {
        let use_cached = round.is_multiple_of(2);
        let file = if use_cached {
            &cached[round % cached.len()]
        } else {
            let index = shared.next_uncached.fetch_add(1, Ordering::SeqCst);
            let Some(file) = uncached.get(index) else {
                return;
            };
            file
        };
        round += 1;

        let after_kill = shared.killed.load(Ordering::SeqCst);
        let request = build_request("GET", &target(file.id), proxy_addr, &[], b"");
        let error = match connection.send(&request) {
            Ok(response) => check_file(&response, file).err(),
            Err(e) => Some(format!("transport error: {e}")),
        };
        let failed = error.is_some();
        shared.records.lock().unwrap().push(LoadRecord {
            id: file.id,
            cached: use_cached,
            after_kill,
            error,
        });
        shared.done.fetch_add(1, Ordering::SeqCst);
        if failed {
            // The connection state is unknown after a failure, so the worker stops here.
            return;
        }
    }
}

#[test]
fn store_killed_under_load() {
    let fe_files = tempfile::tempdir().unwrap();
    let uncached_count = LOAD_MAX_REQUESTS / 2 + LOAD_WORKERS;
    let files = write_generated_files(fe_files.path(), 70_000, CACHED_FILES + uncached_count);
    let (cached, uncached) = files.split_at(CACHED_FILES);

    let mut s3 = S3Server::start();
    seed_bucket(&s3, PREFIX, fe_files.path());
    let fe = FakeFe::builder("fe")
        .token(cases::token())
        .files(fe_files.path())
        .start();
    let proxy = start_forwarding(s3_proxy_builder(&s3), &fe);
    for file in cached {
        assert_file(&get_file(&proxy, file.id), file, "warming from S3");
    }

    let shared = Arc::new(LoadShared {
        done: AtomicUsize::new(0),
        next_uncached: AtomicUsize::new(0),
        killed: AtomicBool::new(false),
        records: Mutex::new(Vec::new()),
    });
    let deadline = Instant::now() + LOAD_MAX_TIME;
    let workers: Vec<_> = (0..LOAD_WORKERS)
        .map(|worker| {
            let shared = Arc::clone(&shared);
            let cached = cached.to_vec();
            let uncached = uncached.to_vec();
            let addr = proxy.addr();
            std::thread::spawn(move || {
                run_load_worker(addr, worker, &cached, &uncached, &shared, deadline)
            })
        })
        .collect();

    // S3 is killed after REQUESTS_BEFORE_KILL requests, or halfway through the time bound
    // on a machine too slow to reach that count.
    wait_until(LOAD_MAX_TIME / 2, || {
        shared.done.load(Ordering::SeqCst) >= REQUESTS_BEFORE_KILL
    });
    s3.kill();
    shared.killed.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().expect("load worker panicked");
    }

    let records = shared.records.lock().unwrap();
    let failures: Vec<String> = records
        .iter()
        .filter_map(|r| {
            r.error.as_ref().map(|e| {
                let kind = if r.cached { "cached" } else { "uncached" };
                let when = if r.after_kill { "after" } else { "before" };
                format!("{kind} file id {} {when} the kill: {e}", r.id)
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed:\n{}",
        failures.len(),
        records.len(),
        failures.join("\n")
    );

    let before_kill = records.iter().filter(|r| !r.after_kill).count();
    assert!(
        before_kill > 0,
        "no request finished in {:?} before S3 was killed",
        LOAD_MAX_TIME / 2
    );
    let after_kill: Vec<&LoadRecord> = records.iter().filter(|r| r.after_kill).collect();
    let cached_after = after_kill.iter().filter(|r| r.cached).count();
    let uncached_after: Vec<i64> = after_kill
        .iter()
        .filter(|r| !r.cached)
        .map(|r| r.id)
        .collect();
    assert!(
        cached_after > 0 && !uncached_after.is_empty(),
        "the loop ended before requests ran without S3: {cached_after} cached and {} \
         uncached after the kill, {} in all",
        uncached_after.len(),
        records.len()
    );

    let fetched = fe_fetched_ids(&fe);
    let not_fetched: Vec<i64> = uncached_after
        .iter()
        .copied()
        .filter(|id| !fetched.contains(id))
        .collect();
    assert!(
        not_fetched.is_empty(),
        "{} of {} uncached ids requested after the kill were served without an FE fetch: \
         {not_fetched:?}",
        not_fetched.len(),
        uncached_after.len()
    );
    let fallbacks = metric(
        &proxy,
        r#"doris_fe_proxy_fe_fallback_fetches_total{result="ok"}"#,
    );
    assert!(
        fallbacks >= uncached_after.len() as f64,
        "{fallbacks} FE fallback fetches for {} uncached ids after the kill",
        uncached_after.len()
    );
}

/// Store and FE timeouts of the slow-store tests, in milliseconds.
const SLOW_STORE_TIMEOUT_MS: u64 = 1000;
const SLOW_FE_TIMEOUT_MS: u64 = 2000;

/// Delay of every chunk to and from S3: four times the store timeout.
const SLOW_S3_DELAY: Duration = Duration::from_millis(4 * SLOW_STORE_TIMEOUT_MS);

/// Starts S3 with the case files behind a relay that does not delay yet, and returns both.
fn start_relayed_s3() -> (S3Server, DelayRelay) {
    let s3 = S3Server::start();
    seed_bucket(&s3, PREFIX, &cases::files_dir());
    let relay = DelayRelay::start(s3.addr(), Duration::ZERO);
    (s3, relay)
}

/// Returns a proxy builder whose S3 endpoint is `relay`, with the slow-store timeouts.
fn relayed_proxy_builder(s3: &S3Server, relay: &DelayRelay) -> ProxyBuilder {
    s3_proxy_builder(s3)
        .set(
            "small_file.s3.endpoint",
            &format!("\"{}\"", relay.endpoint()),
        )
        .set(
            "small_file.store_timeout_ms",
            &SLOW_STORE_TIMEOUT_MS.to_string(),
        )
        .set("small_file.fe_timeout_ms", &SLOW_FE_TIMEOUT_MS.to_string())
}

/// Returns the largest time one request may take while S3 is slow.
fn slow_bound() -> Duration {
    Duration::from_millis(SLOW_STORE_TIMEOUT_MS + SLOW_FE_TIMEOUT_MS) + HANG_MARGIN
}

/// Sends `GET` for `id` and asserts that it finished within [`slow_bound`].
fn get_bounded(proxy: &ProxyProcess, id: i64) -> RawResponse {
    let started = Instant::now();
    let response = get_file(proxy, id);
    let elapsed = started.elapsed();
    assert!(
        elapsed < slow_bound(),
        "file id {id} took {elapsed:?}, over store_timeout_ms + fe_timeout_ms + \
         {HANG_MARGIN:?} = {:?}: the request waited for more than the two timeouts",
        slow_bound()
    );
    response
}

#[test]
fn slow_store_falls_back_to_fe() {
    let (s3, relay) = start_relayed_s3();
    let fe = FakeFe::builder("fe")
        .token(cases::token())
        .files(cases::files_dir())
        .start();
    let proxy = start_forwarding(relayed_proxy_builder(&s3, &relay), &fe);
    let warmed = cases::case_file(11002);
    assert_file(
        &get_file(&proxy, warmed.id),
        &warmed,
        "warming through the relay",
    );

    relay.set_delay(SLOW_S3_DELAY);

    assert_file(
        &get_bounded(&proxy, warmed.id),
        &warmed,
        "cached file while S3 is slow",
    );
    for id in [11003, 11004] {
        let file = cases::case_file(id);
        let response = get_bounded(&proxy, id);
        assert_file(&response, &file, "uncached file while S3 is slow");
    }
    let fetched = fe_fetched_ids(&fe);
    for id in [11003, 11004] {
        assert!(
            fetched.contains(&id),
            "the FE recorded no GET {SMALL_FILE_PATH} for file id {id}; it got {fetched:?}"
        );
    }
    // The S3 client's own request timeout equals the store timeout, so a slow list ends
    // as either result, whichever timer fires first.
    let failed_lists = metric(
        &proxy,
        r#"doris_fe_proxy_store_operations_total{op="list",result="timeout"}"#,
    ) + metric(
        &proxy,
        r#"doris_fe_proxy_store_operations_total{op="list",result="error"}"#,
    );
    assert!(
        failed_lists >= 2.0,
        "{failed_lists} failed store lists for two uncached ids while S3 is slow"
    );
}

#[test]
fn slow_store_without_fe_is_internal_error() {
    let (s3, relay) = start_relayed_s3();
    relay.set_delay(SLOW_S3_DELAY);
    // The default backend is a port where nothing listens.
    let proxy = relayed_proxy_builder(&s3, &relay).start();

    for id in [11002, 11003, 11004] {
        let response = get_bounded(&proxy, id);
        assert_internal_error(&response, 200, &format!("file id {id} while S3 is slow"));
    }
    assert!(
        relay.connections() > 0,
        "the proxy never connected to S3 through the relay"
    );
}

/// `small_file.max_file_bytes` of the corrupt-object test.
const MAX_FILE_BYTES: usize = 1024;

/// Asserts the InternalError envelope and that the first 16 bytes of `object` are not in it.
fn assert_not_served(response: &RawResponse, object: &[u8], what: &str) {
    assert_internal_error(response, 200, what);
    assert!(
        !response
            .body
            .windows(16)
            .any(|window| window == &object[..16]),
        "{what}: the body carries bytes of the object: {}",
        response.body_text()
    );
}

#[test]
fn corrupt_objects_are_internal_error() {
    let s3 = S3Server::start();
    let oversized = vec![b'7'; MAX_FILE_BYTES + 1];
    let at_limit = vec![b'9'; MAX_FILE_BYTES];
    s3.put_object(&object_key(PREFIX, 42, "big.bin"), &oversized);
    s3.put_object(&object_key(PREFIX, 43, "limit.bin"), &at_limit);
    s3.put_object(&object_key(PREFIX, 41, "a.pem"), &[b'a'; 64]);
    s3.put_object(&object_key(PREFIX, 41, "b.pem"), &[b'b'; 64]);
    let fe = FakeFe::builder("fe").token(cases::token()).start();
    let builder =
        s3_proxy_builder(&s3).set("small_file.max_file_bytes", &MAX_FILE_BYTES.to_string());
    let proxy = start_forwarding(builder, &fe);

    for round in 0..2 {
        let response = get_file(&proxy, 42);
        assert_not_served(
            &response,
            &oversized,
            &format!("object over max_file_bytes, round {round}"),
        );
    }
    assert!(
        proxy.wait_for_log("file id 42", Duration::from_secs(5)),
        "no log line names file id 42; log:\n{}",
        proxy.log_text()
    );

    let response = get_file(&proxy, 41);
    assert_not_served(&response, &[b'a'; 64], "two objects under one id");
    assert!(
        proxy.wait_for_log("file id 41", Duration::from_secs(5)),
        "no log line names file id 41; log:\n{}",
        proxy.log_text()
    );

    let limit_file = CaseFile {
        id: 43,
        name: "limit.bin".to_string(),
        bytes: at_limit,
    };
    assert_file(
        &get_file(&proxy, 43),
        &limit_file,
        "object of exactly max_file_bytes",
    );
}

/// Distinct unknown ids requested in the memory test.
const UNKNOWN_IDS: i64 = 10_000;

/// Unknown ids requested before the first memory reading, so that lazily grown buffers and
/// pools are in place by then.
const WARM_UP_IDS: i64 = 1_000;

/// Client threads of the memory test, each with one keep-alive connection.
const MEMORY_WORKERS: i64 = 4;

/// Time the memory test's request loop may take, at most.
const MEMORY_LOOP_TIME: Duration = Duration::from_secs(240);

/// Allowed growth of the proxy's resident memory over the 10,000 unknown ids: far above
/// what 1,000 negative entries take, far below what 10,000 kept entries with their
/// per-id state would take if nothing were bounded.
const MAX_RSS_GROWTH_KIB: u64 = 32 * 1024;

/// Returns `VmRSS` of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{path} has no VmRSS line:\n{status}"))
}

/// Requests ids `first..first + count` over [`MEMORY_WORKERS`] keep-alive connections and
/// returns the failures.
fn request_unknown_ids(proxy: &ProxyProcess, first: i64, count: i64) -> Vec<String> {
    let deadline = Instant::now() + MEMORY_LOOP_TIME;
    let addr = proxy.addr();
    let workers: Vec<_> = (0..MEMORY_WORKERS)
        .map(|worker| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut connection = RawConnection::open(addr, CLIENT_TIMEOUT).unwrap();
                for id in (first + worker..first + count).step_by(MEMORY_WORKERS as usize) {
                    if Instant::now() >= deadline {
                        failures.push(format!(
                            "loop stopped at file id {id}: over {MEMORY_LOOP_TIME:?}"
                        ));
                        break;
                    }
                    let request = build_request("GET", &target(id), addr, &[], b"");
                    match connection.send(&request) {
                        Ok(response) => {
                            if let Err(reason) = check_json(&response, NOT_FOUND_BODY) {
                                failures.push(format!("file id {id}: {reason}"));
                            }
                        }
                        Err(e) => {
                            failures.push(format!("file id {id}: transport error: {e}"));
                            break;
                        }
                    }
                }
                failures
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|worker| worker.join().expect("request worker panicked"))
        .collect()
}

/// `small_file.cache.negative_max_entries` of the memory test.
const NEGATIVE_MAX_ENTRIES: i64 = 1_000;

#[test]
fn unknown_ids_keep_memory_bounded() {
    let s3 = S3Server::start();
    seed_bucket(&s3, PREFIX, &cases::files_dir());
    // Negative entries outlive the test, so only the entry bound can remove them.
    let proxy = s3_proxy_builder(&s3)
        .set("small_file.fallback_to_fe", "false")
        .set(
            "small_file.cache.negative_max_entries",
            &NEGATIVE_MAX_ENTRIES.to_string(),
        )
        .set("small_file.cache.negative_ttl_seconds", "3600")
        .start();

    let warm_up = request_unknown_ids(&proxy, 1_000_000, WARM_UP_IDS);
    assert!(
        warm_up.is_empty(),
        "warm-up failures:\n{}",
        warm_up.join("\n")
    );
    let before = rss_kib(proxy.pid());

    let failures = request_unknown_ids(&proxy, 2_000_000, UNKNOWN_IDS);
    let first_failures: Vec<&String> = failures.iter().take(20).collect();
    assert!(
        failures.is_empty(),
        "{} of {UNKNOWN_IDS} unknown ids failed, first ones:\n{first_failures:#?}",
        failures.len()
    );
    let after = rss_kib(proxy.pid());

    let not_found = settled_metric(
        &proxy,
        r#"doris_fe_proxy_small_file_requests_total{outcome="not_found"}"#,
        (WARM_UP_IDS + UNKNOWN_IDS) as f64,
    );
    assert_eq!(
        not_found,
        (WARM_UP_IDS + UNKNOWN_IDS) as f64,
        "requests answered as not found"
    );
    let growth = after.saturating_sub(before);
    assert!(
        growth < MAX_RSS_GROWTH_KIB,
        "VmRSS grew by {growth} KiB ({before} KiB to {after} KiB) over {UNKNOWN_IDS} unknown \
         ids, limit {MAX_RSS_GROWTH_KIB} KiB"
    );

    // The same ids again. The negative cache keeps at most NEGATIVE_MAX_ENTRIES of them
    // (twice that allows for evictions that moka applies late), so the rest go to the store.
    let list_series = r#"doris_fe_proxy_store_operations_total{op="list",result="ok"}"#;
    let lists_before = metric(&proxy, list_series);
    let repeated = request_unknown_ids(&proxy, 2_000_000, UNKNOWN_IDS);
    assert!(
        repeated.is_empty(),
        "{} of {UNKNOWN_IDS} repeated unknown ids failed",
        repeated.len()
    );
    let lists = metric(&proxy, list_series) - lists_before;
    let min_lists = (UNKNOWN_IDS - 2 * NEGATIVE_MAX_ENTRIES) as f64;
    assert!(
        lists >= min_lists,
        "only {lists} of {UNKNOWN_IDS} repeated unknown ids reached the store, expected at \
         least {min_lists}: the negative cache holds more than {NEGATIVE_MAX_ENTRIES} ids"
    );
}
