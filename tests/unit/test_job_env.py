"""`synthpat submit --env NAME`: the job gets each variable's value from the submitting machine."""

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.jobs import job_env


def test_values_come_from_the_environment_given():
    env = {"HF_TOKEN": "hf_x", "SYNTHPAT_API_KEY": "k", "OTHER": "o"}
    assert job_env(["HF_TOKEN", "SYNTHPAT_API_KEY"], env) == {
        "HF_TOKEN": "hf_x",
        "SYNTHPAT_API_KEY": "k",
    }
    assert job_env([], env) == {}


def test_a_missing_variable_is_named():
    with pytest.raises(ValueError, match="--env HF_TOKEN: not set"):
        job_env(["HF_TOKEN"], {"OTHER": "o"})


def test_a_name_with_a_value_is_refused():
    with pytest.raises(ValueError, match="give a variable's name"):
        job_env(["HF_TOKEN=abc"], {"HF_TOKEN=abc": "x"})


def test_submit_stops_before_contacting_a_cluster_when_a_variable_is_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("SYNTHPAT_TEST_UNSET_VAR", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("study: x\n")
    result = CliRunner().invoke(
        app,
        ["submit", str(cfg), "--env", "SYNTHPAT_TEST_UNSET_VAR", "--address", "http://127.0.0.1:9"],
    )
    assert result.exit_code == 2
    assert "SYNTHPAT_TEST_UNSET_VAR: not set" in result.output
