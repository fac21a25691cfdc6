"""Is the object in the bucket the file? Size, SHA-256, S3 checksums and MD5 ETags.

An upload counts only once a ``HEAD`` shows the size, the ``sha256`` metadata stored with
the object, and the strongest content check the server offers: its whole-object
``ChecksumSHA256`` (computed from the bytes it received) when it has one, else the MD5 ETag
(single or multipart ``md5-N``, computed locally) when the ETag is an MD5 at all (ETags that
are not, e.g. SSE-KMS on AWS, are not compared). A download counts once its size and
SHA-256 match what the catalog or the object's metadata say.

Backblaze B2 refuses the S3 additional-checksum headers (:func:`checksum_unsupported`
recognises the answer); such endpoints are verified by Content-MD5/ETag instead.
"""
from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any, Callable

from actors.errors import TickarchiveError

MD5_ETAG = re.compile(r"^[0-9a-f]{32}(-\d+)?$")


class MismatchError(TickarchiveError, ValueError):
    """Downloaded bytes do not match the size or SHA-256 they must have (nothing was written)."""


def sha256_b64(sha_hex: str) -> str:
    """A hex SHA-256 as S3 writes checksums: base64 of the digest."""
    return base64.b64encode(bytes.fromhex(sha_hex)).decode()


def multipart_etag(path: str | Path, chunk_bytes: int) -> str:
    """The ETag S3 gives an upload of ``path`` in ``chunk_bytes`` parts: MD5 of the part MD5s, ``-N``."""
    parts = []
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            parts.append(hashlib.md5(chunk).digest())
    if len(parts) <= 1:
        return parts[0].hex() if parts else hashlib.md5(b"").hexdigest()
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


def checksum_unsupported(exc: BaseException | None) -> bool:
    """The endpoint refused an S3 additional-checksum header (Backblaze B2 and some others).

    Looks through the error a boto3 wrapper (e.g. ``S3UploadFailedError``) was raised from.
    """
    from botocore.exceptions import ClientError

    for err in (exc, getattr(exc, "__cause__", None), getattr(exc, "__context__", None)):
        if isinstance(err, ClientError):
            info = err.response.get("Error", {})
            return (str(info.get("Code")) in ("InvalidArgument", "NotImplemented", "InvalidRequest")
                    and "checksum" in str(info.get("Message", "")).lower())
    return False


def head_verifies(head: dict[str, Any] | None, size: int, sha: str,
                  etag: str | Callable[[], str] | None = None) -> bool:
    """A ``HEAD`` answer shows the file: see the module docstring.

    ``etag`` is the MD5 ETag expected for what was just uploaded; it may be a function, only
    called (reading the file again) when the server has no whole-object checksum.
    """
    if head is None or head.get("ContentLength") != size or (head.get("Metadata") or {}).get("sha256") != sha:
        return False
    s3_sum = head.get("ChecksumSHA256")
    if s3_sum and "-" not in s3_sum:
        return s3_sum == sha256_b64(sha)
    remote_etag = head.get("ETag", "").strip('"')
    if etag and MD5_ETAG.match(remote_etag):
        return remote_etag == (etag() if callable(etag) else etag)
    return True


ADOPT_PART_SIZES = (8 << 20, 16 << 20, 5 << 20, 64 << 20)   # boto3's default (quantpylib's) first


def is_foreign(head: dict[str, Any] | None) -> bool:
    """An object stored without our ``sha256`` metadata (uploaded by another tool, e.g. quantpylib)."""
    return head is not None and not (head.get("Metadata") or {}).get("sha256")


def etag_matches_file(head: dict[str, Any], path: str | Path, size: int) -> bool | None:
    """Whether a foreign object's MD5 ETag shows the file's content: True/False, or None when the
    ETag cannot tell (not an MD5, or a multipart upload of an unusual part size)."""
    etag = head.get("ETag", "").strip('"')
    if head.get("ContentLength") != size or not MD5_ETAG.match(etag):
        return None if head.get("ContentLength") == size else False
    if "-" not in etag:
        return multipart_etag(path, max(size, 1)) == etag
    parts = int(etag.split("-")[1])
    for chunk in ADOPT_PART_SIZES:
        if -(-size // chunk) == parts and multipart_etag(path, chunk) == etag:
            return True
    return None


def check_download(key: str, size: int, sha: str, expected_size: int | None, expected_sha: str | None) -> None:
    """Raise :class:`MismatchError` naming ``key`` when a download is not what it must be."""
    if expected_size is not None and size != expected_size:
        raise MismatchError(f"{key}: size mismatch (bucket object {size} bytes, expected {expected_size})")
    if expected_sha is not None and sha != expected_sha:
        raise MismatchError(f"{key}: checksum mismatch (SHA-256 {sha[:16]}..., "
                            f"expected {expected_sha[:16]}...): not restored")
