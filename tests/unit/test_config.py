from pathlib import Path

import pytest
import yaml

from config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

MINIMAL = {
    "study": "t",
    "data": {"source": {"path": "data.jsonl"}, "regimes": [{"name": "r10", "size": 10}]},
}


def _write(tmp_path: Path, tree: dict) -> Path:
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(tree))
    return p


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.study
    assert cfg.data.source.path.is_absolute()


def test_relative_paths_resolve_against_config_folder(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.data.source.path == tmp_path.resolve() / "data.jsonl"


def test_three_mistakes_are_all_reported_by_path(tmp_path):
    tree = yaml.safe_load(yaml.safe_dump(MINIMAL))
    tree["data"]["labels"] = {"top_k": "many"}  # wrong type
    tree["data"]["split"] = {"tset_size": 10}  # typo: unknown key
    tree["serve"] = {"port": 70000}  # out of range
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, tree))
    msg = str(err.value)
    assert len(err.value.problems) == 3
    assert "data.labels.top_k" in msg
    assert "data.split.tset_size" in msg
    assert "serve.port" in msg
    assert "study.yaml" in msg


def test_overrides_apply_with_yaml_types(tmp_path):
    path = _write(tmp_path, MINIMAL)
    cfg = load_config(path, ["data.seed=7", "data.regimes.0.size=20", "data.labels.top_k=8"])
    assert cfg.data.seed == 7
    assert cfg.data.regimes[0].size == 20
    assert cfg.data.labels.top_k == 8


def test_bad_override_names_it(tmp_path):
    path = _write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match="data.regimes.5"):
        load_config(path, ["data.regimes.5.size=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["data.seed"])


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("study: x\ndata:\n  source: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config(p)


def test_unknown_regime_reference_is_refused(tmp_path):
    tree = yaml.safe_load(yaml.safe_dump(MINIMAL))
    tree["trials"] = {"families": [{"kind": "tfidf_linear"}], "regimes": ["r999"]}
    with pytest.raises(ConfigError, match="trials.regimes"):
        load_config(_write(tmp_path, tree))


def test_regime_draws_default_bounds_and_key_clash(tmp_path):
    path = _write(tmp_path, MINIMAL)
    cfg = load_config(path)
    assert cfg.data.regime_draws == 1 and cfg.data.regime_keys() == ["r10"]
    cfg = load_config(path, ["data.regime_draws=3"])
    assert cfg.data.regime_keys() == ["r10", "r10-d1", "r10-d2"]
    with pytest.raises(ConfigError, match="data.regime_draws"):
        load_config(path, ["data.regime_draws=0"])
    tree = yaml.safe_load(yaml.safe_dump(MINIMAL))
    tree["data"]["regimes"].append({"name": "r10-d1", "size": 20})
    assert load_config(_write(tmp_path, tree)).data.regime_keys() == ["r10", "r10-d1"]
    with pytest.raises(ConfigError, match=r"regime_draws=2.*r10-d1"):
        load_config(_write(tmp_path, tree), ["data.regime_draws=2"])


def test_regime_draws_change_the_prepare_fingerprint(tmp_path):
    from orchestrator.stages import study_graph

    path = _write(tmp_path, MINIMAL)
    (tmp_path / "x.jsonl").write_text("")

    def view(*overrides):
        return study_graph(load_config(path, list(overrides))).config_view("prepare")

    assert view()["data"]["regime_draws"] == 1
    assert view("data.regime_draws=2")["data"]["regime_draws"] == 2
    assert "path" not in view()["data"]["source"]  # its bytes count, not where it lies


def test_validate_cli_exit_code_and_every_error(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    tree = yaml.safe_load(yaml.safe_dump(MINIMAL))
    tree["data"]["seed"] = "x"
    tree["bogus"] = 1
    res = CliRunner().invoke(app, ["validate", str(_write(tmp_path, tree))])
    assert res.exit_code == 2
    assert "data.seed" in res.output and "bogus" in res.output


def test_validate_does_not_import_ray_or_models():
    import subprocess
    import sys

    code = (
        "import sys; from config import load_config; "
        f"load_config({str(CONFIGS[0])!r}); "
        "bad = [m for m in ('ray', 'torch', 'vllm', 'transformers', 'deepspeed') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    "encoder, message",
    [
        ({"backend": "torch", "quantize": "int8"}, "quantize=int8 needs the ONNX backend"),
        (
            {"backend": "auto", "quantize": "int8", "num_gpus_per_actor": 0.5},
            "quantize=int8 runs on ONNX Runtime",
        ),
        ({"backend": "onnx", "num_gpus_per_actor": 1}, "backend=onnx runs on the CPU"),
        ({"backend": "openvino"}, "fidelity.encoder.backend"),
        ({"quantize": "int4"}, "fidelity.encoder.quantize"),
    ],
)
def test_encoder_backend_and_quantize_errors_name_the_fields(tmp_path, encoder, message):
    tree = {**MINIMAL, "fidelity": {"encoder": encoder}}
    with pytest.raises(ConfigError, match=message) as err:
        load_config(_write(tmp_path, tree))
    assert "fidelity.encoder" in str(err.value)


def test_encoder_backend_defaults_to_torch_and_int8_is_allowed_with_onnx(tmp_path):
    from config.fidelity import EncoderConfig

    assert EncoderConfig().backend == "torch"
    with pytest.raises(ConfigError, match="quantize=int8 needs the ONNX backend"):
        load_config(_write(tmp_path, MINIMAL), ["fidelity.encoder.quantize=int8"])
    for backend in ("onnx", "auto"):
        overrides = [f"fidelity.encoder.backend={backend}", "fidelity.encoder.quantize=int8"]
        cfg = load_config(_write(tmp_path, MINIMAL), overrides)
        assert cfg.fidelity.encoder.quantize == "int8"
