"""Strict loader for `gateway.toml` (SPEC section 10 plus the project's limits and journal keys).

Every key is known in advance: an unknown key or a value of the wrong type raises `ConfigError`
whose message is one line naming the file and the key, so `serve` can print it and exit.
Paths are resolved relative to the directory holding the file.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import tomllib
from typing import Any

from protocol.limits import MSGPACK_LEN_MAX

__all__ = [
    "ClusterConfig",
    "ConfigError",
    "GatewayConfig",
    "HostPort",
    "JournalConfig",
    "LimitsConfig",
    "ListenConfig",
    "PathsConfig",
    "load_config",
]


class ConfigError(Exception):
    """A configuration file cannot be used; `str(err)` is one line naming the file and the key."""


@dataclasses.dataclass(frozen=True)
class HostPort:
    """A listen address; port 0 asks the kernel for a free port (tests)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class ListenConfig:
    data: HostPort = HostPort("127.0.0.1", 8600)
    admin: HostPort = HostPort("127.0.0.1", 8601)


@dataclasses.dataclass(frozen=True)
class PathsConfig:
    """Files of the region; `catalogue` and `accounts` (SPEC 13) are None when the feature is off."""

    registry: pathlib.Path
    secrets: pathlib.Path
    signing_key: pathlib.Path
    data_dir: pathlib.Path
    catalogue: pathlib.Path | None = None
    accounts: pathlib.Path | None = None


@dataclasses.dataclass(frozen=True)
class LimitsConfig:
    """Caps and deadlines of the HTTP shell. Each one bounds what a hostile client can hold."""

    body_bytes_max: int = 65536
    session_ttl_s: int = 43200
    connections_max: int = 1024
    connections_per_address_max: int = 256
    requests_in_flight_max: int = 256
    # Admission (gateway/server/admission.py): when the core is busy, admit about
    # admission_target_ms worth of work at once (in flight = throughput x target); a request
    # that waited admission_wait_max_ms is shed instead, with at most sheds_per_answer shed
    # answers for each admitted one answered.
    admission_target_ms: int = 30
    admission_wait_max_ms: int = 40
    sheds_per_answer: float = 4.0
    header_bytes_max: int = 16384
    read_timeout_s: float = 10.0
    write_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    drain_timeout_s: float = 10.0


@dataclasses.dataclass(frozen=True)
class JournalConfig:
    fsync: bool = True
    group_commit_ms: int = 2
    batch_records_max: int = 1024
    queue_records_max: int = 65536
    snapshot_every_records: int = 100_000


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """SPEC section 15: the region's processes share a journal on a Redis Cluster (docs/cluster.md).

    redis: seed nodes; node_id: this process's name, unique in the region; lease_ms: how long a
    leader's lease lasts unless renewed; replicas_ack: replicas that must hold a batch before its
    answers leave; wait_timeout_ms: how long a batch waits for them.
    """

    redis: tuple[HostPort, ...]
    node_id: str
    lease_ms: int
    replicas_ack: int
    wait_timeout_ms: int


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """The whole of `gateway.toml`, validated. `cluster` is None: the embedded default (one process)."""

    path: pathlib.Path
    admdvs: str
    listen: ListenConfig
    paths: PathsConfig
    limits: LimitsConfig
    journal: JournalConfig
    cluster: ClusterConfig | None = None


_PATH_DEFAULTS = {
    "registry": "registry.toml",
    "secrets": "secrets.toml",
    "signing_key": "gateway_ed25519.pem",
    "data_dir": "data",
}
# Data files whose absence switches their feature off (SPEC section 13 "Data").
_OPTIONAL_PATHS = ("catalogue", "accounts")
# Lower bounds per numeric key: zero or negative timeouts and caps make no sense.
_MINIMUM = {
    "body_bytes_max": 1, "session_ttl_s": 1, "connections_max": 1, "connections_per_address_max": 1,
    "requests_in_flight_max": 1, "admission_target_ms": 1, "admission_wait_max_ms": 1,
    "sheds_per_answer": 0.0, "header_bytes_max": 256, "read_timeout_s": 0.001,
    "write_timeout_s": 0.001, "idle_timeout_s": 0.001, "drain_timeout_s": 0.0, "group_commit_ms": 0,
    "batch_records_max": 1, "queue_records_max": 1, "snapshot_every_records": 1,
    "lease_ms": 300, "replicas_ack": 0, "wait_timeout_ms": 1,
}
# Upper bounds: the frame decoder refuses msgpack strings/bins longer than the protocol's bound,
# so a larger body limit would only turn big requests into MALFORMED_FRAME instead of 413.
_MAXIMUM = {"body_bytes_max": MSGPACK_LEN_MAX, "sheds_per_answer": 1000.0}
_ADMDVS = re.compile(r"[0-9]{6}")
_NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Seed nodes a region may name; a real cluster is reached through any few of its nodes.
REDIS_SEEDS_MAX = 32


def load_config(path: str | pathlib.Path) -> GatewayConfig:
    """Read and validate a `gateway.toml`.

    Args:
        path: the file; relative paths inside it are resolved against its directory.
    Returns:
        the frozen GatewayConfig.
    Raises:
        ConfigError: unreadable file, invalid TOML, unknown key, wrong type or out-of-range value.
    """
    file = pathlib.Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: invalid TOML: {_one_line(str(exc))}") from None
    return _Parser(file).parse(raw)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Parser:
    """Validates the parsed TOML tree section by section; errors name `file` and the dotted key."""

    def __init__(self, file: pathlib.Path) -> None:
        self.file = file
        self.base = file.resolve().parent

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.file}: key '{key}' {problem}")

    def parse(self, raw: dict[str, Any]) -> GatewayConfig:
        sections = {"listen", "paths", "limits", "journal", "cluster"}
        self.reject_unknown(raw, {"admdvs"} | sections, prefix="")
        for name in sections:
            if name in raw and not isinstance(raw[name], dict):
                raise self.fail(name, f"must be a table, got {_type_name(raw[name])}")
        if "admdvs" not in raw:
            raise self.fail("admdvs", "is required (the gateway's 6-digit region code)")
        admdvs = raw["admdvs"]
        if not isinstance(admdvs, str) or not _ADMDVS.fullmatch(admdvs):
            raise self.fail("admdvs", "must be a string of 6 digits")
        return GatewayConfig(
            path=self.file,
            admdvs=admdvs,
            listen=self.listen(raw.get("listen", {})),
            paths=self.paths(raw.get("paths", {})),
            limits=self.fields(LimitsConfig, raw.get("limits", {}), "limits"),
            journal=self.fields(JournalConfig, raw.get("journal", {}), "journal"),
            cluster=self.cluster(raw["cluster"]) if "cluster" in raw else None,
        )

    def cluster(self, table: dict[str, Any]) -> ClusterConfig:
        scalars = {key: value for key, value in table.items() if key not in ("redis", "node_id")}
        self.reject_unknown(table, {"redis", "node_id", "lease_ms", "replicas_ack", "wait_timeout_ms"},
                            "cluster.")
        seeds = table.get("redis")
        if not isinstance(seeds, list) or not 1 <= len(seeds) <= REDIS_SEEDS_MAX:
            raise self.fail("cluster.redis", f'must be an array of 1..{REDIS_SEEDS_MAX} "host:port" strings')
        redis = tuple(self.host_port({"redis": seed}, "redis", HostPort("", 0), "cluster.redis")
                      for seed in seeds)
        if any(seed.port == 0 for seed in redis):
            raise self.fail("cluster.redis", "names port 0")
        node_id = table.get("node_id")
        if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
            raise self.fail("cluster.node_id", "must be 1..64 characters of A-Z a-z 0-9 _ . -")
        numbers = self.fields(_ClusterNumbers, scalars, "cluster")
        if numbers.wait_timeout_ms >= numbers.lease_ms:
            raise self.fail("cluster.wait_timeout_ms", "must be less than cluster.lease_ms")
        return ClusterConfig(redis, node_id, **dataclasses.asdict(numbers))

    def reject_unknown(self, table: dict[str, Any], known: set[str], prefix: str) -> None:
        for key in table:
            if key not in known:
                raise ConfigError(f"{self.file}: unknown key '{prefix}{key}'")

    def listen(self, table: dict[str, Any]) -> ListenConfig:
        self.reject_unknown(table, {"data", "admin"}, "listen.")
        defaults = ListenConfig()
        return ListenConfig(
            data=self.host_port(table, "data", defaults.data),
            admin=self.host_port(table, "admin", defaults.admin),
        )

    def host_port(self, table: dict[str, Any], key: str, default: HostPort, dotted: str = "") -> HostPort:
        if key not in table:
            return default
        value = table[key]
        host, sep, port_text = value.rpartition(":") if isinstance(value, str) else ("", "", "")
        if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
            raise self.fail(dotted or f"listen.{key}", 'must be a string "host:port" with port 0..65535')
        return HostPort(host.strip("[]"), int(port_text))

    def paths(self, table: dict[str, Any]) -> PathsConfig:
        self.reject_unknown(table, set(_PATH_DEFAULTS) | set(_OPTIONAL_PATHS), "paths.")
        resolved = {}
        # Defaults for the required files; an optional one is resolved only when present.
        for key, value in {**_PATH_DEFAULTS, **table}.items():
            if not isinstance(value, str) or not value:
                raise self.fail(f"paths.{key}", "must be a non-empty string")
            resolved[key] = self.base / value
        return PathsConfig(**resolved)

    def fields(self, cls: type, table: dict[str, Any], section: str) -> Any:
        known = {f.name: f for f in dataclasses.fields(cls)}
        self.reject_unknown(table, set(known), f"{section}.")
        values = {}
        for key, value in table.items():
            values[key] = self.typed(f"{section}.{key}", value, known[key].type, key)
        return cls(**values)

    def typed(self, dotted: str, value: Any, type_name: str, key: str) -> Any:
        # bool is a subclass of int in Python; TOML keeps them apart, and so do we.
        if type_name == "bool":
            if not isinstance(value, bool):
                raise self.fail(dotted, f"must be a boolean, got {_type_name(value)}")
            return value
        if type_name == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.fail(dotted, f"must be an integer, got {_type_name(value)}")
        if type_name == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(dotted, f"must be a number, got {_type_name(value)}")
            value = float(value)
        if value < _MINIMUM[key]:
            raise self.fail(dotted, f"must be at least {_MINIMUM[key]}, got {value}")
        if key in _MAXIMUM and value > _MAXIMUM[key]:
            raise self.fail(dotted, f"must be at most {_MAXIMUM[key]}, got {value}")
        return value


@dataclasses.dataclass(frozen=True)
class _ClusterNumbers:
    """The numeric keys of [cluster] and their defaults (SPEC section 15)."""

    lease_ms: int = 3000
    replicas_ack: int = 1
    wait_timeout_ms: int = 1000


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", dict: "table",
            list: "array"}.get(type(value), type(value).__name__)
