"""The one retry policy of bucket work: botocore retries each request, tenacity each file.

* botocore retries every request itself (:data:`BOTOCORE_RETRIES`, ``standard`` mode):
  throttling, 5xx answers, dropped and refused connections.
* :func:`with_retries` retries a whole operation (an upload with its verification, a page of
  the fast listing) when what botocore gave up on is still transient (:func:`is_transient`),
  with exponential backoff. Anything else fails at once.
* When an operation's retries run out on a transient error the endpoint is considered down
  and the pass's ``abort`` event is set: every other operation of the pass stops at once
  (a backoff sleep is cut short) with :class:`EndpointDown`, instead of waiting out its own
  retries; the next pass tries again.
"""
from __future__ import annotations

import threading
import time
import urllib.error
from typing import Callable, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from actors.backup.target import BackupError

BOTOCORE_RETRIES = {"mode": "standard", "max_attempts": 3}
ATTEMPTS = 5                   # per operation: the first try and 4 retries
FIRST_WAIT_S, MAX_WAIT_S = 0.5, 8.0
TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                   "503", "500", "502", "504", "Throttling", "ThrottlingException"}

T = TypeVar("T")


class EndpointDown(BackupError):
    """The endpoint stopped answering during this pass: the remaining work waits for the next pass."""

    def __init__(self) -> None:
        super().__init__("the endpoint stopped answering during this pass; retried next pass")


def is_transient(exc: BaseException) -> bool:
    """A connection problem, a timeout, throttling or a 5xx answer: worth trying again.

    boto3's ``S3UploadFailedError`` (a failed multipart upload) is judged by the error it
    wraps, and counts as transient when it wraps none.
    """
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (ClientError, ConnectionClosedError, ConnectTimeoutError,
                                     EndpointConnectionError, ReadTimeoutError)

    if isinstance(exc, S3UploadFailedError):
        inner = exc.__cause__ or exc.__context__
        return inner is None or is_transient(inner)
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500
    if isinstance(exc, urllib.error.URLError):
        return isinstance(exc.reason, OSError)
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError,
                        ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return str(exc.response.get("Error", {}).get("Code")) in TRANSIENT_CODES or status >= 500
    return False


def with_retries(operation: Callable[[], T], abort: threading.Event | None = None) -> T:
    """``operation()`` under the policy (see module docstring); ``abort`` is shared by a pass."""
    def attempt() -> T:
        if abort is not None and abort.is_set():
            raise EndpointDown()
        return operation()

    policy = Retrying(retry=retry_if_exception(is_transient), stop=stop_after_attempt(ATTEMPTS),
                      wait=wait_exponential(multiplier=FIRST_WAIT_S, max=MAX_WAIT_S),
                      sleep=abort.wait if abort is not None else time.sleep, reraise=True)
    try:
        return policy(attempt)
    except Exception as exc:
        if abort is not None and is_transient(exc):
            abort.set()
        raise
