"""CPU quotas and memory limits read from cgroup v2 and v1 layouts, as containers mount them."""

from __future__ import annotations

import os

import pytest

from app import cgroup
from app.settings import Settings, usable_cpus

GIB = 1024**3
V1_NO_LIMIT = "9223372036854771712"  # v1's memory.limit_in_bytes without a limit


def write(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroup, "ROOT", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    "files",
    [
        {"cpu.max": "100000 100000", "memory.max": str(2 * GIB), "memory.current": "5000"},
        {
            "cpu/cpu.cfs_quota_us": "100000",
            "cpu/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": str(2 * GIB),
            "memory/memory.usage_in_bytes": "5000",
        },
    ],
    ids=["v2", "v1"],
)
def test_docker_cpus_1_memory_2g(root, files):
    write(root, files)
    assert cgroup.cpu_quota() == 1.0
    assert cgroup.memory() == (5000, 2 * GIB)
    assert usable_cpus() == 1
    settings = Settings.from_env({})
    assert settings.worker_processes == 1 and settings.torch_threads == 1


@pytest.mark.parametrize(
    "files",
    [
        {"cpu.max": "max 100000", "memory.max": "max", "memory.current": "5000"},
        {
            "cpu/cpu.cfs_quota_us": "-1",
            "cpu/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": V1_NO_LIMIT,
            "memory/memory.usage_in_bytes": "5000",
        },
        {},
    ],
    ids=["v2", "v1", "none"],
)
def test_no_limits(root, files):
    write(root, files)
    assert cgroup.cpu_quota() is None and cgroup.memory() is None
    assert usable_cpus() == len(os.sched_getaffinity(0))


def test_a_fraction_of_a_cpu_is_one_worker_and_v2_wins_over_v1(root):
    write(root, {"cpu.max": "150000 100000", "cpu/cpu.cfs_quota_us": "-1"})
    write(root, {"cpu/cpu.cfs_period_us": "100000"})
    assert cgroup.cpu_quota() == 1.5
    assert usable_cpus() == 1
    write(root, {"cpu.max": "50000 100000"})
    assert usable_cpus() == 1  # never zero


def test_a_memory_limit_above_the_machine_limits_nothing(root):
    write(root, {"memory.max": str(cgroup.physical_memory()), "memory.current": "5000"})
    assert cgroup.memory() is None
