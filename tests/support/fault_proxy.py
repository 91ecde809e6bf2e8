#!/usr/bin/env python3
"""Loopback reverse proxy that injects faults in front of an HTTP server — test support only.

Every request is forwarded to --upstream (moto), except a seeded share of them, which
gets one of these faults instead:

    500       the body is read, then `500 InternalError` (S3-shaped XML)
    503       the body is read, then `503 SlowDown`
    reset     the connection is reset (RST) before the request is read or forwarded
    lost      the request is forwarded (it lands upstream), then the connection is reset
              instead of answering: the client cannot know whether it happened
    truncate  the request is forwarded, the status line and headers are relayed, then half
              the body and a reset
    delay     the request waits 0.2-1.5 s (see delay_ms), then is forwarded normally

Control (never faulted):
    POST /__faults__   JSON {"seed": 1, "rate": 0.2, "kinds": ["500", ...],
                       "delay_ms": [200, 1500], "only": ["POST ", "?uploadId="]}: new
                       settings, the random sequence restarts from the seed and the
                       counters are zeroed; with "only" (a text or a list of texts), just
                       the requests whose "METHOD path?query" contains each can get a fault
    GET  /__faults__   JSON counters {"requests": n, "injected": {"500": n, ...}}

Faults are drawn in the order requests arrive, from random.Random(seed): with concurrent
requests the order (and so which request gets which fault) can vary between runs, the
share does not. Rate 0 (the start) forwards everything.

Usage: python3 fault_proxy.py --port P --upstream http://127.0.0.1:M [--log FILE]
                              [--tls-cert PEM --tls-key PEM]
With --tls-cert and --tls-key it serves HTTPS with that certificate (a store behind an
internal CA). Prints "READY <port>" on stdout once listening. Stdlib only.
"""

import argparse
import http.client
import http.server
import json
import random
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

from httpbody import CHUNK, request_body

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade", "proxy-connection", "expect",
    "content-length",
}
ALL_KINDS = ["500", "503", "reset", "lost", "truncate", "delay"]
ERRORS = {
    "500": ("InternalError", "We encountered an internal error. Please try again."),
    "503": ("SlowDown", "Please reduce your request rate."),
}


class Faults:
    """Settings and counters, shared by all handler threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.configure({"seed": 0, "rate": 0.0})

    def configure(self, settings):
        with self.lock:
            self.rate = float(settings.get("rate", 0.0))
            self.kinds = [k for k in settings.get("kinds", ALL_KINDS) if k in ALL_KINDS]
            self.delay_ms = settings.get("delay_ms", [200, 1500])
            self.only = settings.get("only")
            self.rng = random.Random(int(settings.get("seed", 0)))
            self.requests = 0
            self.injected = {k: 0 for k in ALL_KINDS}

    def draw(self, request_line):
        """-> (fault kind or None, delay in seconds)"""
        with self.lock:
            self.requests += 1
            only = [self.only] if isinstance(self.only, str) else (self.only or [])
            if any(part not in request_line for part in only):
                return None, 0.0
            if not self.kinds or self.rng.random() >= self.rate:
                return None, 0.0
            kind = self.rng.choice(self.kinds)
            self.injected[kind] += 1
            lo, hi = self.delay_ms
            return kind, self.rng.uniform(lo, hi) / 1000.0

    def counters(self):
        with self.lock:
            return {"requests": self.requests, "injected": dict(self.injected)}


FAULTS = Faults()


class Front(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault-proxy/1"
    upstream_host = "127.0.0.1"
    upstream_port = 0
    log_file = None
    log_lock = threading.Lock()

    def log_message(self, fmt, *args):
        pass

    def _log(self, line):
        if self.log_file is None:
            return
        with self.log_lock:
            with open(self.log_file, "a") as f:
                f.write(line + "\n")

    def _reset(self):
        """Closes the client connection with a TCP reset (SO_LINGER 0)."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass

    def _answer(self, status, body, content_type="application/xml"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drain(self):
        _, chunks = request_body(self)
        for _ in chunks:
            pass

    # ---------------------------------------------------------------- control
    def _control(self):
        if self.command == "POST":
            n = int(self.headers.get("Content-Length") or 0)
            FAULTS.configure(json.loads(self.rfile.read(n) or b"{}"))
            self._log("CONTROL %s" % json.dumps(FAULTS.counters()))
        else:
            self._drain()
        self._answer(200, json.dumps(FAULTS.counters()).encode(), "application/json")

    # ---------------------------------------------------------------- forwarding
    def _handle(self):
        if self.path.startswith("/__faults__"):
            return self._control()
        kind, delay = FAULTS.draw("%s %s" % (self.command, self.path))
        self._log("%s %s %s" % (kind or "ok", self.command, self.path.split("?")[0]))
        if kind == "reset":
            return self._reset()
        if kind in ERRORS:
            self._drain()
            code, message = ERRORS[kind]
            body = (
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>%s</Code>"
                "<Message>%s</Message><RequestId>fault-proxy</RequestId></Error>"
                % (code, message)
            ).encode()
            return self._answer(int(kind), body)
        if kind == "delay":
            time.sleep(delay)
        self._forward(kind)

    def _forward(self, kind):
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=300)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() in HOP_BY_HOP:
                    continue
                conn.putheader(k, v)
            n, chunks = request_body(self)
            if n is None:
                conn.putheader("Transfer-Encoding", "chunked")
            elif n > 0 or self.command in ("PUT", "POST", "PATCH"):
                conn.putheader("Content-Length", str(n))
            conn.endheaders()
            for c in chunks:
                if n is None:
                    if c:
                        conn.send(b"%x\r\n" % len(c) + c + b"\r\n")
                else:
                    conn.send(c)
            if n is None:
                conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
            if kind == "lost":
                resp.read()
                return self._reset()
            self._relay(resp, truncate=(kind == "truncate"))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # upstream trouble is not a fault we meant to inject
            self.close_connection = True
            try:
                self._answer(502, ("fault_proxy: upstream error: %s\n" % e).encode(), "text/plain")
            except Exception:
                pass
        finally:
            conn.close()

    def _relay(self, resp, truncate):
        head = self.command == "HEAD"
        no_body = head or resp.status in (204, 304) or resp.status < 200
        data = b"" if no_body else resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in HOP_BY_HOP or k.lower() in ("server", "date"):
                continue
            self.send_header(k, v)
        length = resp.getheader("Content-Length")
        if head and length is not None:
            self.send_header("Content-Length", length)
        elif not no_body:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if truncate and data:
            self.wfile.write(data[: len(data) // 2])
            return self._reset()
        if data:
            self.wfile.write(data)
        if truncate:
            self._reset()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--log", help="append one line per request here")
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM)")
    args = ap.parse_args()
    u = urllib.parse.urlsplit(args.upstream)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("fault_proxy: the upstream must be on loopback, not %s" % args.upstream)
    Front.upstream_host = u.hostname
    Front.upstream_port = u.port or 80
    Front.log_file = args.log
    srv = Server(("127.0.0.1", args.port), Front)
    if args.tls_cert:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("READY %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
