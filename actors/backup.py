"""Backup: reconcile the sealed local tree with an S3-compatible bucket, verified and resumable.

Plain logic (no Ray); the ``backup`` actor and ``mode=backup`` call :func:`reconcile`.

One pass:

1. lists the sealed local files (non-hidden ``*.parquet`` whose path fits the archive layout;
   spools, temp files and the catalog live in hidden folders and are never uploaded, and a
   period is only a file once it is sealed by atomic rename);
2. lists the bucket once (paged ``ListObjectsV2`` under the prefix);
3. a file is *in the bucket* when the object has the same size and carries the file's
   SHA-256 (object metadata ``sha256``, plus S3's additional ``ChecksumSHA256`` where the
   endpoint supports it). What was verified before is remembered in ``{root}/.backup/verified.json``
   (key, size, mtime, sha256, ETag), so a no-op pass costs one listing and no request per
   object; an object whose size or ETag changed is checked again with ``HEAD``;
4. uploads what is missing or differs, concurrently (multipart above ``multipart_mb``), each
   with its SHA-256; verifies every upload with ``HEAD``; only then records ``backed_up_at``
   and the checksum in the catalog. Transient errors (connection resets, 5xx, SlowDown,
   timeouts) are retried with backoff; a pass interrupted at any point resumes next time.

Credentials come from the environment or ``.env`` (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL``, or quantpylib's ``BACKBLAZE_ENDPOINT`` /
``BACKBLAZE_ID`` / ``BACKBLAZE_KEY``), never from config files, and are never logged.
"""
from __future__ import annotations

import base64
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from .layout import NS, LayoutError, parse_relpath
from .logs import get_logger
from .writer import sha256_file as sha256_of

log = get_logger("backup")

STATE_DIR = ".backup"
STATE_FILE = "verified.json"
TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                   "503", "500", "502", "504", "Throttling", "ThrottlingException"}


class BackupError(RuntimeError):
    """A configuration or endpoint problem; the message is one line saying what to fix."""


@dataclass
class Target:
    """Where backups go. ``secret_key`` is never printed."""

    kind: str
    endpoint: str | None
    bucket: str
    prefix: str = ""
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    workers: int = 8
    multipart_mb: int = 64

    def key_of(self, rel: str) -> str:
        prefix = self.prefix.strip("/")
        return f"{prefix}/{rel}" if prefix else rel


@dataclass
class PassSummary:
    """What one reconcile pass did."""

    uploaded: int = 0
    uploaded_bytes: int = 0
    skipped: int = 0
    verified_existing: int = 0
    failed: int = 0
    deleted_local: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        text = (f"uploaded {self.uploaded} files, {self.uploaded_bytes / 1e6:.1f} MB, skipped {self.skipped}, "
                f"failed {self.failed}")
        if self.deleted_local:
            text += f", freed {self.deleted_local} local files (retention)"
        return text


# ----------------------------------------------------------------------------- target
_embedded: dict[str, Any] = {}
_embedded_lock = threading.Lock()


def embedded_dir(root: str) -> Path:
    """Data folder of ``backup=local``: next to the archive root, never inside it."""
    root_path = Path(root).absolute()
    return root_path.parent / f".{root_path.name}-s3"


def resolve_target(section: dict, root: str) -> Target | None:
    """The configured target, with keys from the environment (``.env`` is read too)."""
    kind = (section or {}).get("name", "none")
    if kind == "none":
        return None
    try:
        from dotenv import load_dotenv
        load_dotenv(override=False)
    except ImportError:  # python-dotenv is a dependency; tolerate its absence
        pass
    env = os.environ
    common = dict(prefix=str(section.get("prefix") or ""), region=section.get("region"),
                  workers=int(section.get("workers") or 8), multipart_mb=int(section.get("multipart_mb") or 64))
    if kind == "local":
        endpoint = section.get("endpoint")      # set by the archiver, which runs the one server
        if not endpoint:
            endpoint = ensure_embedded(root, str(section.get("bucket") or "archives")).endpoint
        return Target("local", endpoint, str(section.get("bucket") or "archives"),
                      access_key="local", secret_key="local", **common)
    bucket = section.get("bucket")
    if not bucket:
        raise BackupError(f"backup.bucket: required with backup={kind} (e.g. backup.bucket=archives)")
    if kind == "b2":
        endpoint = section.get("endpoint") or env.get("BACKBLAZE_ENDPOINT") or env.get("AWS_ENDPOINT_URL")
        access = env.get("BACKBLAZE_ID") or env.get("AWS_ACCESS_KEY_ID")
        secret = env.get("BACKBLAZE_KEY") or env.get("AWS_SECRET_ACCESS_KEY")
        if not endpoint:
            raise BackupError("backup.endpoint: required with backup=b2 (or set BACKBLAZE_ENDPOINT)")
        if endpoint and not endpoint.startswith("http"):
            endpoint = "https://" + endpoint
    else:
        endpoint = section.get("endpoint") or env.get("AWS_ENDPOINT_URL") or None
        access = env.get("AWS_ACCESS_KEY_ID")
        secret = env.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret:
        names = "BACKBLAZE_ID/BACKBLAZE_KEY" if kind == "b2" else "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        raise BackupError(f"backup={kind}: no credentials (set {names} in the environment or .env)")
    return Target(kind, endpoint, str(bucket), access_key=access, secret_key=secret, **common)


def ensure_embedded(root: str, bucket: str):
    """Start (once per process) the embedded SeaweedFS of ``backup=local``."""
    from .seaweed import SeaweedS3

    data_dir = embedded_dir(root)
    with _embedded_lock:
        server = _embedded.get(str(data_dir))
        if server is not None and server.proc is not None and server.proc.poll() is None:
            return server
        server = SeaweedS3(data_dir, buckets=(bucket,)).start()
        _embedded[str(data_dir)] = server
        return server


def stop_embedded() -> None:
    with _embedded_lock:
        for server in _embedded.values():
            server.stop()
        _embedded.clear()


def make_client(target: Target):
    """A boto3 S3 client with bounded timeouts and standard retries."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=target.endpoint, region_name=target.region or "us-east-1",
        aws_access_key_id=target.access_key, aws_secret_access_key=target.secret_key,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                      s3={"addressing_style": "path"}, max_pool_connections=max(10, target.workers * 2),
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"))


def describe_error(exc: BaseException, target: Target) -> str:
    """One line naming the problem (never a secret)."""
    from botocore.exceptions import (ClientError, EndpointConnectionError, NoCredentialsError)

    where = target.endpoint or "AWS S3"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach the bucket endpoint {where} (is it running? check backup.endpoint)"
    if isinstance(exc, NoCredentialsError):
        return "no credentials for the bucket (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            return f"bucket '{target.bucket}' does not exist at {where} (create it or fix backup.bucket)"
        if code in ("403", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
            return f"the bucket endpoint {where} rejected the credentials ({code}): check the access key and secret"
        return f"bucket error at {where}: {code} {exc.response.get('Error', {}).get('Message', '')}".strip()
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"bucket error at {where}: {type(exc).__name__}: {text}"[:300]


def open_bucket(section: dict, root: str):
    """(client, bucket, prefix) of the configured target (used by restore)."""
    target = resolve_target(section, root)
    if target is None:
        return None
    return make_client(target), target.bucket, target.prefix


def check_bucket(client, target: Target) -> None:
    """Fail with one clear line when the endpoint, the credentials or the bucket are wrong."""
    try:
        client.head_bucket(Bucket=target.bucket)
    except Exception as exc:
        raise BackupError(describe_error(exc, target)) from None


# ----------------------------------------------------------------------------- local state
def sealed_files(root: str) -> dict[str, os.stat_result]:
    """Sealed archive files under root: relative key -> stat (hidden parts and temp files excluded)."""
    out = {}
    root_path = Path(root)
    for dirpath, dirnames, filenames in os.walk(root_path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not name.endswith(".parquet"):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root_path).as_posix()
            try:
                parse_relpath(rel)
            except LayoutError:
                continue
            out[rel] = path.stat()
    return out


class VerifiedState:
    """``{root}/.backup/verified.json``: key -> [size, mtime_ns, sha256, etag] known in the bucket."""

    def __init__(self, root: str, target: Target) -> None:
        self.path = Path(root) / STATE_DIR / STATE_FILE
        self.scope = f"{target.endpoint}|{target.bucket}|{target.prefix}"
        self.entries: dict[str, list] = {}
        self.hashes: dict[str, list] = {}     # key -> [size, mtime_ns, sha256] of the local file
        self.lock = threading.Lock()
        if self.path.exists():
            try:
                data = orjson.loads(self.path.read_bytes())
                if data.get("scope") == self.scope:
                    self.entries = data.get("verified", {})
                self.hashes = data.get("hashes", {})
            except (orjson.JSONDecodeError, OSError, AttributeError):
                log.warning(f"ignoring unreadable backup state {self.path}")

    def local_sha(self, rel: str, path: Path, st: os.stat_result) -> str:
        known = self.hashes.get(rel)
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            return known[2]
        sha = sha256_of(path)
        with self.lock:
            self.hashes[rel] = [st.st_size, st.st_mtime_ns, sha]
        return sha

    def record(self, rel: str, size: int, mtime_ns: int, sha: str, etag: str) -> None:
        with self.lock:
            self.entries[rel] = [size, mtime_ns, sha, etag]

    def forget(self, rel: str) -> None:
        with self.lock:
            self.entries.pop(rel, None)

    def save(self) -> None:
        with self.lock:
            data = orjson.dumps({"scope": self.scope, "verified": self.entries, "hashes": self.hashes})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


# ----------------------------------------------------------------------------- the pass
def list_bucket(client, target: Target) -> dict[str, tuple[int, str]]:
    """key relative to the root -> (size, etag), one paged listing under the prefix."""
    out = {}
    prefix = target.prefix.strip("/")
    paginator = client.get_paginator("list_objects_v2")
    kwargs = {"Bucket": target.bucket}
    if prefix:
        kwargs["Prefix"] = prefix + "/"
    for page in paginator.paginate(**kwargs):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            rel = key[len(prefix) + 1:] if prefix else key
            out[rel] = (obj["Size"], obj.get("ETag", "").strip('"'))
    return out


def _transient(exc: BaseException) -> bool:
    from botocore.exceptions import (ClientError, ConnectionClosedError, ConnectTimeoutError,
                                     EndpointConnectionError, ReadTimeoutError)
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError,
                        ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return str(err.get("Code")) in TRANSIENT_CODES or status >= 500
    return False


def _remote_matches(client, target: Target, rel: str, size: int, sha: str) -> tuple[bool, str]:
    """HEAD the object: same size and the same recorded SHA-256 (and S3 checksum if any)."""
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=target.bucket, Key=target.key_of(rel), ChecksumMode="ENABLED")
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return False, ""
        raise
    if head.get("ContentLength") != size or (head.get("Metadata") or {}).get("sha256") != sha:
        return False, ""
    s3_sum = head.get("ChecksumSHA256")
    if s3_sum and "-" not in s3_sum and s3_sum != base64.b64encode(bytes.fromhex(sha)).decode():
        return False, ""
    return True, head.get("ETag", "").strip('"')


class _Abort(Exception):
    """The endpoint went away during the pass: the remaining uploads wait for the next pass."""


def _upload(client, target: Target, root: str, rel: str, st: os.stat_result, sha: str,
            abort: threading.Event | None = None, retries: int = 4) -> str:
    """Upload one file with its checksum and verify it; returns the ETag. Raises on failure.

    Transient errors are retried with backoff; when they persist the endpoint is considered
    down and ``abort`` is set, so the other uploads of the pass stop instead of waiting out
    their own retries.
    """
    from boto3.s3.transfer import TransferConfig

    path = Path(root) / rel
    config = TransferConfig(multipart_threshold=target.multipart_mb << 20, multipart_chunksize=target.multipart_mb << 20,
                            max_concurrency=4, use_threads=True)
    extra = {"Metadata": {"sha256": sha}, "ContentType": "application/vnd.apache.parquet"}
    delay = 0.5
    for attempt in range(retries + 1):
        if abort is not None and abort.is_set():
            raise _Abort("the endpoint stopped answering during this pass; retried next pass")
        try:
            if st.st_size < target.multipart_mb << 20:
                # one request; the server checks the body against our SHA-256 (no second hash pass here)
                with open(path, "rb") as f:
                    client.put_object(Bucket=target.bucket, Key=target.key_of(rel), Body=f.read(),
                                      Metadata=extra["Metadata"], ContentType=extra["ContentType"],
                                      ChecksumSHA256=base64.b64encode(bytes.fromhex(sha)).decode())
            else:
                client.upload_file(str(path), target.bucket, target.key_of(rel), ExtraArgs=extra, Config=config)
            ok, etag = _remote_matches(client, target, rel, st.st_size, sha)
            if not ok:
                raise BackupError(f"{rel}: uploaded object does not verify (size or SHA-256 differ)")
            now = path.stat()
            if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                raise BackupError(f"{rel}: the local file changed during the upload; it is uploaded next pass")
            return etag
        except BackupError:
            raise
        except Exception as exc:
            inner = getattr(exc, "__cause__", None) or exc
            transient = _transient(exc) or _transient(inner) or "S3UploadFailedError" in type(exc).__name__
            if attempt == retries or not transient:
                if transient and abort is not None:
                    abort.set()
                raise
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


def reconcile(root: str, target: Target, catalog: Any = None, progress: Callable[[int, int], None] | None = None,
              on_total: Callable[[int, int], None] | None = None, client: Any = None,
              retention_days: float | None = None) -> PassSummary:
    """One reconcile pass (see module docstring). Raises BackupError for endpoint/bucket problems."""
    started = time.monotonic()
    client = client or make_client(target)
    check_bucket(client, target)
    summary = PassSummary()
    state = VerifiedState(root, target)
    local = sealed_files(root)
    try:
        remote = list_bucket(client, target)
    except Exception as exc:
        raise BackupError(describe_error(exc, target)) from None
    todo: list[tuple[str, os.stat_result, str]] = []
    verified_now: dict[str, str] = {}
    for rel, st in sorted(local.items()):
        sha = state.local_sha(rel, Path(root) / rel, st)
        entry = state.entries.get(rel)
        obj = remote.get(rel)
        if obj is not None and entry and entry[0] == st.st_size and entry[2] == sha and obj == (entry[0], entry[3]):
            summary.skipped += 1
            continue
        if obj is not None and obj[0] == st.st_size:
            try:
                ok, etag = _remote_matches(client, target, rel, st.st_size, sha)
            except Exception as exc:
                summary.failed += 1
                summary.errors.append(f"{rel}: {describe_error(exc, target)}")
                continue
            if ok:
                state.record(rel, st.st_size, st.st_mtime_ns, sha, etag)
                verified_now[rel] = sha
                summary.skipped += 1
                summary.verified_existing += 1
                continue
        state.forget(rel)
        todo.append((rel, st, sha))
    if on_total is not None:
        on_total(len(todo), sum(st.st_size for _, st, _ in todo))
    with ThreadPoolExecutor(max_workers=target.workers) as pool:
        abort = threading.Event()
        futures = {pool.submit(_upload, client, target, root, rel, st, sha, abort): (rel, st, sha)
                   for rel, st, sha in todo}
        for n, future in enumerate(as_completed(futures), 1):
            rel, st, sha = futures[future]
            try:
                etag = future.result()
            except Exception as exc:
                summary.failed += 1
                summary.errors.append(f"{rel}: {exc if isinstance(exc, (BackupError, _Abort)) else describe_error(exc, target)}")
                log.error(f"File exists<NO> upload<{target.key_of(rel)}> FAILED: {summary.errors[-1]}")
            else:
                state.record(rel, st.st_size, st.st_mtime_ns, sha, etag)
                verified_now[rel] = sha
                summary.uploaded += 1
                summary.uploaded_bytes += st.st_size
                log.info(f"File exists<NO> upload<{target.key_of(rel)}>",
                         extra={"bytes": st.st_size, "sha256": sha})
            if progress is not None:
                progress(1, st.st_size)
            if n % 200 == 0:
                state.save()
    state.save()
    _mark_catalog(catalog, verified_now)
    if retention_days:
        summary.deleted_local = apply_retention(root, state, local, catalog, retention_days)
        state.save()
    summary.seconds = time.monotonic() - started
    return summary


def _mark_catalog(catalog: Any, verified: dict[str, str]) -> None:
    if catalog is None or not verified:
        return
    try:
        catalog.mark_backed_up(verified, time.time_ns())
    except Exception as exc:  # the bucket is right; the catalog is rebuilt by mode=reindex if need be
        log.warning(f"catalog not updated after backup: {exc}")


def apply_retention(root: str, state: VerifiedState, local: dict[str, os.stat_result], catalog: Any,
                    days: float) -> int:
    """Delete local files whose period ended more than ``days`` ago AND whose copy is verified."""
    cutoff = time.time_ns() - int(days * 86400 * NS)
    deleted = []
    for rel, st in local.items():
        parsed = parse_relpath(rel)
        end = parsed.period_end_ns or parsed.period_start_ns
        entry = state.entries.get(rel)
        if end > cutoff or not entry:
            continue
        path = Path(root) / rel
        if entry[0] != st.st_size or entry[2] != sha256_of(path):
            continue                         # changed since it was verified: keep it
        path.unlink()
        deleted.append(rel)
        log.info(f"retention: deleted local {rel} (verified copy in the bucket)")
    if deleted and catalog is not None:
        try:
            catalog.mark_remote_only(deleted)
        except Exception as exc:
            log.warning(f"catalog not updated after retention: {exc}")
    return len(deleted)
