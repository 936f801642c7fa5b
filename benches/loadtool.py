#!/usr/bin/env python3
"""Helpers of benches/load.sh: free ports, the test store, the cold-start client and the
result table. Standard library only, Python 3.9 or newer.

Subcommands:
  ports N                   print N free TCP ports on 127.0.0.1, one a line
  store DIR --keystore F    write the store that the load scenarios read
  cold-start ...            send N concurrent requests for one id, print one result line
  report RESULTS            print the Markdown result table and the PASS/MISS lines
"""

import argparse
import hashlib
import random
import resource
import selectors
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path

# Ids and names of the store; benches/load.sh uses the same values.
ONE_KIB_ID, ONE_KIB_NAME = 1001, "one-kib.bin"
SIXTY_FOUR_KIB_ID, SIXTY_FOUR_KIB_NAME = 1002, "sixty-four-kib.bin"
KEYSTORE_ID, KEYSTORE_NAME = 11004, "client keystore.jks"
WORKING_SET_FIRST_ID = 200000
WORKING_SET_NAME = "f.bin"
WORKING_SET_MIN_BYTES = 1024
WORKING_SET_MAX_BYTES = 16 * 1024


def free_ports(count):
    """Return `count` distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def cmd_ports(args):
    for port in free_ports(args.count):
        print(port)


def write_file(store, file_id, name, data):
    folder = store / str(file_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def cmd_store(args):
    """Write the `<id>/<name>` store: two fixed-size files, the keystore and the working set.
    The bytes come from a seeded generator, so every run serves the same content."""
    store = Path(args.dir)
    rng = random.Random(20240611)
    write_file(store, ONE_KIB_ID, ONE_KIB_NAME, rng.randbytes(1024))
    write_file(store, SIXTY_FOUR_KIB_ID, SIXTY_FOUR_KIB_NAME, rng.randbytes(64 * 1024))
    keystore_folder = store / str(KEYSTORE_ID)
    keystore_folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.keystore, keystore_folder / KEYSTORE_NAME)

    total = 0
    for offset in range(args.working_set_ids):
        size = rng.randint(WORKING_SET_MIN_BYTES, WORKING_SET_MAX_BYTES)
        write_file(store, WORKING_SET_FIRST_ID + offset, WORKING_SET_NAME, rng.randbytes(size))
        total += size
    print(f"working_set_ids={args.working_set_ids} working_set_bytes={total}")


def raise_open_file_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            sys.exit(f"cold-start: needs {needed} open files but the hard limit is {hard}; "
                     "raise it with `ulimit -Hn` as root")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class Response:
    """One response read from a socket: status, Content-Length and the MD5 of the body."""

    def __init__(self):
        self.head = bytearray()
        self.status = None
        self.length = None
        self.received = 0
        self.md5 = hashlib.md5()
        self.first_byte_at = None
        self.done_at = None

    def feed(self, chunk):
        """Add received bytes; return True once the whole body has arrived."""
        if self.first_byte_at is None:
            self.first_byte_at = time.monotonic()
        if self.length is None:
            self.head += chunk
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return False
            header_lines = bytes(self.head[:end]).decode("latin-1").split("\r\n")
            self.status = int(header_lines[0].split(" ")[1])
            self.length = 0
            for line in header_lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    self.length = int(value.strip())
            chunk = bytes(self.head[end + 4:])
        self.received += len(chunk)
        self.md5.update(chunk)
        return self.received >= self.length


def cmd_cold_start(args):
    """Open `count` connections, send every request except its last byte, then send the
    last bytes in one tight loop, so that all requests become complete on the server
    within the printed send window. Prints one `COLD_RESULT` line; its times count from the
    start of that loop, and `done_last_ms` includes this client's own reading and MD5."""
    expected_md5 = hashlib.md5(Path(args.expect_file).read_bytes()).hexdigest()
    raise_open_file_limit(args.count + 256)
    deadline = time.monotonic() + args.timeout

    sockets = []
    for _ in range(args.count):
        sockets.append(socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout))
    request = (f"GET {args.target} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
               "Connection: close\r\n\r\n").encode()
    for sock in sockets:
        sock.sendall(request[:-1])
    # Gives the server time to read every partial header, so that the last byte alone
    # completes each request.
    time.sleep(0.3)
    for sock in sockets:
        sock.setblocking(False)

    send_started = time.monotonic()
    for sock in sockets:
        sock.send(request[-1:])
    send_ended = time.monotonic()

    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ, Response())
    finished = []
    while len(selector.get_map()) > 0 and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            response = key.data
            try:
                chunk = key.fileobj.recv(256 * 1024)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            complete = bool(chunk) and response.feed(chunk)
            if complete or not chunk:
                response.done_at = time.monotonic() if complete else None
                finished.append(response)
                selector.unregister(key.fileobj)
                key.fileobj.close()
    timed_out = len(selector.get_map())
    for key in list(selector.get_map().values()):
        key.fileobj.close()

    good = [r for r in finished
            if r.done_at is not None and r.status == 200 and r.md5.hexdigest() == expected_md5]
    first_bytes = sorted((r.first_byte_at - send_started) * 1000 for r in good)
    latencies = sorted((r.done_at - send_started) * 1000 for r in good)
    nan = float("nan")
    print(f"COLD_RESULT sent={args.count} ok={len(good)} bad={len(finished) - len(good)} "
          f"timed_out={timed_out} send_window_ms={(send_ended - send_started) * 1000:.2f} "
          f"first_byte_p50_ms={statistics.median(first_bytes) if good else nan:.2f} "
          f"first_byte_last_ms={first_bytes[-1] if good else nan:.2f} "
          f"done_last_ms={latencies[-1] if good else nan:.2f}")


def parse_results(path):
    """Read the tab-separated results: `run` rows with one wrk run each, `cold` rows with
    one cold-start run each (`key=value` fields) and `kv` rows."""
    runs = {}
    values = {}
    cold = []
    for line in Path(path).read_text().splitlines():
        fields = line.split("\t")
        if fields[0] == "cold":
            pairs = (item.partition("=") for item in fields[2].split() if "=" in item)
            cold.append({key: value for key, _, value in pairs})
        elif fields[0] == "run":
            _, scenario, server, rep, rps, p50, p99, errors, other, server_us = fields
            runs.setdefault(scenario, {}).setdefault(server, {})[int(rep)] = {
                "rps": float(rps), "p50": float(p50), "p99": float(p99), "errors": int(errors),
                "other": int(other), "server_us": float(server_us)}
        elif fields[0] == "kv":
            values[fields[1]] = fields[2]
    return runs, values, cold


# Other processes' CPU use during a run, in percent of one CPU, above which the report
# warns that the run is skewed. The estimate reads about 0 to 10 % on an idle machine.
OTHER_CPU_WARNING_PERCENT = 15


def ms(microseconds):
    return f"{microseconds / 1000:.2f}"


SCENARIOS = [
    ("hit_1k", "cache hit, 1 KiB file", "static"),
    ("hit_64k", "cache hit, 64 KiB file", "static"),
    ("hit_700k", "cache hit, 700,000-byte file", "static"),
    ("proxied", "proxied path, tiny upstream answer", "proxied"),
    ("working_set", "working set, 10,000 ids of 1 to 16 KiB", "none"),
]


def append_wrk_tables(lines, verdicts, runs):
    """Append the median table and the list of every run of the wrk scenarios."""
    lines.append("| scenario | nginx req/s | proxy req/s | proxy/nginx | nginx p50 / p99 ms "
                 "| proxy p50 / p99 ms | server CPU µs/req nginx / proxy | errors nginx / proxy "
                 "| target | result |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for key, title, kind in SCENARIOS:
        if key not in runs:
            continue
        nginx, proxy = runs[key].get("nginx", {}), runs[key].get("proxy", {})
        reps = sorted(set(nginx) & set(proxy))
        if not reps:
            continue
        ratio = statistics.median(proxy[r]["rps"] / nginx[r]["rps"] for r in reps)
        median = lambda side, field: statistics.median(side[r][field] for r in reps)
        n_p99, p_p99 = median(nginx, "p99"), median(proxy, "p99")
        errors = (sum(nginx[r]["errors"] for r in reps), sum(proxy[r]["errors"] for r in reps))
        if kind == "static":
            target = "req/s >= 1.0x, p99 <= nginx"
            passed = ratio >= 1.0 and p_p99 <= n_p99
        elif kind == "proxied":
            target = "req/s >= 1.0x"
            passed = ratio >= 1.0
        else:
            target = "none (reference)"
            passed = None
        if passed is None:
            result = "-"
        elif passed:
            result = "PASS"
        else:
            result = "MISS"
        if errors != (0, 0):
            result += " (errors)"
        lines.append(
            f"| {title} | {median(nginx, 'rps'):,.0f} | {median(proxy, 'rps'):,.0f} | "
            f"{ratio:.2f} | {ms(median(nginx, 'p50'))} / {ms(n_p99)} | "
            f"{ms(median(proxy, 'p50'))} / {ms(p_p99)} | "
            f"{median(nginx, 'server_us'):.1f} / {median(proxy, 'server_us'):.1f} | "
            f"{errors[0]} / {errors[1]} | "
            f"{target} | {result} |")
        if passed is not None:
            verdicts.append(f"{'PASS' if passed else 'MISS'} {key}: proxy/nginx req/s "
                            f"{ratio:.2f}, p99 {ms(p_p99)} ms vs nginx {ms(n_p99)} ms")

    lines.append("")
    lines.append("Every run as req/s (p99 ms, CPU % of one CPU used by other processes), by "
                 "repetition:")
    lines.append("")
    busiest = 0
    for key, title, _ in SCENARIOS:
        if key not in runs:
            continue
        parts = []
        for server in ("nginx", "proxy"):
            side = runs[key].get(server, {})
            parts.append(server + " " + ", ".join(
                f"{side[r]['rps']:,.0f} ({ms(side[r]['p99'])}, {side[r]['other']}%)"
                for r in sorted(side)))
            busiest = max([busiest] + [side[r]["other"] for r in side])
        lines.append(f"- {title}: " + "; ".join(parts))
    if busiest > OTHER_CPU_WARNING_PERCENT:
        warning = (f"WARNING: other processes used up to {busiest}% of one CPU during a run; "
                   "those runs are skewed, so run again on a quiet machine.")
        lines.append("")
        lines.append(warning)
        verdicts.append(warning)


def cmd_report(args):
    runs, values, cold = parse_results(args.results)
    lines = []
    verdicts = []
    if runs:
        append_wrk_tables(lines, verdicts, runs)

    if cold:
        lines.append("")
        lines.append(f"Cold start: {cold[0]['sent']} concurrent requests for one uncached id "
                     "(the 700,000-byte file), a fresh proxy for each run. Times count from the "
                     "first of the final request bytes; `all read ms` includes the Python "
                     "client's own reading and MD5 of 700 MB. Target: 1 store get.")
        lines.append("")
        lines.append("| run | correct / wrong / timed out | send window ms | first byte median / last ms "
                     "| all read ms | store list + get ms | store get / list | outcome miss_store / hit "
                     "| result |")
        lines.append("|---|---|---:|---|---:|---:|---|---|---|")
        for number, run in enumerate(cold, 1):
            passed = run["gets"] == "1"
            lines.append(
                f"| {number} | {run['ok']} / {run['bad']} / {run['timed_out']} | "
                f"{run['send_window_ms']} | {run['first_byte_p50_ms']} / "
                f"{run['first_byte_last_ms']} | {run['done_last_ms']} | {run['store_ms']} | "
                f"{run['gets']} / {run['lists']} | {run['miss_store']} / {run['hit']} | "
                f"{'PASS' if passed else 'MISS'} |")
            verdicts.append(f"{'PASS' if passed else 'MISS'} cold_start run {number}: "
                            f"{run['gets']} store get(s) for {run['sent']} concurrent requests, "
                            f"{run['ok']} correct answers")

    if "ws_peak_rss_bytes" in values:
        rss = int(values["ws_peak_rss_bytes"])
        limit = int(values["ws_max_bytes"]) + 48 * 1024 * 1024
        passed = rss <= limit
        hits, lookups = int(values["ws_hits"]), int(values["ws_lookups"])
        ratio = hits / lookups if lookups else float("nan")
        lines.append("")
        lines.append(
            f"Working set: {values['ws_ids']} ids, {int(values['ws_bytes']) / 2**20:.1f} MiB of "
            f"files, cache.max_bytes {int(values['ws_max_bytes']) / 2**20:.0f} MiB. Hit ratio "
            f"{ratio:.3f} ({hits:,} hits of {lookups:,} small-file requests after a full-length run "
            f"that fills the cache, "
            f"{int(values['ws_failed'])} not found or failed); "
            f"cache at the end: {int(values['ws_cache_bytes']) / 2**20:.1f} MiB in "
            f"{values['ws_cache_entries']} entries. Peak RSS (VmHWM) of the proxy "
            f"{rss / 2**20:.1f} MiB; target <= max_bytes + 48 MiB = {limit / 2**20:.0f} MiB. "
            f"{'PASS' if passed else 'MISS'}.")
        verdicts.append(f"{'PASS' if passed else 'MISS'} working_set_rss: peak RSS "
                        f"{rss / 2**20:.1f} MiB, limit {limit / 2**20:.0f} MiB; hit ratio "
                        f"{ratio:.3f}")

    Path(args.table_out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print()
    print("\n".join(verdicts))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    ports = sub.add_parser("ports", help="print free TCP ports on 127.0.0.1")
    ports.add_argument("count", type=int)
    ports.set_defaults(func=cmd_ports)

    store = sub.add_parser("store", help="write the store of the load scenarios")
    store.add_argument("dir")
    store.add_argument("--keystore", required=True, help="the 700,000-byte file to copy")
    store.add_argument("--working-set-ids", type=int, default=10000)
    store.set_defaults(func=cmd_store)

    cold = sub.add_parser("cold-start", help="send concurrent requests for one id")
    cold.add_argument("--port", type=int, required=True)
    cold.add_argument("--target", required=True, help="request target (path and query)")
    cold.add_argument("--count", type=int, default=1000)
    cold.add_argument("--expect-file", required=True, help="file whose bytes every response must contain")
    cold.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole run")
    cold.set_defaults(func=cmd_cold_start)

    report = sub.add_parser("report", help="print the result table")
    report.add_argument("results")
    report.add_argument("--table-out", required=True, help="file that receives the table")
    report.set_defaults(func=cmd_report)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
