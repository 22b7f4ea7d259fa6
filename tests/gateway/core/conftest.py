"""Fixtures for the core tests: a fresh test region per test."""

from __future__ import annotations

import pathlib

import pytest

from core_world import World


@pytest.fixture
def world(tmp_path: pathlib.Path) -> World:
    return World(tmp_path)
