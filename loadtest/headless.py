"""Run the load-test mix headless for a few seconds, as `make loadtest` does (for tests)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


def run(url: str, out: Path, users: int = 4, seconds: int = 8) -> subprocess.CompletedProcess[str]:
    """Run locust against `url`; its CSV files go to `out/run_*.csv`."""
    return subprocess.run(
        [sys.executable, "-m", "locust", "--headless", "-f", str(LOCUSTFILE), "--host", url]
        + ["-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--only-summary"]
        + ["--csv", str(out / "run"), "--exit-code-on-error", "1"],
        cwd=LOCUSTFILE.parent.parent,
        capture_output=True,
        text=True,
        timeout=120 + seconds,
    )


def stats(out: Path) -> dict[str, dict[str, str]]:
    """The run's statistics by request name ("Aggregated" for the total)."""
    with open(out / "run_stats.csv") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def failures(out: Path) -> str:
    """The run's failures, as locust wrote them."""
    return (out / "run_failures.csv").read_text()
