"""Generation bookkeeping without Ray: shards, what is pending, row projection, stage helpers."""

import pandas as pd
import pytest

from config.generation import GenerationConfig, VllmGenerator
from orchestrator.generation import (
    RESULT_COLUMNS,
    ShardStore,
    _postprocess,
    _project,
    chat_templater,
    check_fits,
    cpu_has_native_bf16,
    engine_dtype,
    pending,
    request_row,
)
from orchestrator.stages.generate import corpus_rows
from tasks.prompts import PromptRow


def _row(i: int, seed: int = 5, variant: str = "plain") -> PromptRow:
    return PromptRow(
        row_id=f"r8__synthesis__{variant}__{i:06d}",
        volume_rank=i,
        regime="r8",
        strategy="synthesis",
        variant=variant,
        target_labels=("A61F", "G09B"),
        exemplar_ids=("p1", "p2"),
        source_id=None,
        messages=({"role": "system", "content": "s"}, {"role": "user", "content": "u"}),
        template_hash="abc123",
        seed=seed + i,
    )


def _result(row_id: str, status: str, attempts: int, text: str = "") -> dict:
    return {
        "id": row_id,
        "text": text,
        "status": status,
        "error": "" if status == "ok" else "ValueError: too long",
        "finish_reason": "stop" if status == "ok" else "error",
        "prompt_tokens": 10,
        "output_tokens": 3 if status == "ok" else 0,
        "gen_seconds": 0.5,
        "attempts": attempts,
    }


def test_shard_store_keeps_one_record_per_id_preferring_ok(tmp_path):
    store = ShardStore(tmp_path)
    assert store.read().empty and list(store.read().columns) == RESULT_COLUMNS
    store.write(pd.DataFrame([_result("a", "failed", 1), _result("b", "ok", 1, "B")]))
    store.write(pd.DataFrame([_result("a", "ok", 2, "A"), _result("c", "failed", 1)]))
    # The same row written twice (a task Ray ran again) is read once.
    store.write(pd.DataFrame([_result("b", "ok", 1, "B")]))
    done = store.read().set_index("id")
    assert sorted(done.index) == ["a", "b", "c"]
    assert done.loc["a", "text"] == "A" and done.loc["a", "attempts"] == 2
    assert done.loc["c", "status"] == "failed"
    assert len(store.shards()) == 3 and not list(tmp_path.glob(".*tmp"))


def test_pending_runs_new_rows_and_failed_rows_with_retries_left():
    prompts = [_row(i) for i in range(4)]
    ids = [p.row_id for p in prompts]
    done = pd.DataFrame(
        [_result(ids[0], "ok", 1), _result(ids[1], "failed", 1), _result(ids[2], "failed", 3)]
    )
    todo = [(p.row_id, a) for p, a in pending(prompts, done, max_retries=2)]
    # ids[2] failed 3 times = 1 + max_retries: given up.
    assert todo == [(ids[1], 2), (ids[3], 1)]
    assert [(p.row_id, a) for p, a in pending(prompts, done, max_retries=0)] == [(ids[3], 1)]


def test_project_flattens_failed_rows_and_passes_ok_rows():
    failed = {
        "row_id": "x",
        "attempts": 2,
        "__inference_error__": "ValueError: prompt too long",
        "messages": [{"role": "user", "content": "u"}],
        "sampling_params": {"seed": 3},
    }
    out = _project(failed)
    assert list(out) == RESULT_COLUMNS
    assert (out["id"], out["status"], out["attempts"]) == ("x", "failed", 2)
    assert out["error"] == "ValueError: prompt too long" and out["text"] == ""
    ok = {**_result("y", "ok", 1, "T"), "__inference_error__": "", "extra": 1}
    assert _project(ok) == _result("y", "ok", 1, "T")


def test_request_row_and_postprocess_carry_seed_and_finish_reason():
    gen = VllmGenerator(name="g", model="embedded:smollm2-135m", max_tokens=16, temperature=0.5)
    req = request_row(gen, _row(3, seed=39), "<templated>", attempts=2)
    assert req == {
        "row_id": "r8__synthesis__plain__000003",
        "attempts": 2,
        "prompt": "<templated>",
        "sampling_params": {
            "temperature": 0.5,
            "top_p": 0.95,
            "top_k": 0,
            "max_tokens": 16,
            "seed": 42,
        },
    }
    post = _postprocess(16)
    base = {"row_id": "x", "generated_text": "t", "num_input_tokens": 9, "time_taken_llm": 1.5}
    assert post({**base, "num_generated_tokens": 16, "attempts": 1})["finish_reason"] == "length"
    cut = post({**base, "num_generated_tokens": 7, "attempts": 3})
    assert (cut["finish_reason"], cut["output_tokens"], cut["attempts"]) == ("stop", 7, 3)


def test_planned_rows_cover_the_largest_ratio_plus_headroom():
    gens = [{"kind": "vllm", "name": "g", "model": "embedded:smollm2-135m"}]
    cfg = GenerationConfig(generators=gens, ratios=[1, 2, 0.5])
    assert cfg.planned_rows(48) == 96
    cfg = GenerationConfig(generators=gens, ratios=[1, 2], headroom=0.25)
    assert cfg.planned_rows(48) == 120


def test_corpus_rows_join_results_with_provenance_and_mask_names():
    rows = [_row(0, variant="label_name_masking"), _row(1, variant="label_name_masking")]
    by_id = pd.DataFrame(
        [
            _result(rows[0].row_id, "ok", 1, "Assistant: A walking aid for the blind."),
            _result(rows[1].row_id, "failed", 2),
        ]
    ).set_index("id")
    table = corpus_rows(rows, by_id, "smol", {"A61F": "walking aid"})
    assert table.id.tolist() == [
        "r8__smol__synthesis__label_name_masking__000000",
        "r8__smol__synthesis__label_name_masking__000001",
    ]
    first = table.iloc[0]
    assert "walking aid" not in first.text.lower() and "[LABEL]" in first.text
    assert first.labels == ["A61F", "G09B"] and first.exemplar_ids == ["p1", "p2"]
    assert (first.prompt_hash, first.seed, first.generator) == ("abc123", 5, "smol")
    assert table.status.tolist() == ["ok", "failed"] and table.iloc[1].text == ""
    assert table.attempts.tolist() == [1, 2]


@pytest.mark.parametrize("field", ["concurrency", "batch_size", "kv_cache_gib"])
def test_scheduling_fields_do_not_change_the_stage_fingerprint(field):
    from config import StudyConfig
    from orchestrator.stages import study_graph
    from orchestrator.stages.generate import GenerateStage

    def cfg(**gen):
        return StudyConfig.model_validate(
            {
                "study": "s",
                "data": {"source": {"path": "x.jsonl"}, "regimes": [{"name": "r8", "size": 8}]},
                "generation": {"generators": [{"kind": "vllm", "name": "g", "model": "m", **gen}]},
            }
        )

    def view(c):
        return study_graph(c).config_view(GenerateStage.name)

    assert view(cfg()) == view(cfg(**{field: 4}))
    assert view(cfg()) != view(cfg(max_tokens=99))


def test_placement_group_splits_an_actors_gpus_over_tensor_parallel_workers():
    from orchestrator.generation import placement_group

    nemo = VllmGenerator(
        name="nemo",
        model="m",
        tensor_parallel_size=2,
        num_gpus_per_actor=2,
        num_cpus_per_actor=8,
    )
    assert placement_group(nemo) == {
        "bundles": [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}],
        "strategy": "PACK",
    }
    cpu = VllmGenerator(name="smol", model="m", num_cpus_per_actor=1)
    assert placement_group(cpu) == {"bundles": [{"CPU": 1.0}], "strategy": "PACK"}


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 {flags}\n\n")
    return path


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    assert not cpu_has_native_bf16(_cpuinfo(tmp_path, "avx2 avx512f avx512bw"))
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512f avx512_bf16"))
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, "amx_tile amx_bf16"))
    assert not cpu_has_native_bf16(tmp_path / "missing")


def test_auto_dtype_is_float32_on_a_cpu_without_bf16(monkeypatch):
    import orchestrator.generation as generation

    cpu = VllmGenerator(name="g", model="embedded:smollm2-135m")
    monkeypatch.setattr(generation, "cpu_has_native_bf16", lambda *_: False)
    assert engine_dtype(cpu) == "float32"
    monkeypatch.setattr(generation, "cpu_has_native_bf16", lambda *_: True)
    assert engine_dtype(cpu) == "bfloat16"
    # Set by hand, or on a GPU, the config is passed through as it is.
    assert engine_dtype(cpu.model_copy(update={"dtype": "bfloat16"})) == "bfloat16"
    assert engine_dtype(cpu.model_copy(update={"num_gpus_per_actor": 1})) == "auto"


def _templater(folder, template: str):
    """`chat_templater` over a one-word tokenizer saved with `template` as its chat template."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    )
    tok.chat_template = template
    tok.save_pretrained(folder)
    return chat_templater(str(folder))


def test_chat_prompts_use_the_models_template_with_the_generation_prompt(tmp_path):
    render = _templater(
        tmp_path,
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}",
    )
    assert [render(r) for r in (_row(0), _row(1))] == ["<system>s<user>u<assistant>"] * 2


def test_a_template_without_a_system_role_gets_it_in_the_first_user_turn(tmp_path):
    # As Gemma-2's template does: a system turn raises.
    render = _templater(
        tmp_path,
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<{{ m.role }}>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<model>{% endif %}",
    )
    assert [render(r) for r in (_row(0), _row(1))] == ["<user>s\n\nu<model>"] * 2


def test_an_engine_actor_that_cannot_fit_is_an_error_on_a_fixed_cluster(caplog):
    two = {"CPU": 2.0, "memory": 1e10}
    check_fits(VllmGenerator(name="g", model="m", num_cpus_per_actor=1), two, fixed=True)
    big = VllmGenerator(name="g", model="m", num_cpus_per_actor=2)
    with pytest.raises(ValueError, match=r"'g'.*num_cpus_per_actor=2.*CPU 2.1 needed, 2 in"):
        check_fits(big, two, fixed=True)
    gpu = VllmGenerator(name="g", model="m", num_gpus_per_actor=1)
    with pytest.raises(ValueError, match="GPU 1 needed, 0 in the cluster"):
        check_fits(gpu, two, fixed=True)
    # A cluster that can grow: the autoscaler may add the node, so only a warning.
    check_fits(gpu, two, fixed=False)
    assert "waiting for the autoscaler" in caplog.text


def test_the_templater_loaded_on_a_thread_renders_as_the_one_loaded_here(tmp_path):
    from orchestrator.generation import templater_soon

    here = _templater(tmp_path, "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}")
    soon = templater_soon(VllmGenerator(name="g", model=str(tmp_path)))
    assert soon.result(timeout=60)(_row(0)) == here(_row(0)) == "[system:s][user:u]"
    with pytest.raises(Exception, match="missing"):  # its errors come out of result()
        templater_soon(VllmGenerator(name="g", model=str(tmp_path / "missing"))).result(60)
