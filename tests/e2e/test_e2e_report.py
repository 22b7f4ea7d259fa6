"""`yibao-gateway report` on a copied data directory: the admin API's bodies, offline, writing nothing."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib

from test_e2e_serve import EXIT_DEADLINE_S, gateway, init, settle_once, wait_ready


def admin_get(region: pathlib.Path, path: str) -> bytes:
    sim = tomllib.loads((region / "sim.toml").read_text())
    token = sim["admins"][0]["token"]
    address = tomllib.loads((region / "gateway.toml").read_text())["listen"]["admin"]
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path, headers={"authorization": f"Bearer {token}"})
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, (path, response.status, body)
        return body
    finally:
        connection.close()


def tree_digest(root: pathlib.Path) -> dict[str, str]:
    """Every file under `root` and the sha256 of its bytes."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def test_report_on_a_copied_data_directory(tmp_path: pathlib.Path) -> None:
    region, port = init(tmp_path)
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(region / "gateway.toml")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port, server)
        setlinfo, _ = settle_once(region, port)
        month = time.strftime("%Y%m", time.gmtime(setlinfo["setl_time"] / 1000 + 8 * 3600))
        date = time.strftime("%Y%m%d", time.gmtime(setlinfo["setl_time"] / 1000 + 8 * 3600))
        bodies = {
            "monthly": admin_get(region, f"/admin/v1/reports/monthly?month={month}&by=institution"),
            "doctor": admin_get(region, f"/admin/v1/reports/monthly?month={month}&by=doctor"),
            "alerts": admin_get(region, f"/admin/v1/alerts?date={date}"),
            "clearing": admin_get(region, f"/admin/v1/clearing?month={month}"),
        }
        server.send_signal(signal.SIGKILL)   # no drain: the copy holds a journal to replay
        server.communicate(timeout=EXIT_DEADLINE_S)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert json.loads(bodies["monthly"])["rows"][0]["medfee_fen"] == 3990
    backup = tmp_path / "backup"
    shutil.copytree(region / "data", backup / "data")
    config = region / "gateway.toml"
    config.write_text(config.read_text().replace('data_dir = "data"', f'data_dir = "{backup / "data"}"'))
    # A torn tail the copy caught mid-write is read around, never cut off.
    segment = sorted((backup / "data" / "journal").glob("*.yjl"))[-1]
    with open(segment, "ab") as tail:
        tail.write(b"YJ\x01\x00\x00\x00")
    before = tree_digest(backup)
    for path in [backup, *backup.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        runs = {
            "monthly": ("monthly", "--month", month, "--by", "institution"),
            "doctor": ("monthly", "--month", month, "--by", "doctor", "--format", "json"),
            "alerts": ("alerts", "--date", date),
            "clearing": ("clearing", "--month", month),
        }
        for name, args in runs.items():
            done = gateway("report", args[0], "--config", str(config), *args[1:])
            assert done.returncode == 0, done.stderr
            assert done.stdout.encode() == bodies[name] + b"\n", name
        csv_done = gateway("report", "monthly", "--config", str(config), "--month", month, "--by", "institution",
                           "--format", "csv")
        assert csv_done.returncode == 0, csv_done.stderr
        header, row = csv_done.stdout.splitlines()
        assert header.split(",")[:4] == ["key", "setl_cnt", "psn_cnt", "medfee_fen"]
        assert row.split(",")[1:4] == ["1", "1", "3990"] and row.endswith(",,")   # no last year: empty
        bad = gateway("report", "monthly", "--config", str(config), "--month", "202413", "--by", "institution")
        assert bad.returncode == 2 and bad.stderr.strip().startswith("yibao-gateway: --month:")
        assert bad.stdout == ""
    finally:
        for path in [backup, *backup.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert tree_digest(backup) == before


def test_report_refuses_a_directory_without_data_in_one_line(tmp_path: pathlib.Path) -> None:
    region, _ = init(tmp_path)
    done = gateway("report", "clearing", "--config", str(region / "gateway.toml"), "--month", "202403")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no journal or snapshots" in done.stderr
    assert not (region / "data").exists() or not os.listdir(region / "data")
