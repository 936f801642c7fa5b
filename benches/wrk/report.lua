-- Prints one line that benches/load.sh parses after a wrk run: the request count, the run
-- time and the latency percentiles in microseconds, and the error counts by kind.
-- `status_errors` counts responses with a status of 400 or more.
function done(summary, latency, requests)
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d connect_errors=%d read_errors=%d write_errors=%d status_errors=%d timeouts=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
