#!/usr/bin/env python3
"""Loopback GCS (XML API) front for an S3 server (moto) — test support only.

object_store's `gs://` client speaks the GCS XML API, which is close to S3:

  PUT    /<bucket>/<object>                      upload (x-goog-if-generation-match: 0 = create only)
  GET    /<bucket>/<object>[?generation=N]       download (Range, If-Match, If-None-Match, ...)
  HEAD   /<bucket>/<object>                      metadata (needs ETag, Last-Modified, Content-Length)
  DELETE /<bucket>/<object>                      delete (GCS answers 404 when missing)
  POST   /<bucket>/<object>?uploads=             initiate multipart
  PUT    /<bucket>/<object>?partNumber=N&uploadId=U
  POST   /<bucket>/<object>?uploadId=U           complete (S3-shaped XML body)
  DELETE /<bucket>/<object>?uploadId=U           abort
  GET    /<bucket>?list-type=2&prefix=&delimiter=&continuation-token=&start-after=&max-keys=
  PUT    /<bucket>/<object> + x-goog-copy-source: <bucket>/<object>   copy

Object names arrive fully percent-encoded (object_store encodes every
non-alphanumeric byte, '/' -> %2F, '.' -> %2E); they are normalised before being
sent upstream.

What the front does on top of plain forwarding:
  * Authorization: object_store sends `Bearer ` (empty token) on some requests and
    nothing on others (disable_oauth). Every upstream request gets a SigV4-shaped
    header instead (moto does not verify signatures, but anonymous requests are
    treated differently from signed ones).
  * x-goog-if-generation-match on PUT / copy: 0 -> 412 when the object exists;
    N -> 412 unless the current (synthesised) generation is N. Checked under a lock
    so concurrent conditional writes through this front are atomic.
  * x-goog-generation / x-goog-metageneration are synthesised from the ETag on
    responses; ?generation=N on GET/HEAD answers 404 unless it matches.
  * DELETE of a missing object answers 404 (GCS), not 204 (S3).
  * x-goog-meta-* <-> x-amz-meta-*, x-goog-copy-source -> x-amz-copy-source.
  * Content-Type application/x-www-form-urlencoded (curl's default) is replaced by
    application/octet-stream, because moto's werkzeug would eat such a body as form
    data.
  * Bodies are streamed in both directions (a chunked request body is buffered).

Usage: python3 gcs_front.py --port P --upstream http://127.0.0.1:M [--log FILE]
Prints "READY <port>" on stdout once listening. Stdlib only.
"""

import argparse
import http.client
import http.server
import socketserver
import sys
import threading
import urllib.parse

from httpbody import CHUNK, request_body
FAKE_AUTH = (
    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=00"
)
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade", "host", "expect", "content-length",
    "authorization",
}
SAFE_KEY_CHARS = "/-_.~"

# Serialises conditional writes (check + write) so that they are atomic with
# respect to each other.
COND_LOCK = threading.Lock()


def generation_of(etag):
    """Deterministic numeric generation derived from an ETag."""
    if not etag:
        return None
    h = etag.strip().strip('"').split("-")[0]
    try:
        return str(int(h[:15], 16) or 1)
    except ValueError:
        return str(abs(hash(h)) % (10 ** 15) or 1)


def gcs_error(code, message):
    body = (
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code>"
        "<Message>%s</Message></Error>" % (code, message)
    ).encode()
    return body


class Front(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gcs-front/1"
    upstream_host = "127.0.0.1"
    upstream_port = 0
    log_file = None
    log_lock = threading.Lock()

    # ---------------------------------------------------------------- helpers
    def log_message(self, fmt, *args):  # silence default stderr logging
        pass

    def _log(self, line):
        if self.log_file is None:
            return
        with self.log_lock:
            with open(self.log_file, "a") as f:
                f.write(line + "\n")

    def _upstream(self):
        return http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=300)

    def _split(self):
        """-> (bucket, key or None, query list, normalised upstream path)"""
        raw_path, _, raw_query = self.path.partition("?")
        if raw_path.startswith("http://") or raw_path.startswith("https://"):
            raw_path = urllib.parse.urlsplit(raw_path).path or "/"
        parts = raw_path.lstrip("/").split("/", 1)
        bucket = urllib.parse.unquote(parts[0]) if parts[0] else ""
        key = urllib.parse.unquote(parts[1]) if len(parts) > 1 and parts[1] != "" else None
        query = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
        return bucket, key, query

    @staticmethod
    def _upath(bucket, key, query=None):
        p = "/" + urllib.parse.quote(bucket, safe="")
        if key is not None:
            p += "/" + urllib.parse.quote(key, safe=SAFE_KEY_CHARS)
        if query:
            p += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe="")
        return p

    def _translate_request_headers(self):
        out = {}
        for k, v in self.headers.items():
            lk = k.lower()
            if lk in HOP_BY_HOP:
                continue
            if lk.startswith("x-goog-meta-"):
                out["x-amz-meta-" + k[len("x-goog-meta-"):]] = v
            elif lk == "x-goog-copy-source":
                src = v.lstrip("/")
                sb, _, sk = src.partition("/")
                out["x-amz-copy-source"] = (
                    urllib.parse.quote(urllib.parse.unquote(sb), safe="") + "/"
                    + urllib.parse.quote(urllib.parse.unquote(sk), safe=SAFE_KEY_CHARS)
                )
            elif lk.startswith("x-goog-"):
                continue  # handled by the front (or meaningless to S3)
            elif lk == "content-type" and v.split(";")[0].strip().lower() == (
                "application/x-www-form-urlencoded"
            ):
                out["Content-Type"] = "application/octet-stream"
            else:
                out[k] = v
        out["Authorization"] = FAKE_AUTH
        out["Host"] = "%s:%d" % (self.upstream_host, self.upstream_port)
        return out

    def _read_request_body_iter(self):
        """Returns (length, iterator of body chunks); a chunked body is buffered for its length."""
        n, it = request_body(self)
        if n is None:
            data = b"".join(it)
            return len(data), iter([data]) if data else iter([])
        return n, it

    def _drain_body(self):
        n, it = self._read_request_body_iter()
        for _ in it:
            pass

    def _send_simple(self, status, body=b"", headers=None, head=False):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body:
            self.send_header("Content-Type", "application/xml; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _head_upstream(self, bucket, key):
        """-> (status, headers dict lowercased)"""
        conn = self._upstream()
        try:
            conn.request("HEAD", self._upath(bucket, key),
                         headers={"Authorization": FAKE_AUTH})
            r = conn.getresponse()
            r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()

    def _forward(self, method, upath, headers, body_len, body_iter, head=False):
        conn = self._upstream()
        try:
            conn.putrequest(method, upath, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            if body_len is not None and (body_len > 0 or method in ("PUT", "POST")):
                conn.putheader("Content-Length", str(body_len))
            conn.endheaders()
            for chunk in body_iter:
                conn.send(chunk)
            resp = conn.getresponse()
            self._relay(resp, head=head or method == "HEAD")
        finally:
            conn.close()

    def _relay(self, resp, head=False):
        status = resp.status
        hdrs = resp.getheaders()
        length = resp.getheader("Content-Length")
        body = None
        no_body = head or status in (204, 304) or 100 <= status < 200
        if not no_body and length is None:
            body = resp.read()
            length = str(len(body))
        self.send_response(status)
        etag = None
        for k, v in hdrs:
            lk = k.lower()
            if lk in HOP_BY_HOP or lk in ("server", "date"):
                continue
            if lk.startswith("x-amz-meta-"):
                self.send_header("x-goog-meta-" + k[len("x-amz-meta-"):], v)
                continue
            if lk == "etag":
                etag = v
            self.send_header(k, v)
        gen = generation_of(etag)
        if gen is not None and status < 300:
            self.send_header("x-goog-generation", gen)
            self.send_header("x-goog-metageneration", "1")
        if length is not None:
            self.send_header("Content-Length", length)
        elif no_body and status not in (204, 304):
            self.send_header("Content-Length", "0")
        self.end_headers()
        if no_body:
            return
        if body is not None:
            self.wfile.write(body)
            return
        remaining = int(length)
        while remaining > 0:
            chunk = resp.read(min(CHUNK, remaining))
            if not chunk:
                break
            self.wfile.write(chunk)
            remaining -= len(chunk)

    # ---------------------------------------------------------------- dispatch
    def _handle(self):
        method = self.command
        bucket, key, query = self._split()
        self._log("%s %s" % (method, self.path))
        qkeys = {k for k, _ in query}
        headers = self._translate_request_headers()
        head = method == "HEAD"

        # Generation-pinned reads: strip ?generation= and check it matches.
        if method in ("GET", "HEAD") and key is not None and "generation" in qkeys:
            want = dict(query)["generation"]
            query = [(k, v) for k, v in query if k != "generation"]
            st, h = self._head_upstream(bucket, key)
            if st != 200 or generation_of(h.get("etag")) != want:
                self._drain_body()
                return self._send_simple(
                    404, gcs_error("NoSuchKey", "No such object generation."), head=head)

        # GCS answers 404 for deleting a missing object (S3 answers 204).
        if method == "DELETE" and key is not None and "uploadId" not in qkeys:
            st, _ = self._head_upstream(bucket, key)
            if st == 404:
                self._drain_body()
                return self._send_simple(
                    404, gcs_error("NoSuchKey", "The specified key does not exist."))

        cond = self.headers.get("x-goog-if-generation-match")
        upath = self._upath(bucket, key, query)
        if method == "PUT" and key is not None and cond is not None and "uploadId" not in qkeys:
            with COND_LOCK:
                st, h = self._head_upstream(bucket, key)
                exists = st == 200
                ok = (not exists) if cond.strip() == "0" else (
                    exists and generation_of(h.get("etag")) == cond.strip())
                if not ok:
                    self._drain_body()
                    return self._send_simple(
                        412, gcs_error("PreconditionFailed",
                                       "At least one of the pre-conditions you specified did not hold."))
                if cond.strip() == "0":
                    headers["If-None-Match"] = "*"
                n, it = self._read_request_body_iter()
                return self._forward(method, upath, headers, n, it)

        n, it = self._read_request_body_iter()
        return self._forward(method, upath, headers, n, it, head=head)

    def _safe_handle(self):
        try:
            self._handle()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # upstream down, etc.
            self.close_connection = True
            try:
                self._send_simple(502, gcs_error("BadGateway", "gcs_front: %s" % e))
            except Exception:
                pass

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _safe_handle


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:4566")
    ap.add_argument("--log", help="append one line per request to this file")
    args = ap.parse_args()

    up = urllib.parse.urlsplit(args.upstream)
    if up.scheme != "http" or up.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("gcs_front: --upstream must be http://127.0.0.1:PORT (loopback only)")
    Front.upstream_host = up.hostname
    Front.upstream_port = up.port or 80
    Front.log_file = args.log

    srv = Server(("127.0.0.1", args.port), Front)
    print("READY %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
