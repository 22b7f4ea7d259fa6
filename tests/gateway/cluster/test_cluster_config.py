"""gateway.toml [cluster] (SPEC section 15): defaults, strictness, and one-line refusals."""

from __future__ import annotations

import pathlib

import pytest

from gateway.config import ConfigError, HostPort, load_config

BASE = 'admdvs = "510100"\n'


def write(tmp_path: pathlib.Path, cluster: str) -> pathlib.Path:
    path = tmp_path / "gateway.toml"
    path.write_text(BASE + "[cluster]\n" + cluster)
    return path


def test_without_the_table_the_gateway_runs_alone(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(BASE)
    assert load_config(path).cluster is None


def test_defaults_are_the_spec_s(tmp_path: pathlib.Path) -> None:
    config = load_config(write(tmp_path, 'redis = ["127.0.0.1:7000", "127.0.0.1:7001"]\nnode_id = "gw-a"\n'))
    assert config.cluster is not None
    assert config.cluster.redis == (HostPort("127.0.0.1", 7000), HostPort("127.0.0.1", 7001))
    assert (config.cluster.node_id, config.cluster.lease_ms, config.cluster.replicas_ack,
            config.cluster.wait_timeout_ms) == ("gw-a", 3000, 1, 1000)


def test_every_key_can_be_set(tmp_path: pathlib.Path) -> None:
    config = load_config(write(tmp_path, 'redis = ["127.0.0.1:7000"]\nnode_id = "b.2_x"\nlease_ms = 5000\n'
                                         'replicas_ack = 2\nwait_timeout_ms = 800\n'))
    assert config.cluster is not None
    assert (config.cluster.lease_ms, config.cluster.replicas_ack, config.cluster.wait_timeout_ms) == (5000, 2, 800)


@pytest.mark.parametrize(("body", "message"), [
    ('redis = ["127.0.0.1:7000"]\nnode_id = "a"\nleader = true\n', "unknown key 'cluster.leader'"),
    ('node_id = "a"\n', "key 'cluster.redis' must be an array"),
    ('redis = []\nnode_id = "a"\n', "key 'cluster.redis' must be an array"),
    ('redis = "127.0.0.1:7000"\nnode_id = "a"\n', "key 'cluster.redis' must be an array"),
    ('redis = ["localhost"]\nnode_id = "a"\n', "key 'cluster.redis' must be a string \"host:port\""),
    ('redis = ["127.0.0.1:0"]\nnode_id = "a"\n', "key 'cluster.redis' names port 0"),
    ('redis = ["127.0.0.1:7000"]\n', "key 'cluster.node_id' must be 1..64 characters"),
    ('redis = ["127.0.0.1:7000"]\nnode_id = "a b"\n', "key 'cluster.node_id' must be 1..64 characters"),
    ('redis = ["127.0.0.1:7000"]\nnode_id = "a"\nlease_ms = "3000"\n', "key 'cluster.lease_ms' must be an integer"),
    ('redis = ["127.0.0.1:7000"]\nnode_id = "a"\nlease_ms = 100\n', "key 'cluster.lease_ms' must be at least 300"),
    ('redis = ["127.0.0.1:7000"]\nnode_id = "a"\nreplicas_ack = -1\n', "key 'cluster.replicas_ack' must be at least 0"),
    ('redis = ["127.0.0.1:7000"]\nnode_id = "a"\nwait_timeout_ms = 3000\n',
     "key 'cluster.wait_timeout_ms' must be less than cluster.lease_ms"),
])
def test_refusals_name_the_file_and_the_key(tmp_path: pathlib.Path, body: str, message: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: "), str(caught.value)
    assert message in str(caught.value), str(caught.value)


def test_cluster_must_be_a_table(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(BASE + 'cluster = "yes"\n')
    with pytest.raises(ConfigError, match="key 'cluster' must be a table"):
        load_config(path)
