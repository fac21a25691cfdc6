"""A real S3 server for the tests: SeaweedFS on 127.0.0.1 with free ports (no mocks)."""
from __future__ import annotations

import uuid

import pytest

from actors.backup import Target
from actors.backup.embedded import SeaweedS3


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One SeaweedFS for the session (any credentials accepted); tests use their own buckets."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


@pytest.fixture()
def bucket_target(seaweed):
    """A fresh bucket on the session's SeaweedFS, as a backup Target."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    seaweed.client().create_bucket(Bucket=name)
    return Target("s3", seaweed.endpoint, name, access_key="any", secret_key="any", workers=4)


class ChecksumBlindProxy:
    """An S3 endpoint that ignores S3 additional checksums: a loopback HTTP proxy in front of a
    real server that drops every ``x-amz-checksum-*`` header, both ways (as an older or simpler
    S3 server would neither check nor echo them). Needs a server that accepts any credentials."""

    DROP = "x-amz-checksum-"

    def __init__(self, upstream: str) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        up = urlsplit(upstream)
        drop = self.DROP
        self.requests: list[tuple[str, str]] = []        # (method, path without the query) forwarded
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:      # quiet
                pass

            def forward(self) -> None:
                requests.append((self.command, self.path.split("?")[0]))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if not k.lower().startswith(drop)}
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if not key.lower().startswith(drop) and key.lower() not in ("content-length", "connection",
                                                                                  "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data) if self.command != "HEAD" else
                                                       resp.getheader("Content-Length") or 0))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
