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
