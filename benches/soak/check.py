#!/usr/bin/env python3
"""Evaluates one run of benches/soak.sh and prints its verdict and a Markdown summary.

Inputs: the sample CSV (elapsed_s, rss_kib, fds, ...), one wrk output file per request kind
(with the SOAK_KIND line of benches/soak/kind.lua), and the proxy's metrics text before and
after the load. The run passes when all of these hold:

- RSS and open fds grew less than GROWTH_LIMIT from the first sample at or after the
  baseline time to the last sample;
- every kind got only responses of its expected class, with no socket error, no timeout
  and no status of 400 or more;
- for each kind, the proxy's counter of the expected outcome grew by at least the number
  of responses wrk read. That growth plus the growth of every outcome that no kind should
  produce is at most the number of requests wrk sent. The difference is the requests in
  flight when wrk stopped, at most one per connection.

Exits 0 on PASS and 1 on FAIL.
"""

import argparse
import csv
import re
import sys

GROWTH_LIMIT = 0.10

# Kind -> the metric series whose growth counts that kind's requests.
EXPECTED_SERIES = {
    "hit": 'doris_fe_proxy_small_file_requests_total{outcome="hit"}',
    "miss": 'doris_fe_proxy_small_file_requests_total{outcome="not_found"}',
    "bad_token": 'doris_fe_proxy_small_file_requests_total{outcome="invalid_token"}',
    "bad_input": 'doris_fe_proxy_small_file_requests_total{outcome="bad_request"}',
    "proxied": 'doris_fe_proxy_proxied_requests_total{status_class="2xx"}',
}

# Series that no kind should make grow; any growth must be a request in flight at the stop.
UNEXPECTED_SERIES = {
    "small_file": [
        'doris_fe_proxy_small_file_requests_total{outcome="miss_store"}',
        'doris_fe_proxy_small_file_requests_total{outcome="miss_fe"}',
        'doris_fe_proxy_small_file_requests_total{outcome="error"}',
    ],
    "proxied": [
        'doris_fe_proxy_proxied_requests_total{status_class="%s"}' % c
        for c in ("1xx", "3xx", "4xx", "5xx", "error")
    ],
}

SOCKET_ERROR_FIELDS = ("connect_errors", "read_errors", "write_errors", "timeouts")


def parse_metrics(path):
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            series, _, value = line.rstrip("\n").rpartition(" ")
            try:
                values[series] = float(value)
            except ValueError:
                continue
    return values


def parse_wrk(path):
    fields, first_bad = None, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("SOAK_KIND "):
                fields = dict(re.findall(r"(\w+)=(\S+)", line))
            elif line.startswith("SOAK_FIRST_UNEXPECTED "):
                first_bad = line.split(" ", 1)[1].strip()
    if fields is None:
        return None, first_bad
    return {k: (v if k == "kind" else int(v)) for k, v in fields.items()}, first_bad


def growth(first, last):
    if first <= 0:
        return float("inf") if last > 0 else 0.0
    return (last - first) / first


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", required=True)
    parser.add_argument("--baseline-seconds", type=int, required=True)
    parser.add_argument("--metrics-before", required=True)
    parser.add_argument("--metrics-after", required=True)
    parser.add_argument("--wrk", action="append", default=[], metavar="KIND=FILE")
    parser.add_argument("--markdown", required=True, help="file to write the summary to")
    args = parser.parse_args()

    failures = []
    lines = []

    with open(args.samples, encoding="utf-8") as f:
        samples = [{k: int(v) for k, v in row.items()} for row in csv.DictReader(f)]
    baseline = next((s for s in samples if s["elapsed_s"] >= args.baseline_seconds), None)
    if baseline is None or baseline is samples[-1]:
        failures.append(
            f"no sample after the baseline at {args.baseline_seconds} s; run longer"
        )
    else:
        last = samples[-1]
        if "rss_anon_kib" in last:
            g = growth(baseline["rss_anon_kib"], last["rss_anon_kib"])
            lines.append(
                f"- RssAnon (reported, not judged): {baseline['rss_anon_kib']} at "
                f"{baseline['elapsed_s']} s, {last['rss_anon_kib']} at {last['elapsed_s']} s "
                f"({g:+.1%})"
            )
        for key, label in (("rss_kib", "RSS"), ("fds", "open fds")):
            g = growth(baseline[key], last[key])
            peak = max(s[key] for s in samples)
            verdict = "ok" if g < GROWTH_LIMIT else "FAIL"
            lines.append(
                f"- {label}: {baseline[key]} at {baseline['elapsed_s']} s, {last[key]} at "
                f"{last['elapsed_s']} s ({g:+.1%}), peak {peak}, first sample "
                f"{samples[0][key]}: {verdict}"
            )
            if g >= GROWTH_LIMIT:
                failures.append(f"{label} grew {g:.1%} (limit {GROWTH_LIMIT:.0%})")

    before = parse_metrics(args.metrics_before)
    after = parse_metrics(args.metrics_after)

    def delta(series):
        return int(after.get(series, 0) - before.get(series, 0))

    unexpected_growth = {
        group: sum(delta(s) for s in series) for group, series in UNEXPECTED_SERIES.items()
    }
    lines.append("")
    lines.append(
        "| kind | sent | responses read | expected class | other class | socket errors "
        "| status >= 400 | p50 / p99 ms | metric growth | result |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    total_read = 0
    for spec in args.wrk:
        kind, _, path = spec.partition("=")
        fields, first_bad = parse_wrk(path)
        if fields is None:
            failures.append(f"{kind}: wrk printed no SOAK_KIND line (see {path})")
            continue
        socket_errors = sum(fields[k] for k in SOCKET_ERROR_FIELDS)
        grown = delta(EXPECTED_SERIES[kind])
        group = "proxied" if kind == "proxied" else "small_file"
        problems = []
        if fields["unexpected"] > 0:
            problems.append(f"{fields['unexpected']} responses of another class ({first_bad})")
        if socket_errors > 0:
            problems.append(
                "socket errors " + ", ".join(f"{k} {fields[k]}" for k in SOCKET_ERROR_FIELDS)
            )
        if fields["status_errors"] > 0:
            problems.append(f"{fields['status_errors']} statuses of 400 or more")
        if grown < fields["completed"]:
            problems.append(
                f"{EXPECTED_SERIES[kind]} grew {grown}, less than the {fields['completed']} responses read"
            )
        if grown + unexpected_growth[group] > fields["sent"]:
            problems.append(
                f"{EXPECTED_SERIES[kind]} grew {grown} and unexpected {group} outcomes "
                f"{unexpected_growth[group]}, more than the {fields['sent']} requests sent"
            )
        total_read += fields["completed"]
        lines.append(
            f"| {kind} | {fields['sent']:,} | {fields['completed']:,} | {fields['expected']:,} "
            f"| {fields['unexpected']:,} | {socket_errors} | {fields['status_errors']} "
            f"| {fields['p50_us'] / 1000:.2f} / {fields['p99_us'] / 1000:.2f} | {grown:,} "
            f"| {'ok' if not problems else 'FAIL'} |"
        )
        failures.extend(f"{kind}: {p}" for p in problems)

    lines.append("")
    lines.append(
        "Outcomes that no kind should produce grew by: small-file miss_store + miss_fe + "
        f"error {unexpected_growth['small_file']}, proxied non-2xx "
        f"{unexpected_growth['proxied']}. Responses read in all: {total_read:,}."
    )
    verdict = "PASS" if not failures else "FAIL"
    lines.append("")
    lines.append(f"Result: {verdict}")
    for failure in failures:
        lines.append(f"- {failure}")

    text = "\n".join(lines) + "\n"
    with open(args.markdown, "w", encoding="utf-8") as f:
        f.write(text)
    sys.stdout.write(text)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
