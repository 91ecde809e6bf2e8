#!/usr/bin/env python3
"""Loopback HTTP forward proxy that records every request — test support only.

Supports absolute-URI requests of any method (`GET http://127.0.0.1:4566/b/k`,
`PUT ...`, ...) and `CONNECT host:port` tunnels. Appends one line per request to
the log file:

    CONNECT 127.0.0.1:4566
    PUT http://127.0.0.1:4566/bucket/key

Any target whose host is not 127.0.0.1, localhost or ::1 is refused with 502 (and
still logged, prefixed with "REFUSED "), so a test can never send traffic off the
machine through it.

Usage: python3 counting_proxy.py --port P --log FILE
Prints "READY <port>" on stdout once listening. Stdlib only.
"""

import argparse
import http.client
import http.server
import select
import socket
import socketserver
import sys
import threading
import urllib.parse

from httpbody import CHUNK, request_body
ALLOWED_HOSTS = {"127.0.0.1", "localhost", "::1"}
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade", "proxy-connection", "expect",
    "content-length",
}


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "counting-proxy/1"
    log_path = None
    log_lock = threading.Lock()

    def log_message(self, fmt, *args):
        pass

    def _record(self, line):
        with self.log_lock:
            with open(self.log_path, "a") as f:
                f.write(line + "\n")
                f.flush()

    def _refuse(self, status, msg):
        body = (msg + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    # ---------------------------------------------------------------- CONNECT
    def do_CONNECT(self):
        target = self.path
        host, sep, port = target.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or host not in ALLOWED_HOSTS:
            self._record("REFUSED CONNECT %s" % target)
            return self._refuse(502, "counting_proxy: refusing non-loopback target %s" % target)
        self._record("CONNECT %s" % target)
        try:
            upstream = socket.create_connection((host, int(port)), timeout=30)
        except OSError as e:
            return self._refuse(502, "counting_proxy: cannot connect to %s: %s" % (target, e))
        self.send_response(200, "Connection Established")
        self.end_headers()
        self.wfile.flush()
        upstream.settimeout(None)
        client = self.connection
        self.close_connection = True
        # Anything already buffered from the client belongs to the tunnel.
        # (peek with the socket non-blocking, so that it never waits for data)
        pending = b""
        try:
            client.setblocking(False)
            pending = self.rfile.peek(CHUNK)
        except (BlockingIOError, OSError, ValueError):
            pending = b""
        finally:
            client.setblocking(True)
        if pending:
            upstream.sendall(self.rfile.read(len(pending)))
        socks = [client, upstream]
        try:
            while True:
                r, _, x = select.select(socks, [], socks, 300)
                if x or not r:
                    break
                done = False
                for s in r:
                    data = s.recv(CHUNK)
                    if not data:
                        done = True
                        break
                    (upstream if s is client else client).sendall(data)
                if done:
                    break
        except OSError:
            pass
        finally:
            upstream.close()

    # ---------------------------------------------------------------- absolute URI
    def _body_iter(self):
        """-> (content_length or None for chunked, iterator of raw chunks)"""
        return request_body(self)

    def _forward(self):
        target = self.path
        u = urllib.parse.urlsplit(target)
        if u.scheme != "http" or not u.hostname:
            self._record("REFUSED %s %s" % (self.command, target))
            return self._refuse(400, "counting_proxy: expected an absolute http:// URI, got %s" % target)
        if u.hostname not in ALLOWED_HOSTS:
            self._record("REFUSED %s %s" % (self.command, target))
            return self._refuse(502, "counting_proxy: refusing non-loopback target %s" % target)
        self._record("%s %s" % (self.command, target))
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=300)
        try:
            conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() in HOP_BY_HOP:
                    continue
                conn.putheader(k, v)
            n, it = self._body_iter()
            if n is None:
                conn.putheader("Transfer-Encoding", "chunked")
            elif n > 0 or self.command in ("PUT", "POST", "PATCH"):
                conn.putheader("Content-Length", str(n))
            conn.endheaders()
            for c in it:
                if n is None:
                    if c:
                        conn.send(b"%x\r\n" % len(c) + c + b"\r\n")
                else:
                    conn.send(c)
            if n is None:
                conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
            self._relay(resp)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:
            self.close_connection = True
            try:
                self._refuse(502, "counting_proxy: upstream error: %s" % e)
            except Exception:
                pass
        finally:
            conn.close()

    def _relay(self, resp):
        head = self.command == "HEAD"
        no_body = head or resp.status in (204, 304) or resp.status < 200
        length = resp.getheader("Content-Length")
        chunked = "chunked" in (resp.getheader("Transfer-Encoding") or "").lower()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in HOP_BY_HOP or k.lower() in ("server", "date"):
                continue
            self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", length)
        elif not no_body:
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
        self.end_headers()
        if no_body:
            return
        while True:
            c = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
            if not c:
                break
            if length is None and chunked:
                self.wfile.write(b"%x\r\n" % len(c) + c + b"\r\n")
            else:
                self.wfile.write(c)
        if length is None and chunked:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _forward


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True, help="append one line per request here")
    args = ap.parse_args()
    open(args.log, "a").close()
    Proxy.log_path = args.log
    srv = Server(("127.0.0.1", args.port), Proxy)
    print("READY %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
