"""The `ray.data.llm` processor config of a generator (imports ray.data.llm; starts no Ray)."""

from config.generation import VllmGenerator
from orchestrator.generation import processor_config


def test_processor_leaves_templating_and_tokenizing_to_the_driver_and_engine():
    cfg = processor_config(VllmGenerator(name="g", model="embedded:smollm2-135m"), "/m")
    for stage in (cfg.chat_template_stage, cfg.tokenize_stage, cfg.detokenize_stage):
        assert stage is False or getattr(stage, "enabled", True) is False


def test_engine_actors_get_the_hub_token_when_the_driver_has_one(monkeypatch):
    gen = VllmGenerator(name="g", model="embedded:smollm2-135m")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert "HF_TOKEN" not in processor_config(gen, "/m").runtime_env["env_vars"]
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert processor_config(gen, "/m").runtime_env["env_vars"]["HF_TOKEN"] == "hf_test"
