"""Joining a running Ray cluster (``ray=cluster``) with Ray's token authentication left on.

Ray 2.60 turns token authentication on for clusters started with a token, and a driver without
the right token only fails after ~20 s of GCS warnings. :func:`check_cluster` asks the head's
dashboard first (``/api/authentication_mode`` is public) and turns a missing or refused token
into one line; with a token it sets ``RAY_AUTH_MODE=token`` (Ray does not enable it by itself
for an explicit address). Plain logic: Ray is only touched to refresh its cached config.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from actors.errors import ConfigError

CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")     # where `ray start` writes the GCS address


def gcs_address(address: str) -> str:
    """``host:port`` of the cluster's GCS (``auto``: the cluster ``ray start`` left on this machine)."""
    if address != "auto":
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        return CURRENT_CLUSTER.read_text().strip()
    except OSError:
        raise ConfigError("ray=cluster: no running Ray cluster found on this machine (start one with "
                          "`ray start --head`, or set ray.address=HOST:PORT)") from None


def local_token() -> str | None:
    """The token this process would present: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def _get(url: str, token: str | None = None, timeout_s: float = 3.0) -> tuple[int, bytes] | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:      # loopback or the head node
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, ValueError):
        return None


def check_cluster(address: str, dashboard_port: int = 8265) -> str:
    """The GCS address to join, after checking the token against the head's dashboard.

    Raises :class:`ConfigError` (one line) when the cluster wants a token and none is set here,
    or refuses the one that is. When the dashboard does not answer, nothing can be checked
    and Ray's own connection error applies.
    """
    gcs = gcs_address(address)
    host = gcs.rsplit(":", 1)[0]
    check_reachable(gcs, "set by `ray start` on this machine" if address == "auto" else "ray.address")
    base = f"http://{host}:{dashboard_port}"
    answer = _get(f"{base}/api/authentication_mode")
    if answer is None or answer[0] != 200:
        return gcs
    try:
        mode = json.loads(answer[1]).get("authentication_mode")
    except (ValueError, AttributeError):
        return gcs
    if mode != "token":
        return gcs
    token = local_token()
    if not token:
        raise ConfigError(f"ray=cluster: the cluster at {gcs} requires a token and none is set here: "
                          "export RAY_AUTH_TOKEN=<output of `ray get-auth-token` on the head> "
                          "(or copy it to ~/.ray/auth_token)")
    checked = _get(f"{base}/api/version", token)
    if checked is not None and checked[0] in (401, 403):
        raise ConfigError(f"ray=cluster: the cluster at {gcs} refused this machine's token "
                          "(RAY_AUTH_TOKEN / ~/.ray/auth_token): use the head's `ray get-auth-token`")
    if os.environ.get("RAY_AUTH_MODE") is None:
        os.environ["RAY_AUTH_MODE"] = "token"
        enable_token_mode()
    return gcs


def check_reachable(gcs: str, origin: str, timeout_s: float = 3.0) -> None:
    """Raise :class:`ConfigError` at once when nothing accepts connections at the GCS address
    (Ray itself would retry with time-out warnings for minutes)."""
    import socket

    host, _, port = gcs.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    raise ConfigError(f"ray=cluster: no Ray cluster answers at {gcs} ({origin}: {reason}); start one with "
                      "`ray start --head` on the head node, or find its address with `ray status` there and pass "
                      "ray.address=HOST:6379")


def enable_token_mode() -> None:
    """Make an already imported Ray see ``RAY_AUTH_MODE=token`` (it caches its config at import)."""
    import sys

    if "ray" in sys.modules:
        from ray._raylet import Config    # what Ray itself calls after enabling token auth (2.60)
        Config.initialize("")
