"""The one-way data flow of ARCHITECTURE.md, enforced by parsing imports with `ast`."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# package directory -> top-level modules it must never import
FORBIDDEN = {
    "protocol": {"trio", "gateway", "simulators", "load_tests", "prometheus_client", "socket", "h11"},
    "gateway/core": {"trio", "prometheus_client", "socket", "h11", "gateway.journal", "gateway.server",
                     "gateway.admin", "gateway.metrics", "gateway.sealer", "gateway.runtime", "simulators",
                     "load_tests", "time", "random", "os", "secrets"},
    # The journal port knows no Redis client: cluster mode's store comes in through a protocol.
    "gateway/journal": {"prometheus_client", "gateway.server", "gateway.admin", "gateway.cluster", "glide",
                        "simulators", "load_tests"},
    # Cluster mode composes the server's gateway with the region's store; the admin API is reached
    # only through the server, the core only through its public face.
    "gateway/cluster": {"prometheus_client", "gateway.admin", "simulators", "load_tests", "h11", "socket"},
    # The admin API is a shell beside the server, not inside it: it shares the runtime and the
    # commit gate (gateway/runtime.py), never the server's modules.
    "gateway/admin": {"gateway.server", "simulators", "load_tests", "h11", "socket"},
    "simulators": {"gateway"},
}
# Only this module may talk to prometheus_client.
PROMETHEUS_OWNER = ROOT / "gateway" / "metrics.py"


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def violates(module: str, banned: set[str]) -> bool:
    return any(module == b or module.startswith(b + ".") for b in banned)


def python_files(package: str) -> list[pathlib.Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layering(package: str) -> None:
    files = python_files(package)
    assert files, f"{package} has no modules"
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in files
        for module in sorted(imported_modules(path))
        if violates(module, FORBIDDEN[package])
    ]
    assert not bad, "\n".join(bad)


def test_only_metrics_module_imports_prometheus() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("protocol", "gateway", "simulators", "load_tests")
        for path in python_files(package)
        if path != PROMETHEUS_OWNER and violates_any(path)
    ]
    assert not offenders, offenders


def violates_any(path: pathlib.Path) -> bool:
    return any(violates(m, {"prometheus_client"}) for m in imported_modules(path))


def test_layering_check_catches_a_violation(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import trio\nfrom gateway.core import x\n", encoding="utf-8")
    assert violates("trio", FORBIDDEN["protocol"])
    assert {"trio", "gateway.core"} <= imported_modules(bad)


# Names the deterministic core must never call: files, the wall clock and ambient randomness come
# in through parameters (time as now_ms, entropy as an injected random_bytes).
CORE_FORBIDDEN_CALLS = {"open", "input", "print", "exec", "eval"}


def called_names(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {node.func.id for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}


def test_core_opens_no_file_and_reads_no_clock() -> None:
    bad = [f"{path.relative_to(ROOT)} calls {name}()" for path in python_files("gateway/core")
           for name in sorted(called_names(path) & CORE_FORBIDDEN_CALLS)]
    assert not bad, "\n".join(bad)


def test_core_call_check_catches_a_violation(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nwith open('x') as f:\n    time.time()\n", encoding="utf-8")
    assert called_names(bad) & CORE_FORBIDDEN_CALLS == {"open"}
    assert violates("time", FORBIDDEN["gateway/core"])
