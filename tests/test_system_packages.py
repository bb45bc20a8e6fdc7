"""Without nginx and Chromium, the tests that drive them skip with a line saying how to install."""

from __future__ import annotations

import os
import subprocess
import sys

from benchkit import system
from benchkit.server import ROOT


def test_missing_commands_skip_with_the_install_command(tmp_path):
    """Run the nginx and browser tests with an empty PATH (and no sbin): each skips, named."""
    env = {**os.environ, "PATH": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, pytest; from benchkit import system; system._EXTRA_DIRS = (); "
            "sys.exit(pytest.main(sys.argv[1:]))",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/test_scaleout.py",
            "tests/test_ui_browser.py",
            "tests/test_faults.py::test_idle_connection_flood_behind_nginx_does_not_block_others",
            "tests/test_monitoring.py::test_a_real_prometheus_answers_every_panel_and_rule",
            "tests/test_monitoring.py::test_promtool_checks_the_rules_and_config_and_runs_the_rule_unit_tests",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert " passed" not in out and " failed" not in out and "error" not in out.lower(), out
    assert system.why_missing("nginx") in out
    assert system.why_missing("chromium") in out
    assert system.why_missing("prometheus") in out and system.why_missing("promtool") in out
    assert "sudo apt-get install nginx" in out
