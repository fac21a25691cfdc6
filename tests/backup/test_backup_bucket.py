"""The bucket abstraction, the retry policy and target resolution, against a real SeaweedFS."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from actors.backup import BackupError, Bucket, MismatchError, Target, resolve_target
from actors.backup.retry import ATTEMPTS, EndpointDown, is_transient, with_retries


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


class Calls:
    """An operation that raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors: BaseException, on_call=None) -> None:
        self.errors, self.count, self.on_call = list(errors), 0, on_call

    def __call__(self) -> str:
        self.count += 1
        if self.on_call is not None:
            self.on_call(self.count)
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_retry_policy_retries_transient_errors_and_fails_others_at_once():
    abort = threading.Event()
    flaky = Calls(client_error("SlowDown", 503), ConnectionResetError())
    assert with_retries(flaky, abort) == "done" and flaky.count == 3 and not abort.is_set()
    denied = Calls(client_error("AccessDenied", 403))
    with pytest.raises(ClientError, match="AccessDenied"):
        with_retries(denied, abort)
    assert denied.count == 1 and not abort.is_set()


def test_retry_policy_gives_up_on_an_outage_and_aborts_the_pass(monkeypatch):
    monkeypatch.setattr("actors.backup.retry.FIRST_WAIT_S", 0.01)      # the same policy, shorter waits
    abort = threading.Event()
    down = Calls(*[client_error("ServiceUnavailable", 503)] * (ATTEMPTS + 1))
    with pytest.raises(ClientError, match="ServiceUnavailable"):
        with_retries(down, abort)
    assert down.count == ATTEMPTS and abort.is_set()
    later = Calls()
    with pytest.raises(EndpointDown):                     # the rest of the pass stops without a request
        with_retries(later, abort)
    assert later.count == 0


def test_another_worker_giving_up_stops_this_one_between_attempts():
    abort = threading.Event()
    # the second attempt fails while another worker declares the endpoint down: no third attempt
    op = Calls(*[client_error("SlowDown", 503)] * ATTEMPTS, on_call=lambda n: n == 2 and abort.set())
    with pytest.raises(EndpointDown):
        with_retries(op, abort)
    assert op.count == 2


def upload_failed(code: str, status: int) -> S3UploadFailedError:
    """What boto3 raises when a multipart upload fails: the client error is its context."""
    try:
        try:
            raise client_error(code, status)
        except ClientError:
            raise S3UploadFailedError(f"Failed to upload x to y/z: {code}")
    except S3UploadFailedError as exc:
        return exc


def test_a_failed_multipart_upload_is_judged_by_the_error_it_wraps():
    assert not is_transient(upload_failed("AccessDenied", 403))
    assert is_transient(upload_failed("InternalError", 500)) and is_transient(S3UploadFailedError("no cause"))


def parquet_file(path: Path, rows: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": list(range(rows))}), path, row_group_size=1000)
    return hashlib.sha256(path.read_bytes()).hexdigest()


REL = "binance/perp/trades/2025/01/BTCUSDT_0518.parquet"


@pytest.mark.s3
def test_upload_list_head_and_remote_footer_under_a_prefix(tmp_path, bucket_target):
    target = Target("s3", bucket_target.endpoint, bucket_target.bucket, prefix="desk/a", access_key="any",
                    secret_key="any")
    bucket = Bucket(target)
    path = tmp_path / REL
    sha = parquet_file(path, 5000)
    uploaded = bucket.upload(path, REL, path.stat().st_size, sha)
    listed = bucket.list()
    assert list(listed) == [REL] and listed[REL].size == path.stat().st_size
    assert listed[REL].etag == uploaded.expected_etag() == uploaded.etag == hashlib.md5(path.read_bytes()).hexdigest()
    assert uploaded.checksum_verified          # SeaweedFS checked our SHA-256 and said so
    assert bucket.list("binance/perp/l2book/") == {}
    head = bucket.head(REL)
    assert head["Metadata"]["sha256"] == sha and bucket.head(REL.replace("0518", "0519")) is None
    assert bucket.client.head_object(Bucket=target.bucket, Key=f"desk/a/{REL}")["ContentLength"] == path.stat().st_size
    with bucket.open_input_file(REL) as remote:
        meta = pq.ParquetFile(remote).metadata
    assert (meta.num_rows, meta.num_row_groups) == (5000, 5)


@pytest.mark.s3
def test_download_is_verified_and_never_leaves_a_partial_file(tmp_path, bucket_target):
    bucket = Bucket(bucket_target)
    source = tmp_path / "src" / REL
    sha = parquet_file(source, 2000)
    size = source.stat().st_size
    bucket.upload(source, REL, size, sha)
    dest = tmp_path / "dest" / REL
    assert bucket.download(REL, dest) == (sha, size)       # checked against the object's stored SHA-256
    assert dest.read_bytes() == source.read_bytes()
    dest.unlink()
    wrong_sha = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(MismatchError, match=f"{REL}: checksum mismatch"):
        bucket.download(REL, dest, sha256=wrong_sha)
    with pytest.raises(MismatchError, match=f"{REL}: size mismatch"):
        bucket.download(REL, dest, size=size + 1)
    assert os.listdir(dest.parent) == []                   # no file, no temp file


@pytest.mark.s3
def test_a_non_transient_multipart_failure_is_not_retried(tmp_path, bucket_target):
    target = Target("s3", bucket_target.endpoint, bucket_target.bucket, access_key="any", secret_key="any",
                    multipart_mb=5)
    bucket = Bucket(target)
    path = tmp_path / REL
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(11 << 20))
    started = []

    class Raw:
        def stream(self, **_):
            yield b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"

    def deny_parts(request, **_):
        return AWSResponse(request.url, 403, {"Content-Type": "application/xml"}, Raw())

    bucket.client.meta.events.register("before-call.s3.CreateMultipartUpload", lambda **_: started.append(1))
    bucket.client.meta.events.register("before-send.s3.UploadPart", deny_parts)
    abort = threading.Event()
    with pytest.raises(S3UploadFailedError, match="AccessDenied"):
        with_retries(lambda: bucket.upload(path, REL, path.stat().st_size, "0" * 64), abort)
    assert len(started) == 1 and not abort.is_set()


def test_b2_target_from_quantpylib_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKBLAZE_ENDPOINT", "s3.us-west-004.backblazeb2.com")
    monkeypatch.setenv("BACKBLAZE_ID", "key-id")
    monkeypatch.setenv("BACKBLAZE_KEY", "key-secret")
    target = resolve_target({"name": "b2", "bucket": "archives", "prefix": "/desk/"}, str(tmp_path))
    assert (target.endpoint, target.region) == ("https://s3.us-west-004.backblazeb2.com", "us-west-004")
    assert (target.access_key, target.secret_key, target.prefix) == ("key-id", "key-secret", "desk")
    assert target.checksums is False and "key-secret" not in repr(target)
    assert resolve_target({"name": "b2", "bucket": "archives", "checksums": "true"}, str(tmp_path)).checksums
    with pytest.raises(BackupError, match="backup.workers"):
        resolve_target({"name": "b2", "bucket": "archives", "workers": 0}, str(tmp_path))
    assert resolve_target({"name": "none"}, str(tmp_path)) is None


def test_an_endpoint_that_is_not_s3_is_refused_before_any_upload(tmp_path):
    """A web server answering every request with 200 (a dashboard, a catch-all page) is not a bucket:
    one clear error, no upload attempted (it used to give one "does not verify" line per file)."""
    import http.server
    import socketserver

    from actors.backup import reconcile

    class CatchAll(http.server.BaseHTTPRequestHandler):
        def _ok(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "13")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"<html></html>")

        do_GET = do_HEAD = do_PUT = do_POST = _ok

        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), CatchAll)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = tmp_path / "archive"
    rel = "binance/perp/trades/2025/01/BTCUSDT_0518.parquet"
    (root / rel).parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), root / rel)
    try:
        target = Target("s3", f"http://127.0.0.1:{server.server_address[1]}", "archives", access_key="a",
                        secret_key="b")
        with pytest.raises(BackupError, match="does not answer like an S3 server") as err:
            reconcile(str(root), target)
        assert "\n" not in str(err.value)
    finally:
        server.shutdown()


@pytest.mark.s3
def test_a_body_that_contradicts_its_sha256_is_refused(tmp_path, bucket_target):
    """The presigned PUT and the boto3 path both carry the SHA-256: the server refuses bytes that
    do not match it, and nothing is stored."""
    from botocore.exceptions import ClientError

    bucket = Bucket(bucket_target)
    assert bucket.presigned_puts
    path = tmp_path / REL
    parquet_file(path, 100)
    with pytest.raises(ClientError, match="BadDigest"):
        bucket.upload(path, REL, path.stat().st_size, hashlib.sha256(b"other bytes").hexdigest())
    assert bucket.head(REL) is None and bucket.list() == {}
