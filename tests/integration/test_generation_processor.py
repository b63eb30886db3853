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


def test_a_cpu_engine_runs_its_worker_in_the_engine_core_with_the_cores_as_threads():
    from orchestrator.generation import worker_in_engine_env

    gen = VllmGenerator(name="g", model="embedded:smollm2-135m", cpu_reserved_cores=0)
    cfg = processor_config(gen, "/m")
    assert cfg.engine_kwargs["distributed_executor_backend"] == "uni"
    env = cfg.runtime_env["env_vars"]
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert int(env["OMP_NUM_THREADS"]) >= 1
    # Threads: the cores less the reserved ones (vLLM's default reserve is one), at least one.
    assert worker_in_engine_env(gen, cores=8)["OMP_NUM_THREADS"] == "8"
    default = VllmGenerator(name="g", model="embedded:smollm2-135m")
    assert worker_in_engine_env(default, cores=8)["OMP_NUM_THREADS"] == "7"
    assert worker_in_engine_env(default, cores=1)["OMP_NUM_THREADS"] == "1"
    # Off, on a GPU, or with tensor parallelism: vLLM's own executor and environment.
    for other in (
        VllmGenerator(name="g", model="m", cpu_worker_in_engine=False),
        VllmGenerator(name="g", model="m", num_gpus_per_actor=1),
        VllmGenerator(name="g", model="m", tensor_parallel_size=2, num_cpus_per_actor=2),
    ):
        cfg = processor_config(other, "/m")
        assert "distributed_executor_backend" not in cfg.engine_kwargs
        assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in cfg.runtime_env["env_vars"]


def test_a_cpu_engine_with_its_worker_inside_forks_its_engine_core_from_a_warm_server():
    from orchestrator import engine_fork

    ((hook, target),) = engine_fork.setup_env().items()
    gen = VllmGenerator(name="g", model="embedded:smollm2-135m")
    assert processor_config(gen, "/m").runtime_env["env_vars"][hook] == target
    for other in (
        VllmGenerator(name="g", model="m", cpu_engine_forkserver=False),
        VllmGenerator(name="g", model="m", cpu_worker_in_engine=False),
        VllmGenerator(name="g", model="m", num_gpus_per_actor=1),
    ):
        assert hook not in processor_config(other, "/m").runtime_env["env_vars"]
