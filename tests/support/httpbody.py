"""Reading an HTTP request body from a BaseHTTPRequestHandler, shared by the test servers."""

CHUNK = 256 * 1024


def request_body(handler):
    """-> (Content-Length, or None for a chunked body; iterator of raw body chunks)."""
    rfile = handler.rfile
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        def chunked():
            while True:
                size = int(rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while rfile.readline().strip():
                        pass  # trailers
                    return
                yield rfile.read(size)
                rfile.readline()
        return None, chunked()
    n = int(handler.headers.get("Content-Length") or 0)

    def sized(remaining=n):
        while remaining > 0:
            chunk = rfile.read(min(CHUNK, remaining))
            if not chunk:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= len(chunk)
            yield chunk
    return n, sized()
