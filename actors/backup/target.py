"""Where backups go: the ``backup`` config group checked, and resolved into a :class:`Target`.

Credentials come from the environment or ``.env`` (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL``, or quantpylib's ``BACKBLAZE_ENDPOINT`` /
``BACKBLAZE_ID`` / ``BACKBLAZE_KEY``), never from config files, and are never logged.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.errors import ConfigError, TickarchiveError

KINDS = ("none", "local", "s3", "b2")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")     # AWS rules (MinIO, SeaweedFS alike)
_B2_BUCKET = re.compile(r"^[A-Za-z0-9\-]{6,50}$")                   # Backblaze B2 rules
_IP_LIKE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


class BackupError(TickarchiveError, RuntimeError):
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
    # S3 additional checksums (x-amz-checksum-sha256 on PUT, x-amz-checksum-mode on HEAD).
    # Backblaze B2 rejects those headers, so b2 starts without them; any other endpoint that
    # answers "unsupported checksum header" switches them off for the rest of the process.
    checksums: bool = True
    data_dir: str | None = None          # backup=local: the embedded server's folder

    def key_of(self, rel: str) -> str:
        """The bucket key of a path relative to the archive root."""
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


def validate_section(section: dict | None) -> dict:
    """Check the ``backup`` config group (called by ``actors/config.py``); returns it normalized.

    Every problem is one :class:`ConfigError` line naming the key. Credentials are not
    config keys at all (struct mode refuses them); they come from the environment.
    """
    from actors.storage.layout import parse_duration

    out = dict(section or {})
    kind = out.get("name", "none")
    if kind not in KINDS:
        raise ConfigError(f"backup: {kind!r} is not a backup target (allowed: {', '.join(KINDS)})")
    out["name"] = kind
    if kind == "none":
        return out
    try:
        parse_duration(out.get("interval") or "10m", "backup.interval")
        parse_duration(out.get("audit_interval") or "1d", "backup.audit_interval")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out["workers"] = _int_in_range(out, "workers", 1, 256, 8)
    out["multipart_mb"] = _int_in_range(out, "multipart_mb", 5, 5000, 64)
    out["retention"] = _retention(out.get("retention"))
    bucket = out.get("bucket")
    if kind in ("s3", "b2") and not bucket:
        raise ConfigError(f"backup.bucket: required with backup={kind} (e.g. backup.bucket=archives)")
    if bucket and kind == "b2" and not _B2_BUCKET.match(str(bucket)):
        raise ConfigError(f"backup.bucket: {bucket!r} is not a B2 bucket name (6-50 letters, digits, '-')")
    if bucket and kind != "b2" and (not _S3_BUCKET.match(str(bucket)) or ".." in str(bucket)
                                    or _IP_LIKE.match(str(bucket))):
        raise ConfigError(f"backup.bucket: {bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, "
                          "'.', '-'; starting and ending with a letter or digit)")
    prefix = str(out.get("prefix") or "").strip("/")
    if prefix and (any(part in ("", ".", "..") for part in prefix.split("/")) or "\\" in prefix):
        raise ConfigError(f"backup.prefix: {out.get('prefix')!r} is not a clean key prefix (e.g. desk/archives)")
    out["prefix"] = prefix
    endpoint = out.get("endpoint")
    if endpoint and kind != "b2" and not str(endpoint).startswith(("http://", "https://")):
        raise ConfigError(f"backup.endpoint: {endpoint!r} must start with http:// or https://")
    if out.get("checksums", "auto") not in ("auto", True, False, "true", "false"):
        raise ConfigError(f"backup.checksums: {out['checksums']!r} not allowed (auto, true, false)")
    return out


def _int_in_range(section: dict, key: str, low: int, high: int, default: int) -> int:
    value = section.get(key, default)
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
    return value


def _retention(group: Any) -> dict:
    retention = dict(group or {})
    days = retention.get("local_days")
    if days in (None, "", 0):
        retention["local_days"] = None
        return retention
    try:
        days = float(days)
    except (TypeError, ValueError):
        raise ConfigError(f"backup.retention.local_days: {days!r} is not a number of days") from None
    if days <= 0:
        raise ConfigError("backup.retention.local_days: must be > 0 (null keeps every local file)")
    retention["local_days"] = days
    return retention


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
    _load_dotenv()
    common = dict(prefix=str(section.get("prefix") or ""), region=section.get("region"),
                  workers=int(section.get("workers") or 8), multipart_mb=int(section.get("multipart_mb") or 64),
                  checksums=_checksums(section, kind))
    if kind == "local":
        from actors.backup.embedded import embedded_dir, ensure_embedded

        bucket = str(section.get("bucket") or "archives")
        endpoint = section.get("endpoint") or ensure_embedded(root, bucket).endpoint   # the archiver's, if set
        return Target("local", endpoint, bucket, access_key="local", secret_key="local",
                      data_dir=str(embedded_dir(root)), **common)
    bucket = section.get("bucket")
    if not bucket:
        raise BackupError(f"backup.bucket: required with backup={kind} (e.g. backup.bucket=archives)")
    endpoint, access, secret = _b2_endpoint_and_keys(section, common) if kind == "b2" else (
        section.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL") or None,
        os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"))
    if not access or not secret:
        names = "BACKBLAZE_ID/BACKBLAZE_KEY" if kind == "b2" else "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        raise BackupError(f"backup={kind}: no credentials (set {names} in the environment or .env)")
    return Target(kind, endpoint, str(bucket), access_key=access, secret_key=secret, **common)


def _load_dotenv() -> None:
    """``./.env`` (or a parent's) and the checkout's ``.env``, never overriding the environment."""
    try:
        from dotenv import find_dotenv, load_dotenv
    except ImportError:  # python-dotenv is a dependency; tolerate its absence
        return
    load_dotenv(find_dotenv(usecwd=True), override=False)
    load_dotenv(Path(__file__).resolve().parents[2] / ".env", override=False)


def _b2_endpoint_and_keys(section: dict, common: dict) -> tuple[str, str | None, str | None]:
    """Backblaze: endpoint and keys (quantpylib's names first); sets the region B2 signs with."""
    env = os.environ
    endpoint = section.get("endpoint") or env.get("BACKBLAZE_ENDPOINT") or env.get("AWS_ENDPOINT_URL")
    if not endpoint:
        raise BackupError("backup.endpoint: required with backup=b2 (or set BACKBLAZE_ENDPOINT)")
    if not endpoint.startswith("http"):
        endpoint = "https://" + endpoint
    m = re.match(r"^https?://s3\.([a-z0-9-]+)\.backblazeb2\.com", endpoint)
    if m and not common["region"]:
        common["region"] = m.group(1)          # B2 signs with the region in its endpoint
    return (endpoint, env.get("BACKBLAZE_ID") or env.get("AWS_ACCESS_KEY_ID"),
            env.get("BACKBLAZE_KEY") or env.get("AWS_SECRET_ACCESS_KEY"))
