//! Operations tests against the real binary: the metrics text passes `promtool check metrics`,
//! the Grafana dashboard's expressions pass `promtool check rules` and use only exported
//! metrics, no log line contains a token, and the token is reloaded from a changed VERSION file.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::cases;
use support::fake_fe::FAKE_FE_HEADER;
use support::http::wait_until;
use support::{FakeFe, ProxyBuilder, ProxyProcess, RawResponse, TEST_TOKEN};

/// How long a test waits for the proxy to count the fake FE as healthy.
const FE_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a test waits for a reloaded token or a log line.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The case certificate, copied into the proxy's store.
const STORE_ID: i64 = 11002;
/// An id that only the fake FE has, so the proxy fetches it from there (`miss_fe`).
const FE_ONLY_ID: i64 = 730517;
/// An id that neither the store nor the fake FE has (`not_found`).
const UNKNOWN_ID: i64 = 880341;
/// An id with two objects in the store, which the proxy refuses to serve (`error`).
const AMBIGUOUS_ID: i64 = 640293;

/// A second secret, sent in the query of a request that the proxy forwards to the FE.
const OTHER_SECRET: &str = "bootstrap-secret-6d1f0c2a9b";
/// A wrong token, sent to `/api/get_small_file`.
const WRONG_TOKEN: &str = "wrong-token-51e2c7a4d8";
/// The token written to the VERSION file by the tests that reload it.
const RELOADED_TOKEN: &str = "7c9e2b14-0f3a-4d6e-b5c8-2a1f9e7d3b60";

const OUTCOMES: [&str; 7] = [
    "hit",
    "miss_store",
    "miss_fe",
    "not_found",
    "bad_request",
    "invalid_token",
    "error",
];

fn small_file_target(token: &str, id: i64) -> String {
    format!("/api/get_small_file?token={token}&file_id={id}")
}

fn version_text(token: &str) -> String {
    format!("#Fri Dec 04 10:12:44 UTC 2026\nclusterId=1529384712\ntoken={token}\n")
}

/// Returns the `data` field of an FE error envelope; panics if the body is not one.
fn envelope_data(response: &RawResponse) -> String {
    let json = response.json();
    json["data"]
        .as_str()
        .unwrap_or_else(|| panic!("no string `data` in {}", response.body_text()))
        .to_string()
}

fn assert_case_file(response: &RawResponse, id: i64, what: &str) {
    let expected = cases::case_file(id);
    assert_eq!(response.status, 200, "{what}: {}", response.body_text());
    response.assert_body(&expected.bytes, what);
}

/// Runs `promtool` with `args` and `stdin`; panics with the install hint if it is missing.
fn promtool(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); install it with: apt-get install prometheus")
        });
    let mut input = child.stdin.take().expect("promtool stdin is piped");
    input.write_all(stdin).expect("cannot write to promtool");
    drop(input);
    child.wait_with_output().expect("cannot wait for promtool")
}

fn output_text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A proxy after one request of every small-file outcome, a forwarded request and a token
/// reload, with the fake FE it forwards to.
struct Scraped {
    _fe: FakeFe,
    _proxy: ProxyProcess,
    metrics: String,
}

/// Starts a proxy whose token comes from a VERSION file, sends one request of every
/// small-file outcome and a forwarded one, reloads the token, and scrapes the metrics.
fn scrape_after_every_outcome() -> Scraped {
    let fe_files = tempfile::tempdir().unwrap();
    let fe_file = fe_files.path().join(FE_ONLY_ID.to_string());
    std::fs::create_dir(&fe_file).unwrap();
    std::fs::write(fe_file.join("fe-only.pem"), b"only on the FE\n").unwrap();
    let fe = FakeFe::builder("metrics-fe").files(fe_files.path()).start();

    let builder = ProxyBuilder::new()
        .fe(&fe)
        .set("small_file.token_reload_interval_ms", "200");
    let store = builder.dir().join("store");
    cases::write_store_file(&store, &cases::case_file(STORE_ID));
    let ambiguous = store.join(AMBIGUOUS_ID.to_string());
    std::fs::create_dir(&ambiguous).unwrap();
    std::fs::write(ambiguous.join("a.pem"), b"a").unwrap();
    std::fs::write(ambiguous.join("b.pem"), b"b").unwrap();
    let version = builder.dir().join("VERSION");
    std::fs::write(&version, version_text(TEST_TOKEN)).unwrap();
    let proxy = builder.token_version_file(&version).start();
    assert!(
        proxy.wait_until_forwarding_to(&fe, FE_READY_TIMEOUT),
        "the proxy did not forward to the fake FE within {FE_READY_TIMEOUT:?}"
    );

    let store_target = small_file_target(TEST_TOKEN, STORE_ID);
    assert_case_file(
        &proxy.get(&store_target),
        STORE_ID,
        "first request (miss_store)",
    );
    assert_case_file(&proxy.get(&store_target), STORE_ID, "second request (hit)");
    let from_fe = proxy.get(&small_file_target(TEST_TOKEN, FE_ONLY_ID));
    assert_eq!(from_fe.status, 200, "miss_fe: {}", from_fe.body_text());
    from_fe.assert_body(b"only on the FE\n", "miss_fe");
    let unknown = proxy.get(&small_file_target(TEST_TOKEN, UNKNOWN_ID));
    assert_eq!(envelope_data(&unknown), "File not found or is not content");
    let missing = proxy.get("/api/get_small_file?file_id=1");
    assert!(
        envelope_data(&missing).starts_with("Missing parameter"),
        "{}",
        missing.body_text()
    );
    let wrong = proxy.get(&small_file_target(WRONG_TOKEN, STORE_ID));
    assert_eq!(envelope_data(&wrong), "Invalid token");
    let ambiguous = proxy.get(&small_file_target(TEST_TOKEN, AMBIGUOUS_ID));
    assert_eq!(
        envelope_data(&ambiguous),
        "Failed to get small file, please retry later"
    );
    let forwarded = proxy.get("/api/bootstrap?cluster_id=1");
    assert_eq!(forwarded.status, 200, "{}", forwarded.body_text());
    assert_eq!(forwarded.header(FAKE_FE_HEADER), Some("metrics-fe"));

    // A changed token in the VERSION file makes the `token_reloads_total` family appear.
    std::fs::write(&version, version_text(RELOADED_TOKEN)).unwrap();
    let reloaded = r#"doris_fe_proxy_token_reloads_total{result="ok"}"#;
    assert!(
        wait_until(RELOAD_TIMEOUT, || proxy.metric_value(reloaded) == Some(1.0)),
        "{reloaded} did not reach 1 within {RELOAD_TIMEOUT:?}; metrics:\n{}",
        proxy.metrics_text()
    );

    let metrics = proxy.metrics_text();
    Scraped {
        _fe: fe,
        _proxy: proxy,
        metrics,
    }
}

/// One sample line of the Prometheus text format: metric name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the sample lines of Prometheus text; panics on a line it cannot read.
fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("unreadable sample: {line}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inside) = rest.strip_prefix('{') {
        let mut chars = inside.char_indices();
        let mut label = String::new();
        let mut value = String::new();
        let mut in_value = false;
        loop {
            let (at, c) = chars.next()?;
            match (in_value, c) {
                (false, '}') => {
                    rest = &inside[at + 1..];
                    break;
                }
                (false, ',') => {}
                (false, '=') => {
                    let (_, quote) = chars.next()?;
                    if quote != '"' {
                        return None;
                    }
                    in_value = true;
                }
                (false, c) => label.push(c),
                (true, '\\') => {
                    let (_, escaped) = chars.next()?;
                    value.push(match escaped {
                        'n' => '\n',
                        other => other,
                    });
                }
                (true, '"') => {
                    labels.push((std::mem::take(&mut label), std::mem::take(&mut value)));
                    in_value = false;
                }
                (true, c) => value.push(c),
            }
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[test]
fn promtool_accepts_metrics_of_every_outcome() {
    let scraped = scrape_after_every_outcome();
    let text = &scraped.metrics;

    let check = promtool(&["check", "metrics"], text.as_bytes());
    assert!(
        check.status.success(),
        "promtool check metrics rejected the metrics text: {}\nmetrics:\n{text}",
        output_text(&check)
    );

    let samples = parse_samples(text);
    for outcome in OUTCOMES {
        let value = samples
            .iter()
            .find(|s| {
                s.name == "doris_fe_proxy_small_file_requests_total"
                    && s.labels == [("outcome".to_string(), outcome.to_string())]
            })
            .map(|s| s.value);
        assert!(
            value.is_some_and(|v| v >= 1.0),
            "outcome {outcome}: expected a value of at least 1, found {value:?}\nmetrics:\n{text}"
        );
    }
    let proxied = samples
        .iter()
        .find(|s| {
            s.name == "doris_fe_proxy_proxied_requests_total"
                && s.labels == [("status_class".to_string(), "2xx".to_string())]
        })
        .map(|s| s.value);
    assert!(
        proxied.is_some_and(|v| v >= 1.0),
        "proxied 2xx: {proxied:?}"
    );

    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|name| name.starts_with("doris_fe_proxy_"))
        .collect();
    assert!(
        families.len() >= 10,
        "expected the doris_fe_proxy_* families, found {families:?}"
    );
    for family in &families {
        let help = text
            .lines()
            .find_map(|line| line.strip_prefix(&format!("# HELP {family} ")));
        assert!(
            help.is_some_and(|h| !h.trim().is_empty()),
            "family {family} has no HELP line with text"
        );
    }

    let secrets = [TEST_TOKEN, RELOADED_TOKEN, WRONG_TOKEN];
    let ids = [STORE_ID, FE_ONLY_ID, UNKNOWN_ID, AMBIGUOUS_ID].map(|id| id.to_string());
    for sample in &samples {
        for (label, value) in &sample.labels {
            for id in &ids {
                assert!(
                    !value.contains(id.as_str()),
                    "{}: label {label}=\"{value}\" contains file id {id}",
                    sample.name
                );
            }
            for secret in secrets {
                assert!(
                    !value.contains(secret),
                    "{}: label {label} contains a token",
                    sample.name
                );
            }
        }
    }
    for secret in secrets {
        assert!(!text.contains(secret), "the metrics text contains a token");
    }
}

/// Collects the `expr` of every target of every panel, rows and nested panels included.
fn panel_expressions(value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    let Some(panels) = value.get("panels").and_then(|p| p.as_array()) else {
        return;
    };
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)").to_string();
        if let Some(targets) = panel.get("targets").and_then(|t| t.as_array()) {
            for target in targets {
                if let Some(expr) = target.get("expr").and_then(|e| e.as_str()) {
                    out.push((title.clone(), expr.to_string()));
                }
            }
        }
        panel_expressions(panel, out);
    }
}

/// Replaces the Grafana variables with values that Prometheus accepts.
fn substitute_grafana_variables(expr: &str) -> String {
    let mut text = expr.to_string();
    for (variable, value) in [
        ("$__rate_interval", "5m"),
        ("${__rate_interval}", "5m"),
        ("$__range", "1h"),
        ("${__range}", "1h"),
        ("${job}", ".*"),
        ("$job", ".*"),
        ("${instance}", ".*"),
        ("$instance", ".*"),
    ] {
        text = text.replace(variable, value);
    }
    text
}

/// Returns every `doris_fe_proxy_*` metric name in an expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in expr.match_indices("doris_fe_proxy_") {
        let preceded_by_name_char = expr[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if preceded_by_name_char {
            continue;
        }
        let name: String = expr[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[test]
fn dashboard_expressions_pass_promtool() {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/grafana-dashboard.json"
    ));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let dashboard: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut expressions = Vec::new();
    panel_expressions(&dashboard, &mut expressions);
    assert!(
        !expressions.is_empty(),
        "{} has no panel expressions",
        path.display()
    );

    let mut rules = Vec::new();
    for (index, (title, expr)) in expressions.iter().enumerate() {
        let substituted = substitute_grafana_variables(expr);
        assert!(
            !substituted.contains('$'),
            "panel {title:?}: a Grafana variable is left after substitution: {substituted}"
        );
        let mut rule = serde_yaml::Mapping::new();
        rule.insert(
            "record".into(),
            format!("dashboard:panel_expr_{index}").into(),
        );
        rule.insert("expr".into(), substituted.into());
        rules.push(serde_yaml::Value::Mapping(rule));
    }
    let mut group = serde_yaml::Mapping::new();
    group.insert("name".into(), "grafana_dashboard".into());
    group.insert("rules".into(), serde_yaml::Value::Sequence(rules));
    let mut file = serde_yaml::Mapping::new();
    file.insert(
        "groups".into(),
        serde_yaml::Value::Sequence(vec![serde_yaml::Value::Mapping(group)]),
    );
    let rules_dir = tempfile::tempdir().unwrap();
    let rules_path = rules_dir.path().join("dashboard-rules.yaml");
    let rules_text = serde_yaml::to_string(&file).unwrap();
    std::fs::write(&rules_path, &rules_text).unwrap();

    let check = promtool(
        &[
            "check",
            "rules",
            rules_path.to_str().expect("UTF-8 temp path"),
        ],
        b"",
    );
    assert!(
        check.status.success(),
        "promtool check rules rejected the dashboard expressions: {}\nrules:\n{rules_text}",
        output_text(&check)
    );

    let scraped = scrape_after_every_outcome();
    let exported: BTreeSet<String> = parse_samples(&scraped.metrics)
        .into_iter()
        .map(|s| s.name)
        .collect();
    for (title, expr) in &expressions {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "panel {title:?} uses no doris_fe_proxy_* metric: {expr}"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "panel {title:?} uses {name}, which the proxy does not export; exported: {exported:?}"
            );
        }
    }
}

/// Returns the lines of `log` that contain `secret`, for a failure message.
fn lines_with<'a>(log: &'a str, secret: &str) -> Vec<&'a str> {
    log.lines().filter(|line| line.contains(secret)).collect()
}

#[test]
fn log_contains_no_token() {
    let mut fe = FakeFe::start("redaction-fe");
    // A long health-check interval keeps the FE marked healthy after it stops, so requests
    // then fail while connecting to it, with the token in their query.
    let builder = ProxyBuilder::new()
        .fe(&fe)
        .set("fe.health_check.interval_ms", "60000")
        .set("fe.connect_timeout_ms", "500")
        .set("fe.read_timeout_ms", "1000");
    let store = builder.dir().join("store");
    cases::write_store_file(&store, &cases::case_file(STORE_ID));
    let proxy = builder.start();
    assert!(
        proxy.wait_until_forwarding_to(&fe, FE_READY_TIMEOUT),
        "the proxy did not forward to the fake FE within {FE_READY_TIMEOUT:?}"
    );

    // Served by the proxy itself: good token, wrong token, token in another position.
    assert_case_file(
        &proxy.get(&small_file_target(TEST_TOKEN, STORE_ID)),
        STORE_ID,
        "good token",
    );
    assert_eq!(
        envelope_data(&proxy.get(&small_file_target(WRONG_TOKEN, STORE_ID))),
        "Invalid token"
    );
    assert_case_file(
        &proxy.get(&format!(
            "/api/get_small_file?file_id={STORE_ID}&token={TEST_TOKEN}"
        )),
        STORE_ID,
        "token after file_id",
    );
    // Forwarded to the FE with a secret in the query.
    let bootstrap = proxy.get(&format!("/api/bootstrap?cluster_id=1&token={OTHER_SECRET}"));
    assert_eq!(bootstrap.status, 200, "{}", bootstrap.body_text());
    assert_eq!(bootstrap.header(FAKE_FE_HEADER), Some("redaction-fe"));
    // A store miss for which the FE returns "not found". The fallback fetch carries the token.
    assert_eq!(
        envelope_data(&proxy.get(&small_file_target(TEST_TOKEN, UNKNOWN_ID))),
        "File not found or is not content"
    );

    // The FE hangs on a forwarded request, then goes away: the upstream read fails.
    fe.set_hang_all(true);
    let hanging = format!("/api/bootstrap?token={OTHER_SECRET}&hang=1");
    let request = support::http::build_request("GET", &hanging, proxy.addr(), &[], b"");
    let hung = support::http::try_raw_request(proxy.addr(), &request, Duration::from_secs(5));
    assert!(
        hung.as_ref().is_ok_and(|r| r.status >= 500),
        "a forwarded request to a hanging FE must fail with a 5xx: {hung:?}"
    );
    fe.set_hang_all(false);
    fe.stop();

    // The FE is gone but still counts as healthy: connecting to it fails.
    let refused = proxy.get(&format!("/api/bootstrap?token={OTHER_SECRET}&after=stop"));
    assert_eq!(refused.status, 502, "{}", refused.body_text());
    let fallback_failed = proxy.get(&small_file_target(TEST_TOKEN, FE_ONLY_ID));
    assert_eq!(
        envelope_data(&fallback_failed),
        "Failed to get small file, please retry later"
    );

    let last_line = format!("file_id={FE_ONLY_ID}\"");
    assert!(
        proxy.wait_for_log(&last_line, RELOAD_TIMEOUT),
        "the access log has no line for the last request; log:\n{}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    for (description, secret) in [
        ("the cluster token", TEST_TOKEN),
        ("the bootstrap secret", OTHER_SECRET),
        ("the wrong token", WRONG_TOKEN),
    ] {
        let leaks = lines_with(&log, secret);
        assert!(
            leaks.is_empty(),
            "the log contains {description} in {} lines:\n{}",
            leaks.len(),
            leaks.join("\n")
        );
    }
    assert!(
        log.contains("token=***"),
        "the log has no redacted `token=***` target; log:\n{log}"
    );
}

/// Returns the `data` text of a small-file request with `token`, or `file` for a file.
fn small_file_answer(proxy: &ProxyProcess, token: &str) -> String {
    let response = proxy.get(&small_file_target(token, STORE_ID));
    if response.header("content-disposition").is_some() {
        return "file".to_string();
    }
    envelope_data(&response)
}

/// Waits until `token` gets the file and every token in `rejected` gets "Invalid token".
fn wait_for_token(proxy: &ProxyProcess, token: &str, rejected: &[&str], what: &str) {
    let mut last = Vec::new();
    let switched = wait_until(RELOAD_TIMEOUT, || {
        last = std::iter::once(small_file_answer(proxy, token))
            .chain(rejected.iter().map(|old| small_file_answer(proxy, old)))
            .collect();
        last[0] == "file" && last[1..].iter().all(|a| a == "Invalid token")
    });
    assert!(
        switched,
        "{what}: within {RELOAD_TIMEOUT:?} the new token did not get the file while the old \
         ones got \"Invalid token\"; last answers (new token first): {last:?}"
    );
}

fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

#[test]
fn token_reloads_from_version_file() {
    const FIRST: &str = "1d5f7a3c-6b2e-4f90-8c1d-3e5a7b9c0d12";
    const SECOND: &str = "2e6a8b4d-7c3f-4a01-9d2e-4f6b8c0d1e23";
    const THIRD: &str = "3f7b9c5e-8d4a-4b12-ae3f-5a7c9d1e2f34";

    let builder = ProxyBuilder::new().set("small_file.token_reload_interval_ms", "200");
    let store = builder.dir().join("store");
    cases::write_store_file(&store, &cases::case_file(STORE_ID));
    let meta = builder.dir().join("meta");
    std::fs::create_dir(&meta).unwrap();
    let version = meta.join("VERSION");
    std::fs::write(&version, version_text(FIRST)).unwrap();
    let proxy = builder.token_version_file(&version).start();

    assert_eq!(small_file_answer(&proxy, FIRST), "file");
    assert_eq!(small_file_answer(&proxy, SECOND), "Invalid token");

    // Rewritten in place.
    std::fs::write(&version, version_text(SECOND)).unwrap();
    wait_for_token(&proxy, SECOND, &[FIRST], "file rewritten in place");
    let reloads_ok = r#"doris_fe_proxy_token_reloads_total{result="ok"}"#;
    assert_eq!(
        proxy.metric_value(reloads_ok),
        Some(1.0),
        "after one reload"
    );

    // Replaced by renaming a new file over it, as editors and configuration tools do.
    write_atomically(&version, &version_text(THIRD));
    wait_for_token(&proxy, THIRD, &[FIRST, SECOND], "file renamed over");
    assert_eq!(
        proxy.metric_value(reloads_ok),
        Some(2.0),
        "after two reloads"
    );

    // A file without a token line keeps the last good token and logs a warning.
    write_atomically(&version, "#no token here\nclusterId=1529384712\n");
    assert!(
        proxy.wait_for_log("keeping the last good cluster token", RELOAD_TIMEOUT),
        "no warning about the file without a token; log:\n{}",
        proxy.log_text()
    );
    let warning = proxy
        .log_text()
        .lines()
        .find(|line| line.contains("keeping the last good cluster token"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(warning.contains("WARN"), "not a warning: {warning}");
    assert!(
        warning.contains(&version.display().to_string()),
        "the warning does not name the file: {warning}"
    );
    assert_eq!(small_file_answer(&proxy, THIRD), "file", "last good token");
    assert_eq!(small_file_answer(&proxy, SECOND), "Invalid token");
    let reloads_error = r#"doris_fe_proxy_token_reloads_total{result="error"}"#;
    assert!(
        proxy.metric_value(reloads_error).is_some_and(|v| v >= 1.0),
        "{reloads_error}: {:?}",
        proxy.metric_value(reloads_error)
    );
    assert_eq!(
        proxy.metric_value(reloads_ok),
        Some(2.0),
        "no reload without a token"
    );

    // A missing file is the same: the last good token stays.
    std::fs::remove_file(&version).unwrap();
    let errors_before = proxy.metric_value(reloads_error).unwrap_or(0.0);
    assert!(
        wait_until(RELOAD_TIMEOUT, || {
            proxy.metric_value(reloads_error).unwrap_or(0.0) > errors_before
        }),
        "a removed VERSION file was not counted as a reload error"
    );
    assert_eq!(small_file_answer(&proxy, THIRD), "file", "after removal");

    let log = proxy.log_text();
    for token in [FIRST, SECOND, THIRD] {
        assert!(
            lines_with(&log, token).is_empty(),
            "the log contains a token:\n{}",
            lines_with(&log, token).join("\n")
        );
    }
}
