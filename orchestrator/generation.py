"""Generation on Ray Data: prompts -> `ray.data.llm` vLLM processor -> Parquet shards by row id.

One pipeline per generator runs every planned prompt (all regimes, strategies and variants), so
each vLLM engine starts once. Results stream back to the driver and are written as small Parquet
shards under a work folder; a run killed at any point and started again reads the shards, skips
the rows already finished and generates only the rest. A row whose request fails is written with
its error and retried in a later round, up to `max_retries`; it never stops the run.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from config.generation import VllmGenerator
from orchestrator import engine_fork
from tasks.files import write_parquet_atomic
from tasks.prompts import PromptRow

RESULT_COLUMNS = [
    "id",
    "text",
    "status",
    "error",
    "finish_reason",
    "prompt_tokens",
    "output_tokens",
    "gen_seconds",
    "attempts",
]
_ERROR = "__inference_error__"
log = logging.getLogger(__name__)
LIGHT_CPUS = 0.1  # CPUs reserved by each light (non-engine) step of the pipeline


class ShardStore:
    """Generated rows as Parquet shards in one folder; each shard lands whole (temp + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def shards(self) -> list[Path]:
        return sorted(self.root.glob("shard-*.parquet"))

    def write(self, rows: pd.DataFrame) -> Path:
        """Write one shard atomically; a reader never sees half of it."""
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet_atomic(self.root / name, rows[RESULT_COLUMNS])
        return self.root / name

    def read(self) -> pd.DataFrame:
        """Every row written so far, one record per id: the latest attempt, `ok` before failed."""
        parts = [pd.read_parquet(p) for p in self.shards()]
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in RESULT_COLUMNS})
        df = pd.concat(parts, ignore_index=True)
        df["_ok"] = df["status"].eq("ok")
        # A retried row has one record per attempt; a task that Ray ran twice may write a row
        # twice. Keeping one record per id makes the result exact either way.
        df = df.sort_values(["id", "_ok", "attempts"], kind="stable")
        return df.drop_duplicates("id", keep="last").drop(columns="_ok").reset_index(drop=True)


def processor_config(gen: VllmGenerator, model_path: str) -> Any:
    """The `ray.data.llm` processor config of one generator (one vLLM engine per actor)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    engine: dict[str, Any] = {
        "dtype": engine_dtype(gen),
        "max_model_len": gen.max_model_len,
        "tensor_parallel_size": gen.tensor_parallel_size,
        "gpu_memory_utilization": gen.memory_fraction,
        "trust_remote_code": gen.trust_remote_code,
        "enforce_eager": gen.enforce_eager,
    }
    # HF_TOKEN: gated generators (Llama, Gemma, Mistral) download inside the engine actor.
    passed = ("HF_HUB_OFFLINE", "SYNTHPAT_CACHE", "HF_TOKEN")
    env = {k: os.environ[k] for k in passed if k in os.environ}
    if gen.num_gpus_per_actor == 0:
        engine.update(cpu_engine_kwargs(gen.max_model_len))
        if worker_in_engine(gen):
            engine["distributed_executor_backend"] = "uni"
            env.update(worker_in_engine_env(gen))
            if gen.cpu_engine_forkserver:
                from orchestrator.ray_runtime import job_setup_hook

                env.update(engine_fork.setup_env(then=job_setup_hook()))
    if gen.kv_cache_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(gen.kv_cache_gib)
    if gen.cpu_reserved_cores is not None:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(gen.cpu_reserved_cores)
    return vLLMEngineProcessorConfig(
        model_source=model_path,
        engine_kwargs=engine,
        batch_size=gen.batch_size,
        max_concurrent_batches=gen.max_concurrent_batches,
        concurrency=gen.concurrency,
        # One bundle per tensor-parallel worker: GPUs on a cluster, CPUs for vllm-cpu.
        placement_group_config=placement_group(gen),
        should_continue_on_error=True,
        log_engine_metrics=False,
        runtime_env={"env_vars": env},
        # Prompts arrive chat-templated (`chat_templater`, in the driver: ~20 us a prompt) and
        # vLLM tokenizes and detokenizes them itself, so ray.data.llm's own text stages are off:
        # each is an actor that imports transformers and loads the tokenizer, which on a small
        # machine competes with the engine's start-up for the same cores.
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
    )


def engine_dtype(gen: VllmGenerator) -> str:
    """The dtype the engine runs in. `auto` on a GPU lets vLLM take the model's own; on a CPU it
    is bfloat16 only where the CPU computes bf16 natively (avx512_bf16 or AMX): elsewhere bf16
    matmuls are emulated, several times slower than fp32 (a 2-core Skylake: 15 vs 52 GFLOPS)."""
    if gen.dtype != "auto" or gen.num_gpus_per_actor > 0:
        return gen.dtype
    return cpu_auto_dtype()


def cpu_auto_dtype(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """`auto` on a CPU: bfloat16 where the CPU computes bf16 natively, float32 elsewhere."""
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 instructions. torch reports only the vector width ("AVX512"),
    not bf16 support, so the kernel's flag list is read directly; False where there is none."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])  # fmt: skip
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def cpu_engine_kwargs(max_model_len: int) -> dict[str, Any]:
    """vllm-cpu without chunked prefill: with it, a seeded request whose prompt is split across
    steps crashes the engine (the runner rewinds the request's generator by an offset, which a
    CPU torch.Generator does not have), and every row has a seed here. Whole prompts per step
    need a token budget of at least one full context."""
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 8192)}


def worker_in_engine(gen: VllmGenerator) -> bool:
    """Whether vllm-cpu's one model worker runs inside the engine-core process."""
    cpu = gen.num_gpus_per_actor == 0
    return gen.cpu_worker_in_engine and cpu and gen.tensor_parallel_size == 1


def worker_in_engine_env(gen: VllmGenerator, cores: int | None = None) -> dict[str, str]:
    """The engine actor's environment for a worker inside the engine core.

    vllm-cpu (platforms/cpu.py) replaces the `uni` executor by `mp` unless
    VLLM_ENABLE_V1_MULTIPROCESSING=0; the AsyncLLM that ray.data.llm builds still runs its engine
    core in a process of its own, so this removes only the worker's process. That process is where
    vLLM would have set the compute threads (OMP_NUM_THREADS and a core binding); here Ray gives
    the actor OMP_NUM_THREADS=its CPUs (1), so the threads are set to the cores less the reserved
    ones. No core binding: bound threads shared the cores with the engine core's scheduler and
    generated 1.5x slower (measured, BENCHMARKS.md)."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    reserved = 1 if gen.cpu_reserved_cores is None else gen.cpu_reserved_cores
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "OMP_NUM_THREADS": str(max(1, cores - reserved)),
    }


def placement_group(gen: VllmGenerator) -> dict[str, Any]:
    """One bundle per tensor-parallel worker, the actor's GPUs and CPUs shared among them."""
    tp = gen.tensor_parallel_size
    bundle: dict[str, float] = {"CPU": gen.num_cpus_per_actor / tp}
    if gen.num_gpus_per_actor > 0:
        bundle["GPU"] = gen.num_gpus_per_actor / tp
    bundle.update({k: v / tp for k, v in gen.resources_per_actor.items()})
    # PACK: an engine's workers share a node when they can (tensor parallel wants NVLink).
    return {"bundles": [dict(bundle) for _ in range(tp)], "strategy": "PACK"}


def chat_templater(model_path: str, trust_remote_code: bool = False) -> Callable[[PromptRow], str]:
    """A function from a prompt to its chat messages in the generator's own chat template,
    ready for the engine (the generation prompt added, as vLLM's `chat` does); the tokenizer
    loads once."""
    from jinja2 import TemplateError
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    fold = False  # set once the template refuses a system turn

    def render(p: PromptRow) -> str:
        nonlocal fold
        messages = [dict(m) for m in p.messages]
        if not fold:
            try:
                return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except TemplateError:
                if messages[0]["role"] != "system":
                    raise
                fold = True
        return tok.apply_chat_template(
            fold_system_turn(messages), tokenize=False, add_generation_prompt=True
        )

    return render


def templater_soon(gen: VllmGenerator) -> Future[Callable[[PromptRow], str]]:
    """`chat_templater` for `gen`, loading on a thread of its own: started before Ray, its
    import of transformers and the tokenizer (~7 s of one core on a 2-core CPU) runs while Ray's
    processes start, instead of after. Pass it to `run_generation`."""
    from tasks.models import resolve_model

    def load() -> Callable[[PromptRow], str]:
        return chat_templater(resolve_model(gen.model), gen.trust_remote_code)

    pool = ThreadPoolExecutor(1, thread_name_prefix="synthpat-templater")
    try:
        return pool.submit(load)
    finally:
        pool.shutdown(wait=False)


def fold_system_turn(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The system text put at the head of the first user turn, for chat templates that have no
    system role and raise on one (Gemma-2's, for instance)."""
    if len(messages) < 2 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
        return messages
    system, user = messages[0], messages[1]
    merged = {"role": "user", "content": f"{system['content']}\n\n{user['content']}"}
    return [merged, *messages[2:]]


def request_row(gen: VllmGenerator, row: PromptRow, prompt: str, attempts: int) -> dict[str, Any]:
    """The Ray Data input row of one prompt: its templated text and its sampling parameters."""
    return {
        "row_id": row.row_id,
        "attempts": attempts,
        "prompt": prompt,
        "sampling_params": {
            "temperature": gen.temperature,
            "top_p": gen.top_p,
            "top_k": gen.top_k,
            "max_tokens": gen.max_tokens,
            # Each row its own seed: one seed on every row would give identical samples.
            "seed": int(row.seed),
        },
    }


def _postprocess(max_tokens: int):
    def post(row: dict[str, Any]) -> dict[str, Any]:
        n_out = int(row.get("num_generated_tokens") or 0)
        return {
            "id": row["row_id"],
            "text": row.get("generated_text") or "",
            "status": "ok",
            "error": "",
            # The processor does not return vLLM's finish reason; a row that used every allowed
            # token was cut by the limit (a stop exactly at the limit reads the same, rarely).
            "finish_reason": "length" if n_out >= max_tokens else "stop",
            "prompt_tokens": int(row.get("num_input_tokens") or 0),
            "output_tokens": n_out,
            "gen_seconds": float(row.get("time_taken_llm") or 0.0),
            "attempts": int(row["attempts"]),
        }

    return post


def _project(row: dict[str, Any]) -> dict[str, Any]:
    """Any output row -> RESULT_COLUMNS with flat values; a failed row keeps its error."""
    error = str(row.get(_ERROR) or "")
    if not error:
        return {c: row[c] for c in RESULT_COLUMNS}
    # Failed rows skip the processor's postprocess and carry the whole request (prompt,
    # sampling params): flatten them here so every block has the same schema.
    return {
        "id": row["row_id"],
        "text": "",
        "status": "failed",
        "error": error,
        "finish_reason": "error",
        "prompt_tokens": 0,
        "output_tokens": 0,
        "gen_seconds": 0.0,
        "attempts": int(row["attempts"]),
    }


def pending(
    prompts: Sequence[PromptRow], done: pd.DataFrame, max_retries: int
) -> list[tuple[PromptRow, int]]:
    """Prompts still to run, each with the attempt number it will be: new rows, and failed rows
    with retries left. A row `ok`, or failed `max_retries + 1` times, is finished."""
    status = dict(zip(done["id"], zip(done["status"], done["attempts"], strict=True), strict=True))
    out = []
    for p in prompts:
        st = status.get(p.row_id)
        if st is None:
            out.append((p, 1))
        elif st[0] != "ok" and int(st[1]) <= max_retries:
            out.append((p, int(st[1]) + 1))
    return out


def run_generation(
    prompts: Sequence[PromptRow],
    gen: VllmGenerator,
    shard_dir: Path,
    max_retries: int,
    *,
    pipeline_restarts: int = 3,
    progress: bool = True,
    fixed_cluster: bool = True,
    templater: Future[Callable[[PromptRow], str]] | None = None,
) -> pd.DataFrame:
    """Generate every prompt with one generator, resuming from `shard_dir`; one row per prompt.

    Returns RESULT_COLUMNS for exactly the prompts' ids. Rounds repeat until no row is pending:
    round one runs the new rows, later rounds the failed ones (a fresh pipeline, so a fresh engine).
    A round that dies of a Ray system error (a node lost with its actor, a preempted spot worker)
    is started again on the rows still pending, up to `pipeline_restarts` times: the shards
    written before the loss stay, so no row is generated twice and none is lost.
    `fixed_cluster`: the cluster cannot grow (a local Ray), so an actor that does not fit is an
    error rather than a wait for the autoscaler. `templater`: the generator's chat templater
    from `templater_soon`, started before Ray; None loads it here.
    """
    import ray

    from tasks.models import resolve_model

    ids = [p.row_id for p in prompts]
    if len(set(ids)) != len(ids):
        raise ValueError("prompts: row ids must be unique")
    check_fits(gen, ray.cluster_resources(), fixed_cluster)
    store = ShardStore(shard_dir)
    model_path = resolve_model(gen.model)
    log.info("generate %s: vLLM dtype %s (configured %s)", gen.name, engine_dtype(gen), gen.dtype)
    on_cpu = gen.num_gpus_per_actor == 0
    if engine_dtype(gen) == "bfloat16" and on_cpu and not cpu_has_native_bf16():
        from orchestrator.console import warn_once

        warn_once(
            "emulated-bf16",
            f"generator {gen.name}: dtype bfloat16 on a CPU without bf16 instructions is "
            "emulated, several times slower than float32; set its `dtype: auto` (float32 here)",
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    render = templater.result() if templater else chat_templater(model_path, gen.trust_remote_code)
    restarts = 0
    while todo := pending(prompts, store.read(), max_retries):
        try:
            # Only the pending rows are templated: a resumed run skips what is written.
            rows = [request_row(gen, p, render(p), a) for p, a in todo]
            _run_round(rows, gen, model_path, store, progress)
        except Exception as e:
            if restarts >= pipeline_restarts or not is_system_failure(e):
                raise
            restarts += 1
            log.warning(
                "generate %s: pipeline lost (%s); restart %d of %d on the pending rows",
                gen.name, _first_line(e), restarts, pipeline_restarts,
            )  # fmt: skip
    done = store.read()
    return done[done["id"].isin(set(ids))].set_index("id").loc[ids].reset_index()


def check_fits(gen: VllmGenerator, cluster: dict[str, float], fixed: bool) -> None:
    """Whether one engine actor and the light steps fit in the cluster's resources. Ray Data
    would otherwise wait for them forever, silently: on a fixed cluster that is an error naming
    the generator's fields; on one that can grow, a warning while the autoscaler adds a node."""
    need = {
        "CPU": gen.num_cpus_per_actor + LIGHT_CPUS,
        "GPU": gen.num_gpus_per_actor,
        **gen.resources_per_actor,
    }
    short = [(k, v, cluster.get(k, 0.0)) for k, v in need.items() if v > cluster.get(k, 0.0) + 1e-9]
    if not short:
        return
    what = "; ".join(f"{k} {v:g} needed, {have:g} in the cluster" for k, v, have in short)
    msg = (
        f"generator {gen.name!r}: one vLLM actor (num_cpus_per_actor={gen.num_cpus_per_actor:g}, "
        f"num_gpus_per_actor={gen.num_gpus_per_actor:g}, resources_per_actor="
        f"{gen.resources_per_actor}) plus {LIGHT_CPUS:g} CPU for the light steps does not fit: "
        f"{what}"
    )
    if fixed:
        raise ValueError(
            f"{msg}. Lower them; on a CPU machine num_cpus_per_actor: 1 with "
            "cpu_reserved_cores: 0 still computes on every core"
        )
    log.warning("%s; waiting for the autoscaler to add a node", msg)


def is_system_failure(error: BaseException) -> bool:
    """Whether an error (or one it wraps) is Ray losing a node, an actor or an object, rather
    than the work itself failing: the former is worth a restart, the latter would fail again."""
    from ray import exceptions as rex

    system = (
        rex.NodeDiedError,
        rex.ActorDiedError,
        rex.ActorUnavailableError,
        rex.WorkerCrashedError,
        rex.ObjectLostError,
        rex.OwnerDiedError,
        rex.RaySystemError,
        rex.LocalRayletDiedError,
    )
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, system):
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def _run_round(
    rows: list[dict[str, Any]],
    gen: VllmGenerator,
    model_path: str,
    store: ShardStore,
    progress: bool,
) -> None:
    import ray
    from ray.data.llm import build_processor

    from orchestrator.console import StageProgress

    processor = build_processor(
        processor_config(gen, model_path),
        postprocess=_postprocess(gen.max_tokens),
        # The light step: a whole CPU would starve the engine on a small machine.
        postprocess_map_kwargs={"num_cpus": LIGHT_CPUS},
    )
    ds = processor(ray.data.from_items(rows))
    ds = ds.map(_project, num_cpus=LIGHT_CPUS)
    retry = sum(r["attempts"] > 1 for r in rows)
    desc = f"generate {gen.name}" + (f" (retrying {retry})" if retry else "")
    bar = StageProgress(desc, total=len(rows), unit="rows", show=progress)
    t0, tokens, failed = time.perf_counter(), 0, 0
    try:
        # Small batches: each lands as its own shard, so a kill loses at most one batch.
        for batch in ds.iter_batches(batch_size=gen.batch_size, batch_format="pandas"):
            rows = batch[RESULT_COLUMNS]
            store.write(rows)
            tokens += int(rows["output_tokens"].sum())
            failed += int(rows["status"].ne("ok").sum())
            rate = tokens / max(time.perf_counter() - t0, 1e-9)
            bar.update(len(rows), f"{rate:.0f} tokens/s, {failed} failed")
    finally:
        bar.close()
