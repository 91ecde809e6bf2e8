#!/usr/bin/env python3
"""Steady small puts against etcd's JSON gateway, to see how a backup slows etcd down.

    etcd_latency.py --endpoint http://127.0.0.1:PORT [--rate 200] [--max-seconds 900] --out FILE

Puts one ~100-byte key every 1/rate s (keep-alive HTTP/1.1 on loopback) until SIGTERM or
--max-seconds, then writes "count p50_ms p99_ms max_ms" to FILE: each put's time from
sending to etcd's answer. A put etcd refuses (503: "request timed out" on an overloaded
etcd) counts with the time it took, and the refusals are counted on stderr. Loopback only;
bounded in time.
"""
import argparse
import base64
import http.client
import json
import signal
import sys
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--max-seconds", type=float, default=900.0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--samples", help="also write every put as 'unix-time-s latency-ms' lines here")
    args = ap.parse_args()
    url = urllib.parse.urlparse(args.endpoint)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("etcd_latency.py: loopback endpoints only")
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    value = base64.b64encode(b"v" * 100).decode()
    interval = 1.0 / args.rate
    start = time.monotonic()
    latencies = []
    samples = []
    n = 0
    refused = 0
    while not stop and time.monotonic() - start < args.max_seconds:
        due = start + n * interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        key = base64.b64encode(b"/bench/latency/%d" % (n % 1000)).decode()
        sent = time.monotonic()
        conn.request("POST", "/v3/kv/put", json.dumps({"key": key, "value": value}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            refused += 1
        latencies.append((time.monotonic() - sent) * 1000.0)
        samples.append(time.time())
        n += 1
    if args.samples:
        with open(args.samples, "w") as f:
            for at, ms in zip(samples, latencies):
                f.write("%.6f %.3f\n" % (at, ms))
    if refused:
        print("etcd_latency.py: %d puts refused (counted with their time)" % refused, file=sys.stderr)
    latencies.sort()

    def pct(p):
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))]

    with open(args.out, "w") as f:
        f.write("%d %.2f %.2f %.2f\n" % (len(latencies), pct(0.50), pct(0.99),
                                         latencies[-1] if latencies else 0.0))


if __name__ == "__main__":
    main()
