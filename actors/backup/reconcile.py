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
4. uploads what is missing or differs, concurrently (multipart from ``multipart_mb`` up), and
   verifies every upload before it counts:

   * the server checks the bytes it receives against ``x-amz-checksum-sha256`` (per part for
     multipart uploads) or, where additional checksums are not supported, ``Content-MD5``;
     a corrupted body is refused and retried;
   * a ``HEAD`` then checks the size, the stored ``sha256`` metadata, and the server's
     whole-object ``ChecksumSHA256`` when it has one, else the MD5 ETag (single or multipart
     ``md5-N``, computed locally) when the ETag is an MD5 at all.

   Only then is the object recorded as verified, and ``backed_up_at`` plus the checksum set in
   the catalog (rows are optional: a file without one is backed up all the same; a row left
   unmarked by an earlier pass is marked from the local record). Transient errors
   (connection resets, 5xx, SlowDown, timeouts) are retried with backoff (botocore
   ``standard`` retries, then per file); when the endpoint stays down the rest of the pass is
   skipped; a pass interrupted at any point resumes next time.
5. optionally (``backup.retention.local_days``) deletes local files whose period ended more
   than N days ago and whose copy was verified, keeping their catalog rows as remote-only.

Backblaze B2 refuses the S3 additional-checksum headers: ``backup=b2`` goes without them
(``backup.checksums``), and any endpoint that answers "unsupported checksum header" is
switched to Content-MD5/ETag verification automatically.

Credentials come from the environment or ``.env`` (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL``, or quantpylib's ``BACKBLAZE_ENDPOINT`` /
``BACKBLAZE_ID`` / ``BACKBLAZE_KEY``), never from config files, and are never logged.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from actors.errors import TickarchiveError

from actors.storage.layout import NS, LayoutError, parse_relpath
from actors.logs import get_logger
from actors.storage.integrity import damage_message, is_damaged, sha256_file as sha256_of

log = get_logger("backup")

STATE_DIR = ".backup"
STATE_FILE = "verified.json"
TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                   "503", "500", "502", "504", "Throttling", "ThrottlingException"}


class BackupError(TickarchiveError, RuntimeError):
    """A configuration or endpoint problem; the message is one line saying what to fix."""


class LocalDamage(BackupError):
    """The local file no longer hashes to what was recorded at seal: never uploaded."""


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
    # S3 additional checksums (x-amz-checksum-sha256 on PUT, x-amz-checksum-mode on HEAD).
    # Backblaze B2 rejects those headers, so b2 starts without them; any other endpoint that
    # answers "unsupported checksum header" switches them off for the rest of the process.
    checksums: bool = True
    data_dir: str | None = None          # backup=local: the embedded server's folder

    def key_of(self, rel: str) -> str:
        prefix = self.prefix.strip("/")
        return f"{prefix}/{rel}" if prefix else rel

    @property
    def scope(self) -> str:
        """Identity of the bucket for the local record of verified objects.

        The embedded server gets new free ports on every start, so ``backup=local`` is
        identified by its data folder, not by its endpoint.
        """
        where = f"embedded:{self.data_dir}" if self.kind == "local" else str(self.endpoint)
        return f"{where}|{self.bucket}|{self.prefix.strip('/')}"


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
    damaged: list[str] = field(default_factory=list)     # local files that contradict their seal hash
    seconds: float = 0.0

    def line(self) -> str:
        text = (f"uploaded {self.uploaded} files, {self.uploaded_bytes / 1e6:.1f} MB, skipped {self.skipped}, "
                f"failed {self.failed}")
        if self.damaged:
            text += f", damaged {len(self.damaged)} (not uploaded; the bucket copies are kept)"
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


KINDS = ("none", "local", "s3", "b2")
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-_]{1,61}[A-Za-z0-9]$")


def validate_section(section: dict | None) -> dict:
    """Check the ``backup`` config group (called by ``actors/config.py``); returns it normalized.

    Every problem is one :class:`ConfigError` line naming the key. Credentials are not
    config keys at all (struct mode refuses them); they come from the environment.
    """
    from actors.storage.layout import parse_duration
    from actors.errors import ConfigError

    out = dict(section or {})
    kind = out.get("name", "none")
    if kind not in KINDS:
        raise ConfigError(f"backup: {kind!r} is not a backup target (allowed: {', '.join(KINDS)})")
    out["name"] = kind
    if kind == "none":
        return out
    try:
        parse_duration(out.get("interval") or "10m", "backup.interval")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for key, low, high, default in (("workers", 1, 256, 8), ("multipart_mb", 5, 5000, 64)):
        value = out.get(key, default)
        if value is None:
            value = default
        try:
            if isinstance(value, bool) or int(value) != float(value):
                raise ValueError
            value = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"backup.{key}: {value!r} is not an integer") from None
        if not low <= value <= high:
            raise ConfigError(f"backup.{key}: {value} is out of range ({low}..{high})")
        out[key] = value
    retention = dict(out.get("retention") or {})
    days = retention.get("local_days")
    if days not in (None, "", 0):
        try:
            days = float(days)
        except (TypeError, ValueError):
            raise ConfigError(f"backup.retention.local_days: {days!r} is not a number of days") from None
        if days <= 0:
            raise ConfigError("backup.retention.local_days: must be > 0 (null keeps every local file)")
        retention["local_days"] = days
    else:
        retention["local_days"] = None
    out["retention"] = retention
    bucket = out.get("bucket")
    if kind in ("s3", "b2") and not bucket:
        raise ConfigError(f"backup.bucket: required with backup={kind} (e.g. backup.bucket=archives)")
    if bucket and not _BUCKET_NAME.match(str(bucket)):
        raise ConfigError(f"backup.bucket: {bucket!r} is not a bucket name (3-63 letters, digits, '.', '-')")
    prefix = str(out.get("prefix") or "").strip("/")
    if prefix and (any(part in ("", ".", "..") for part in prefix.split("/")) or "\\" in prefix):
        raise ConfigError(f"backup.prefix: {out.get('prefix')!r} is not a clean key prefix (e.g. desk/archives)")
    out["prefix"] = prefix
    endpoint = out.get("endpoint")
    if endpoint and kind != "b2" and not str(endpoint).startswith(("http://", "https://")):
        raise ConfigError(f"backup.endpoint: {endpoint!r} must start with http:// or https://")
    checksums = out.get("checksums", "auto")
    if checksums not in ("auto", True, False, "true", "false"):
        raise ConfigError(f"backup.checksums: {checksums!r} not allowed (auto, true, false)")
    return out


def _checksums(section: dict, kind: str) -> bool:
    value = section.get("checksums", "auto")
    if value in (True, "true"):
        return True
    if value in (False, "false"):
        return False
    return kind != "b2"     # B2 answers "Unsupported header 'x-amz-checksum-sha256'"


def resolve_target(section: dict, root: str) -> Target | None:
    """The configured target, with keys from the environment (``.env`` is read too)."""
    kind = (section or {}).get("name", "none")
    if kind == "none":
        return None
    try:
        section = validate_section(section)
    except ValueError as exc:
        raise BackupError(str(exc)) from None
    try:
        from dotenv import find_dotenv, load_dotenv
        load_dotenv(find_dotenv(usecwd=True), override=False)    # ./.env (or a parent's), never overriding
        load_dotenv(Path(__file__).resolve().parents[2] / ".env", override=False)   # the checkout's .env
    except ImportError:  # python-dotenv is a dependency; tolerate its absence
        pass
    env = os.environ
    common = dict(prefix=str(section.get("prefix") or ""), region=section.get("region"),
                  workers=int(section.get("workers") or 8), multipart_mb=int(section.get("multipart_mb") or 64),
                  checksums=_checksums(section, kind))
    if kind == "local":
        endpoint = section.get("endpoint")      # set by the archiver, which runs the one server
        if not endpoint:
            endpoint = ensure_embedded(root, str(section.get("bucket") or "archives")).endpoint
        return Target("local", endpoint, str(section.get("bucket") or "archives"),
                      access_key="local", secret_key="local", data_dir=str(embedded_dir(root)), **common)
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
        m = re.match(r"^https?://s3\.([a-z0-9-]+)\.backblazeb2\.com", endpoint)
        if m and not common["region"]:
            common["region"] = m.group(1)          # B2 signs with the region in its endpoint
    else:
        endpoint = section.get("endpoint") or env.get("AWS_ENDPOINT_URL") or None
        access = env.get("AWS_ACCESS_KEY_ID")
        secret = env.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret:
        names = "BACKBLAZE_ID/BACKBLAZE_KEY" if kind == "b2" else "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        raise BackupError(f"backup={kind}: no credentials (set {names} in the environment or .env)")
    return Target(kind, endpoint, str(bucket), access_key=access, secret_key=secret, **common)


def ensure_embedded(root: str, bucket: str):
    """The embedded SeaweedFS of ``backup=local``, started once per process.

    A server that another live process (e.g. a running archiver) started on the same folder
    is used as it is and left running; one left behind by a process that died is adopted and
    stopped by :func:`stop_embedded` like our own.
    """
    from actors.backup.embedded import SeaweedS3

    data_dir = embedded_dir(root)
    with _embedded_lock:
        server = _embedded.get(str(data_dir))
        if server is not None and (server.adopted_pid or (server.proc is not None and server.proc.poll() is None)):
            return server
        running, orphan = SeaweedS3.adopt(data_dir, buckets=(bucket,))
        if running is not None and not orphan:
            running.adopted_pid = None       # someone else's: never stopped from here
            return running
        server = running or SeaweedS3(data_dir, buckets=(bucket,)).start()
        _embedded[str(data_dir)] = server
        return server


def stop_embedded() -> None:
    """Stop the embedded servers this process started or adopted."""
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
                      signature_version="s3v4",     # also for presigned listing URLs (SigV2 is refused widely)
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
        if code in ("403", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken",
                    "ExpiredToken"):
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
        self.scope = target.scope
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

    def hash_known(self, rel: str, st: os.stat_result) -> bool:
        known = self.hashes.get(rel)
        return bool(known) and known[0] == st.st_size and known[1] == st.st_mtime_ns

    def forget_hash(self, rel: str) -> None:
        with self.lock:
            self.hashes.pop(rel, None)

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
    """key relative to the root -> (size, etag), one paged listing under the prefix.

    Pages are fetched through presigned ``ListObjectsV2`` URLs and read with ElementTree,
    about 5x faster than botocore's generic response parser (which dominates a no-op pass
    over 100,000 objects); on any surprise (an error status, a proxy, an odd answer) the
    whole listing is done again with the boto3 paginator, which also gives the precise error.
    """
    prefix = target.prefix.strip("/")
    kwargs = {"Bucket": target.bucket}
    if prefix:
        kwargs["Prefix"] = prefix + "/"
    pages = _fast_pages(client, kwargs)
    if pages is None:
        pages = (page.get("Contents", []) for page in client.get_paginator("list_objects_v2").paginate(**kwargs))
    out = {}
    for contents in pages:
        for obj in contents:
            key = obj["Key"]
            rel = key[len(prefix) + 1:] if prefix else key
            out[rel] = (obj["Size"], obj.get("ETag", "").strip('"'))
    return out


def _fast_pages(client, kwargs: dict) -> list[list[dict]] | None:
    """All listing pages as ``[{"Key", "Size", "ETag"}]`` lists, or None if anything is unusual."""
    import urllib.request
    import xml.etree.ElementTree as ET
    from urllib.parse import unquote_plus

    pages: list[list[dict]] = []
    token = None
    try:
        for _ in range(1_000_000):
            params = dict(kwargs, MaxKeys=1000)
            if token:
                params["ContinuationToken"] = token
            url = client.generate_presigned_url("list_objects_v2", Params=params, ExpiresIn=900)
            body = None
            for attempt in range(4):                      # transient trouble: retry, then fall back
                try:
                    with urllib.request.urlopen(url, timeout=60) as resp:
                        if resp.status != 200:
                            return None
                        body = resp.read()
                    break
                except urllib.error.HTTPError:
                    return None                           # 403/404/5xx: the paginator says what it is
                except OSError:
                    if attempt == 3:
                        return None
                    time.sleep(0.5 * 2 ** attempt)
            root = ET.fromstring(body)
            if not root.tag.endswith("ListBucketResult"):
                return None
            ns = root.tag[:-len("ListBucketResult")]
            encoded = (root.findtext(ns + "EncodingType") or "").lower() == "url"   # botocore asks for it
            page = []
            for item in root.iter(ns + "Contents"):
                key = item.findtext(ns + "Key")
                if key is None:
                    return None
                page.append({"Key": unquote_plus(key) if encoded else key, "Size": int(item.findtext(ns + "Size")),
                             "ETag": item.findtext(ns + "ETag") or ""})
            pages.append(page)
            if (root.findtext(ns + "IsTruncated") or "").strip().lower() != "true":
                return pages
            token = root.findtext(ns + "NextContinuationToken")
            if not token:
                return None
    except Exception:                                      # parse error, odd XML, no URL support, ...
        return None
    return None


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


_MD5_ETAG = re.compile(r"^[0-9a-f]{32}(-\d+)?$")


def _remote_matches(client, target: Target, rel: str, size: int, sha: str,
                    etag: str | Callable[[], str] | None = None) -> tuple[bool, str]:
    """HEAD the object: same size, the same recorded SHA-256, and the content checksums we can see.

    * ``ChecksumSHA256`` (S3 additional checksum, computed by the server from the bytes it
      received) must equal the file's SHA-256 when it is a whole-object checksum;
    * otherwise, when ``etag`` (the MD5 ETag expected for what we just uploaded) is given and
      the server's ETag is an MD5 ETag, they must be equal. ETags that are not MD5s (e.g.
      SSE-KMS on AWS) are not compared. ``etag`` may be a function: it is only computed
      (reading the file again) when the server has no whole-object checksum.
    """
    from botocore.exceptions import ClientError

    kwargs = {"ChecksumMode": "ENABLED"} if target.checksums else {}
    try:
        head = client.head_object(Bucket=target.bucket, Key=target.key_of(rel), **kwargs)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return False, ""
        raise
    remote_etag = head.get("ETag", "").strip('"')
    if head.get("ContentLength") != size or (head.get("Metadata") or {}).get("sha256") != sha:
        return False, ""
    s3_sum = head.get("ChecksumSHA256")
    if s3_sum and "-" not in s3_sum:
        if s3_sum != base64.b64encode(bytes.fromhex(sha)).decode():
            return False, ""
    elif etag and _MD5_ETAG.match(remote_etag):
        if remote_etag != (etag() if callable(etag) else etag):
            return False, ""
    return True, remote_etag


def multipart_etag(path: str | Path, chunk_bytes: int) -> str:
    """The ETag S3 gives an upload of ``path`` in ``chunk_bytes`` parts: MD5 of the part MD5s, ``-N``."""
    parts = []
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            parts.append(hashlib.md5(chunk).digest())
    if len(parts) <= 1:
        return parts[0].hex() if parts else hashlib.md5(b"").hexdigest()
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


def _checksum_unsupported(exc: BaseException | None) -> bool:
    """The endpoint refused an S3 additional-checksum header (Backblaze B2 and some others)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    err = exc.response.get("Error", {})
    return (str(err.get("Code")) in ("InvalidArgument", "NotImplemented", "InvalidRequest")
            and "checksum" in str(err.get("Message", "")).lower())


class _Abort(Exception):
    """The endpoint went away during the pass: the remaining uploads wait for the next pass."""


def _upload(client, target: Target, root: str, rel: str, st: os.stat_result, sha: str | None,
            abort: threading.Event | None = None, retries: int = 4,
            state: VerifiedState | None = None, record: dict | None = None) -> tuple[str, str]:
    """Upload one file with its checksum and verify it; returns (ETag, SHA-256). Raises on failure.

    ``sha`` None: hash the file here (through ``state``'s cache when given), then refuse it
    (:class:`LocalDamage`) when it contradicts the catalog ``record`` made at seal.

    Transient errors are retried with backoff; when they persist the endpoint is considered
    down and ``abort`` is set, so the other uploads of the pass stop instead of waiting out
    their own retries.
    """
    from boto3.s3.transfer import TransferConfig

    path = Path(root) / rel
    if sha is None:
        if abort is not None and abort.is_set():
            raise _Abort("the endpoint stopped answering during this pass; retried next pass")
        sha = state.local_sha(rel, path, st) if state is not None else sha256_of(path)
        if is_damaged(path, sha, record):
            raise LocalDamage(damage_message(rel))
    chunk = target.multipart_mb << 20
    config = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=4, use_threads=True)
    delay = 0.5
    attempt = 0
    while True:
        if abort is not None and abort.is_set():
            raise _Abort("the endpoint stopped answering during this pass; retried next pass")
        checksums = target.checksums
        extra: dict[str, Any] = {"Metadata": {"sha256": sha}, "ContentType": "application/vnd.apache.parquet"}
        try:
            if st.st_size < chunk:
                # one request; the server checks the body against our SHA-256 (x-amz-checksum-sha256)
                # or, where that is not supported, its MD5 (Content-MD5): a corrupted body is refused
                with open(path, "rb") as f:
                    body = f.read()
                if checksums:                    # the server hashes the body with SHA-256 and compares
                    extra["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha)).decode()
                    expected_etag: Any = lambda: multipart_etag(path, chunk)   # only if no checksum comes back
                else:
                    md5 = hashlib.md5(body)
                    extra["ContentMD5"] = base64.b64encode(md5.digest()).decode()
                    expected_etag = md5.hexdigest()
                client.put_object(Bucket=target.bucket, Key=target.key_of(rel), Body=body, **extra)
                del body
            else:
                # multipart: each part's checksum is checked by the server where supported; the
                # whole object is checked against the multipart ETag computed from the file
                if checksums:
                    extra["ChecksumAlgorithm"] = "SHA256"
                client.upload_file(str(path), target.bucket, target.key_of(rel), ExtraArgs=extra, Config=config)
                from s3transfer.utils import ChunksizeAdjuster   # the part size boto3 really uses
                part = ChunksizeAdjuster().adjust_chunksize(chunk, st.st_size)
                expected_etag = lambda: multipart_etag(path, part)     # noqa: E731
            ok, etag = _remote_matches(client, target, rel, st.st_size, sha, expected_etag)
            if not ok:
                raise BackupError(f"{rel}: uploaded object does not verify (size, SHA-256 or ETag differ)")
            now = path.stat()
            if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                raise BackupError(f"{rel}: the local file changed during the upload; it is uploaded next pass")
            return etag, sha
        except BackupError:
            raise
        except Exception as exc:
            if checksums and (_checksum_unsupported(exc) or _checksum_unsupported(exc.__cause__)):
                if target.checksums:
                    target.checksums = False
                    log.warning(f"{target.endpoint or 'the endpoint'} does not support S3 additional checksums; "
                                "verifying with Content-MD5/ETag and the stored SHA-256 instead "
                                "(backup.checksums=false skips this probe)")
                continue                          # the same attempt again, without checksum headers
            inner = getattr(exc, "__cause__", None) or exc
            transient = _transient(exc) or _transient(inner) or "S3UploadFailedError" in type(exc).__name__
            if attempt == retries or not transient:
                if transient and abort is not None:
                    abort.set()
                raise
            attempt += 1
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


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
    todo: list[tuple[str, os.stat_result, str | None]] = []
    verified_now: dict[str, str] = {}
    records = _seal_records(catalog, [rel for rel, st in local.items() if not state.hash_known(rel, st)])
    head_down = False                        # the endpoint stopped answering HEADs: don't wait per file
    for rel, st in sorted(local.items()):
        obj = remote.get(rel)
        if obj is None:                      # not in the bucket: hashed by the upload worker, in parallel
            state.forget(rel)
            todo.append((rel, st, None))
            continue
        sha = state.local_sha(rel, Path(root) / rel, st)
        if is_damaged(Path(root) / rel, sha, records.get(rel)):
            _report_damage(summary, state, rel)
            continue
        entry = state.entries.get(rel)
        if entry and entry[0] == st.st_size and entry[2] == sha and obj == (entry[0], entry[3]):
            summary.skipped += 1
            continue
        if obj[0] == st.st_size:
            try:
                if head_down:
                    raise _Abort("the endpoint stopped answering during this pass; retried next pass")
                ok, etag = _remote_matches(client, target, rel, st.st_size, sha)
            except Exception as exc:
                head_down = head_down or isinstance(exc, _Abort) or _transient(exc)
                summary.failed += 1
                summary.errors.append(f"{rel}: {exc if isinstance(exc, _Abort) else describe_error(exc, target)}")
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
        futures = {pool.submit(_upload, client, target, root, rel, st, sha, abort, state=state,
                               record=records.get(rel)): (rel, st)
                   for rel, st, sha in todo}
        for n, future in enumerate(as_completed(futures), 1):
            rel, st = futures[future]
            try:
                etag, sha = future.result()
            except LocalDamage:
                _report_damage(summary, state, rel)
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
    summary.damaged.sort()
    _mark_catalog(catalog, {**_unmarked_verified(catalog, state, local), **verified_now})
    if retention_days:
        summary.deleted_local = apply_retention(root, state, local, catalog, retention_days)
        state.save()
    summary.seconds = time.monotonic() - started
    return summary


def _seal_records(catalog: Any, keys: list[str]) -> dict[str, dict]:
    """Catalog rows (SHA-256 and sealed_at recorded at seal) of the files about to be hashed."""
    if catalog is None or not keys or not hasattr(catalog, "get_many"):
        return {}
    try:
        return catalog.get_many(keys)
    except Exception as exc:    # no reference to check against: files are uploaded as they are
        log.warning(f"catalog not readable, local files not checked against their seal hashes: {exc}")
        return {}


def _report_damage(summary: PassSummary, state: VerifiedState, rel: str) -> None:
    summary.damaged.append(rel)
    state.forget_hash(rel)                   # checked again next pass, never trusted from the cache
    log.error(f"not uploaded: {damage_message(rel)}; the bucket copy is kept")


def _unmarked_verified(catalog: Any, state: VerifiedState, local: dict[str, os.stat_result]) -> dict[str, str]:
    """Catalog rows not (or differently) marked although their file is verified in the bucket.

    Heals a catalog update that failed after an earlier pass, and rows added later (reindex),
    without any request to the bucket: the local record says what was verified.
    """
    if catalog is None or not state.entries:
        return {}
    try:
        if hasattr(catalog, "query"):
            table = catalog.query("backed_up_at IS NULL OR backup_sha256 IS NULL", columns=["key", "backup_sha256"])
        else:
            table = catalog.all().select(["key", "backup_sha256"])
    except Exception as exc:
        log.warning(f"catalog not readable for backup bookkeeping: {exc}")
        return {}
    out = {}
    for key, marked in zip(table.column("key").to_pylist(), table.column("backup_sha256").to_pylist()):
        entry = state.entries.get(key)
        st = local.get(key)
        if entry and st is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns and marked != entry[2]:
            out[key] = entry[2]
    return out


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
