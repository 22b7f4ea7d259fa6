"""Fixtures shared across the test packages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from load_tests.redis_cluster import LocalCluster, free_base_port, redis_available


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A Redis Cluster on loopback (3 primaries, two replicas each) for the whole session.

    Skips, saying why, where Debian's redis-server is not installed (the Makefile installs it).
    """
    missing = redis_available()
    if missing is not None:
        pytest.skip(f"needs a Redis Cluster: {missing}")
    cluster = LocalCluster(tmp_path_factory.mktemp("redis"), free_base_port())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
