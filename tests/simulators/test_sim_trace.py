"""Traces: record → read round trip, the shipped sample, and the CLI's record command."""

from __future__ import annotations

import json
import pathlib

import pytest
from sim_helpers import small_region

from simulators.cli import main
from simulators.runner import read_trace, write_trace
from simulators.traffic import TrafficModel

SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "simulators" / "traces" / "sample.jsonl"


def test_trace_round_trip(tmp_path: pathlib.Path) -> None:
    region = small_region(tmp_path)
    intents = list(TrafficModel(region, 3, 5.0).intents(40.0))
    assert write_trace(tmp_path / "t.jsonl", intents) == len(intents) > 0
    assert list(read_trace(tmp_path / "t.jsonl")) == intents


def test_record_command_matches_the_model_and_the_shipped_sample(tmp_path: pathlib.Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    small_region(tmp_path, seed=1)
    out = tmp_path / "sample.jsonl"
    status = main(["record", "--region", str(tmp_path / "region"), "--out", str(out),
                   "--seconds", "30", "--rate", "2", "--seed", "1", "--start", "10:00"])
    assert status == 0 and "seed 1" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8") == SAMPLE.read_text(encoding="utf-8")
    first = json.loads(SAMPLE.read_text(encoding="utf-8").splitlines()[0])
    assert {"t_s", "seq", "kind"} <= first.keys() and "card_mac" not in json.dumps(first)


def test_the_printed_start_repeats_a_default_start_run(tmp_path: pathlib.Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # Without --start the profile starts at the current Shanghai minute; what is printed must be
    # enough to draw the same traffic again.
    small_region(tmp_path, seed=1)
    region = str(tmp_path / "region")
    common = ["--region", region, "--seconds", "60", "--rate", "3", "--seed", "5"]
    assert main(["record", "--out", str(tmp_path / "a.jsonl"), *common]) == 0
    start = capsys.readouterr().out.split("start ", 1)[1][:5]
    assert main(["record", "--out", str(tmp_path / "b.jsonl"), *common, "--start", start]) == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_unreadable_region_is_one_line_exit_2(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["record", "--region", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"),
                   "--seconds", "1", "--rate", "1", "--seed", "1"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("yibao-sim: ") and err.count("\n") == 1
