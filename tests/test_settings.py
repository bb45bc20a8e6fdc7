"""Settings: parsed from WANWU_* variables, validated at start-up, documented in the README."""

from __future__ import annotations

import pytest

from app import settings as app_settings
from app.settings import Settings, SettingsError
from tests.conftest import ROOT


def test_defaults_are_valid_and_derived_from_the_machine():
    settings = Settings.from_env({})
    assert settings.worker_processes >= 1 and settings.torch_threads >= 1
    assert settings.request_threads >= settings.max_batch


def test_default_workers_are_one_per_cpu_or_one_per_gpu(monkeypatch):
    monkeypatch.setattr(app_settings, "usable_cpus", lambda: 16)
    monkeypatch.setattr(app_settings, "visible_gpus", lambda: 2)
    assert Settings.from_env({"WANWU_DEVICE": "cpu"}).worker_processes == 16
    assert Settings.from_env({"WANWU_DEVICE": "cuda"}).worker_processes == 2
    assert Settings.from_env({"WANWU_DEVICE": "auto"}).worker_processes == 2
    assert Settings.from_env({"WANWU_DEVICE": "cuda:1"}).worker_processes == 1
    gpu = Settings.from_env({"WANWU_DEVICE": "cuda"})
    assert gpu.torch_threads == 8  # the CPUs are shared out among the GPU workers
    assert Settings.from_env({"WANWU_DEVICE": "cuda", "WANWU_WORKERS": "3"}).worker_processes == 3
    monkeypatch.setattr(app_settings, "visible_gpus", lambda: 0)
    assert Settings.from_env({"WANWU_DEVICE": "auto"}).worker_processes == 16


def test_values_are_parsed_by_type():
    settings = Settings.from_env(
        {
            "WANWU_WORKERS": "3",
            "WANWU_MAX_WAIT_MS": "2.5",
            "WANWU_PIN_CPUS": "no",
            "WANWU_API_KEYS": " a, b ,",
            "WANWU_DEVICE": "cuda:1",
            "WANWU_THREADS": "",
        }
    )
    assert settings.workers == 3 and settings.max_wait_ms == 2.5
    assert settings.pin_cpus is False and settings.api_keys == ("a", "b")
    assert settings.device == "cuda:1" and settings.threads == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WANWU_WORKERS": "-1"}, "WANWU_WORKERS must be >= 0 (got -1)"),
        ({"WANWU_MAX_BATCH": "eight"}, "WANWU_MAX_BATCH='eight' is not a valid int"),
        ({"WANWU_MAX_BATCH": "0"}, "WANWU_MAX_BATCH must be between 1 and 256 (got 0)"),
        ({"WANWU_MAX_WAIT_MS": "-1"}, "WANWU_MAX_WAIT_MS must be between 0 and 1000"),
        ({"WANWU_DEVICE": "tpu"}, "WANWU_DEVICE must be auto, cpu, cuda or cuda:N (got 'tpu')"),
        ({"WANWU_QUEUE_MAX": "4", "WANWU_MAX_BATCH": "8"}, "WANWU_QUEUE_MAX must be >="),
        ({"WANWU_TIMEOUT_MS": "5", "WANWU_MAX_WAIT_MS": "10"}, "WANWU_TIMEOUT_MS must exceed"),
        ({"WANWU_PIN_CPUS": "maybe"}, "WANWU_PIN_CPUS='maybe' is not a valid bool"),
        ({"WANWU_PRECISION": "int8"}, "WANWU_PRECISION must be"),
        ({"WANWU_PINNED_VERSIONS": "five:1"}, "comma-separated (got 'five:1')"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(env, message):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert message in str(info.value)


def test_secrets_are_not_public():
    settings = Settings.from_env({"WANWU_API_KEYS": "secret"})
    assert "api_keys" not in settings.public()
    assert "secret" not in str(settings.public())


def test_readme_table_is_the_generated_one():
    """The README's table is `python -m app.settings`' output, so it cannot drift."""
    assert Settings.markdown_table() in (ROOT / "README.md").read_text()


def test_unknown_variables_are_refused_naming_the_closest_setting():
    with pytest.raises(SettingsError) as info:
        app_settings.refuse_unknown_variables(
            {"WANWU_WORKER": "1", "WANWU_MAXBATCH": "4", "WANWU_COLOUR": "red", "WANWU_MODEL": "m"}
            | {"WANWU_TEST_MODEL": "m", "PATH": "/bin"}
        )
    assert [p.split(" is not a wanwu setting ") for p in str(info.value).split("; ")] == [
        ["WANWU_COLOUR", "(the README's Settings lists them): rename or unset it"],
        ["WANWU_MAXBATCH", "(did you mean WANWU_MAX_BATCH?): rename or unset it"],
        ["WANWU_WORKER", "(did you mean WANWU_WORKERS?): rename or unset it"],
    ]
    # Settings and the tools' own variables pass.
    app_settings.refuse_unknown_variables({"WANWU_MODEL": "m", "WANWU_TEST_MODEL": "m"})


def test_the_cpus_are_counted_where_the_settings_are_read(monkeypatch):
    monkeypatch.setattr(app_settings, "usable_cpus", lambda: 4)
    settings = Settings.from_env({"WANWU_DEVICE": "cpu"})  # in the master
    monkeypatch.setattr(app_settings, "usable_cpus", lambda: 1)  # a worker pinned to one CPU
    assert settings.worker_processes == 4 and settings.torch_threads == 1
