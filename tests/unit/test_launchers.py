"""The KubeRay and Slurm launchers (k8s/, slurm/) start clusters that can run configs/paper.yaml.

Offline and without Ray. The manifests are parsed; the batch script runs against stand-ins for
scontrol, srun, python, ray and synthpat that log what they were asked. One checker per
launcher returns every problem it finds, and each is shown to reject a broken copy.

What one actor asks comes from the config, counted as the stages count it (a generator's engine
actor as `orchestrator.generation.check_fits`, a trial as `orchestrator.trials_tune.trial_need`).
The config names no memory: an actor's memory is its CPUs times MEMORY_GIB_PER_CPU.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import ConfigError, StudyConfig, load_config
from orchestrator.generation import LIGHT_CPUS, check_fits
from orchestrator.jobs import EXCLUDES
from orchestrator.trials_tune import DRIVER_CPU, trial_need
from tasks.trials.inputs import TrialSettings

REPO = Path(__file__).resolve().parents[2]
PAPER = "configs/paper.yaml"
#: What cluster.yaml's machines give per vCPU (m6i, g6: 4 GiB).
MEMORY_GIB_PER_CPU = 4.0


@dataclass(frozen=True)
class Need:
    what: str
    resources: dict[str, float]  # Ray resources: CPU, GPU, custom ones


@dataclass(frozen=True)
class NodeType:
    """One kind of worker node as Ray sees it, and how many of it the cluster can have."""

    name: str
    cpus: float
    gpus: float
    memory_gib: float
    custom: dict[str, float]
    max_count: int

    def lacks(self, need: Need) -> list[str]:
        have = {"CPU": self.cpus, "GPU": self.gpus, **self.custom}
        return [
            f"{k} {v:g} (has {have.get(k, 0.0):g})"
            for k, v in need.resources.items()
            if v > have.get(k, 0.0) + 1e-9
        ]


def actor_needs(cfg: StudyConfig) -> list[Need]:
    """What each kind of actor, task or trial of the study asks for, one at a time."""
    needs = [
        Need(
            f"generator {g.name}",
            {
                "CPU": g.num_cpus_per_actor + LIGHT_CPUS,
                "GPU": g.num_gpus_per_actor,
                **g.resources_per_actor,
            },
        )
        for g in cfg.generation.generators
    ]
    enc = cfg.fidelity.encoder
    needs.append(
        Need("fidelity encoder", {"CPU": enc.num_cpus_per_actor, "GPU": enc.num_gpus_per_actor})
    )
    res = cfg.trials.resources
    settings = TrialSettings(cpus=res.cpus, gpus=res.gpus, custom=dict(res.custom))
    needs += [Need(f"trial of {f.name}", trial_need(f, settings)) for f in cfg.trials.families]
    needs.append(Need("serve replica", {"CPU": cfg.serve.num_cpus, "GPU": cfg.serve.num_gpus}))
    return [Need(n.what, {k: v for k, v in n.resources.items() if v > 0}) for n in needs]


def node_problems(nodes: list[NodeType], cfg: StudyConfig) -> list[str]:
    """Each actor fits one node of a kind meant for it (GPU work: a GPU node; CPU work: a
    CPU-only node when there is one); each node's memory holds the actors its CPUs hold; the GPU
    nodes at their most hold every generator's actor pool and `trials.resources.max_concurrent`
    GPU trials."""
    problems = [
        f"{n.name}: memory {n.memory_gib:g} GiB for {n.cpus:g} CPUs, under "
        f"{MEMORY_GIB_PER_CPU:g} GiB per CPU"
        for n in nodes
        if n.memory_gib < n.cpus * MEMORY_GIB_PER_CPU - 1e-9
    ]
    gpu_nodes = [n for n in nodes if n.gpus > 0]
    cpu_nodes = [n for n in nodes if n.gpus == 0] or nodes
    needs = actor_needs(cfg)
    for need in needs:
        gpu = need.resources.get("GPU", 0) > 0
        kinds = gpu_nodes if gpu else cpu_nodes
        if not kinds:
            problems.append(f"{need.what}: no {'GPU' if gpu else 'CPU'} workers")
        elif all(n.lacks(need) for n in kinds):
            lacks = "; ".join(f"{n.name} lacks {', '.join(n.lacks(need))}" for n in kinds)
            problems.append(f"{need.what} ({need.resources}) fits no worker: {lacks}")
    total_gpus = sum(n.gpus * n.max_count for n in gpu_nodes)
    for g in cfg.generation.generators:
        pool = g.concurrency * g.num_gpus_per_actor
        if pool > total_gpus:
            problems.append(
                f"generator {g.name}: {g.concurrency} actors x {g.num_gpus_per_actor:g} GPU, "
                f"the workers have {total_gpus:g} GPUs at most"
            )
    bound = cfg.trials.resources.max_concurrent
    per_trial = max((n.resources.get("GPU", 0) for n in needs if "trial" in n.what), default=0)
    if bound and per_trial and bound * per_trial > total_gpus + 1e-9:
        problems.append(
            f"trials.resources.max_concurrent={bound} x {per_trial:g} GPU needs "
            f"{bound * per_trial:g} GPUs; the workers have {total_gpus:g} at most"
        )
    return problems


def storage_problems(cfg: StudyConfig, shared_root: str | None) -> list[str]:
    """`resources.storage_path` is a URI every node reaches or a folder under `shared_root`."""
    path = cfg.resources.storage_path
    if not path:
        return ["resources.storage_path is unset: trial state would stay on each node"]
    if "://" in path:
        return []
    if shared_root and Path(path).is_relative_to(shared_root):
        return []
    return [f"resources.storage_path={path} is not shared storage (under {shared_root})"]


def load_with(overrides: list[str]) -> tuple[StudyConfig | None, list[str]]:
    try:
        return load_config(REPO / PAPER, overrides), []
    except ConfigError as exc:
        return None, [f"overrides {overrides}: {exc}"]


def study_command_problems(argv: list[str]) -> list[str]:
    if argv[:3] != ["synthpat", "run", PAPER]:
        return [f"runs {shlex.join(argv[:3])!r}, not 'synthpat run {PAPER}'"]
    if bad := [a for a in argv[3:] if "=" not in a or a.startswith("-")]:
        return [f"arguments other than key=value overrides: {bad}"]
    return []


# --- KubeRay -------------------------------------------------------------------------------------

UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}


def quantity(value: Any) -> float:
    """A Kubernetes quantity ("500m", "44", "176Gi") as a number (bytes for memory)."""
    text = str(value)
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    for suffix in sorted(UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * UNITS[suffix]
    return float(text)


def load_k8s(name: str) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((REPO / "k8s" / name).read_text()) if d]
    return {d["kind"]: d for d in docs}


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


def group_node(group: dict) -> NodeType:
    limits = ray_container(group)["resources"]["limits"]
    params = group.get("rayStartParams") or {}
    custom = json.loads(json.loads(params["resources"])) if "resources" in params else {}
    return NodeType(
        name=group["groupName"],
        cpus=quantity(params.get("num-cpus", limits.get("cpu", 0))),
        gpus=quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0))),
        memory_gib=quantity(limits.get("memory", 0)) / 2**30,
        custom={k: float(v) for k, v in custom.items()},
        max_count=int(group["maxReplicas"]),
    )


def ray_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d.split("==")[1] for d in deps if d.startswith("ray["))


def raycluster_problems(spec: dict, cfg: StudyConfig) -> list[str]:
    """A RayCluster spec: autoscaling from zero, a head without work, requests = limits, one
    image at the pinned Ray, and workers that hold what the study's actors ask."""
    problems = []
    if spec.get("enableInTreeAutoscaling") is not True:
        problems.append("enableInTreeAutoscaling is not true")
    idle = (spec.get("autoscalerOptions") or {}).get("idleTimeoutSeconds", 60)
    if idle > 15 * 60:
        problems.append(f"idleTimeoutSeconds={idle}: idle GPU pods kept over 15 minutes")
    if spec.get("rayVersion") != ray_pin():
        problems.append(f"rayVersion {spec.get('rayVersion')} is not pyproject's ray {ray_pin()}")
    head = spec["headGroupSpec"]
    if str((head.get("rayStartParams") or {}).get("num-cpus")) != "0":
        problems.append("the head's rayStartParams has no num-cpus: '0': work would land on it")
    if "nvidia.com/gpu" in ray_container(head)["resources"].get("limits", {}):
        problems.append("the head asks for a GPU")
    groups = spec.get("workerGroupSpecs") or []
    pods = [("head", head)] + [(g["groupName"], g) for g in groups]
    for name, pod in pods:
        for c in pod["template"]["spec"]["containers"]:
            res = c.get("resources", {})
            if not res.get("limits") or res.get("requests") != res.get("limits"):
                problems.append(f"{name}/{c['name']}: requests {res.get('requests')} != limits")
    if len({c["image"] for _, p in pods for c in p["template"]["spec"]["containers"]}) != 1:
        problems.append("the pods run different images")
    for g in groups:
        if g.get("minReplicas") != 0 or g.get("replicas", 0) != 0:
            problems.append(f"{g['groupName']}: does not start at zero (minReplicas, replicas)")
    if not any(group_node(g).gpus > 0 for g in groups):
        problems.append("no GPU worker group")
    return problems + node_problems([group_node(g) for g in groups], cfg)


def mounts(pod_spec: dict) -> dict[str, dict]:
    """Each mount path of the Ray container -> the volume behind it."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    return {m["mountPath"]: volumes[m["name"]] for m in pod_spec["containers"][0]["volumeMounts"]}


def rayjob_problems(job: dict) -> list[str]:
    """A RayJob that runs the paper study once on its own cluster, with its runs on the head's
    persistent volume and its storage path the config's own, on the storage every pod reaches."""
    spec = job["spec"]
    problems = []
    if job.get("apiVersion") != "ray.io/v1" or job.get("kind") != "RayJob":
        problems.append("not a ray.io/v1 RayJob")
    if "rayClusterSpec" not in spec or "clusterSelector" in spec:
        problems.append("no rayClusterSpec of its own: nothing to shut down after the job")
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append("shutdownAfterJobFinishes is not true: the cluster outlives the job")
    for key in ("entrypointNumCpus", "entrypointNumGpus", "entrypointResources"):
        if spec.get(key):
            problems.append(f"{key}: the driver would wait for a worker (the head offers none)")
    argv = shlex.split(spec.get("entrypoint", ""))
    if wrong := study_command_problems(argv):
        return problems + wrong
    cfg, errors = load_with(argv[3:])
    if cfg is None or "rayClusterSpec" not in spec:
        return problems + errors
    paper = load_config(REPO / PAPER)
    cluster = spec["rayClusterSpec"]
    problems += raycluster_problems(cluster, cfg)
    problems += storage_problems(cfg, None)
    if cfg.resources.storage_path != paper.resources.storage_path:
        problems.append(
            f"resources.storage_path={cfg.resources.storage_path}, not the config's "
            f"{paper.resources.storage_path}"
        )
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    runs = cfg.resources.runs_dir
    volumes = mounts(groups[0]["template"]["spec"])
    if runs is None or not any(
        "persistentVolumeClaim" in v and runs.is_relative_to(p) for p, v in volumes.items()
    ):
        problems.append(f"resources.runs_dir={runs} is on no persistent volume of the head")
    accounts = {g["template"]["spec"].get("serviceAccountName") for g in groups}
    if len(accounts) != 1 or None in accounts:
        problems.append(f"pods run as {accounts}: every pod needs the storage account")
    return problems


@pytest.fixture(scope="module")
def paper() -> StudyConfig:
    return load_config(REPO / PAPER)


def test_paper_needs_are_counted_as_the_stages_count_them(paper):
    needs = {n.what: n.resources for n in actor_needs(paper)}
    for g in paper.generation.generators:  # exactly what the generate stage checks
        need = needs[f"generator {g.name}"]
        check_fits(g, need, fixed=True)
        with pytest.raises(ValueError, match=g.name):
            check_fits(g, {**need, "CPU": need["CPU"] - 0.01}, fixed=True)
    assert needs["generator mistral-nemo-12b"] == {"CPU": 8 + LIGHT_CPUS, "GPU": 2}
    assert needs["generator phi35-mini"] == {"CPU": 4 + LIGHT_CPUS, "GPU": 1}
    # A fine-tune trial: its Ray Train worker and the sliver of CPU that drives it.
    assert needs["trial of bert-for-patents"] == {"CPU": 4 + DRIVER_CPU, "GPU": 0.5}
    assert needs["trial of frozen-mpnet-mlp"] == {"CPU": 4}  # trains on CPUs: no GPU held
    assert needs["fidelity encoder"] == {"CPU": 2, "GPU": 0.25}


def test_raycluster_runs_the_paper_study(paper):
    manifest = load_k8s("raycluster.yaml")["RayCluster"]
    assert manifest["apiVersion"] == "ray.io/v1"
    assert raycluster_problems(manifest["spec"], paper) == []


def test_rayjob_runs_the_paper_study_and_shuts_down():
    assert rayjob_problems(load_k8s("rayjob.yaml")["RayJob"]) == []


def test_rayjob_cluster_is_the_raycluster():
    job = load_k8s("rayjob.yaml")["RayJob"]["spec"]["rayClusterSpec"]
    assert job == load_k8s("raycluster.yaml")["RayCluster"]["spec"]


def test_k8s_groups_are_cluster_yaml_node_types():
    types = yaml.safe_load((REPO / "cluster.yaml").read_text())["available_node_types"]
    spec = load_k8s("raycluster.yaml")["RayCluster"]["spec"]
    groups = {g["groupName"]: group_node(g) for g in spec["workerGroupSpecs"]}
    gpu, cpu = groups["gpu-l4x4"], groups["cpu"]
    assert gpu.max_count == types["gpu.l4x4.spot"]["max_workers"]
    assert gpu.custom == types["gpu.l4x4.spot"]["resources"] == {"accelerator_type_l4": gpu.gpus}
    assert cpu.max_count == types["cpu.m6i8x.spot"]["max_workers"]


def test_storage_manifest_defines_the_volume_and_account_the_pods_use():
    storage = load_k8s("storage.yaml")
    head = load_k8s("rayjob.yaml")["RayJob"]["spec"]["rayClusterSpec"]["headGroupSpec"]
    pod = head["template"]["spec"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in mounts(pod).values()
        if "persistentVolumeClaim" in v
    ]
    assert claims == [storage["PersistentVolumeClaim"]["metadata"]["name"]]
    assert pod["serviceAccountName"] == storage["ServiceAccount"]["metadata"]["name"]


def test_image_installs_what_cluster_yaml_installs():
    dockerfile = (REPO / "k8s" / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray_pin())}-py311-gpu$", dockerfile, re.M)
    assert "-e '.[gpu]'" in dockerfile
    setup = yaml.safe_load((REPO / "cluster.yaml").read_text())["setup_commands"]
    embedded = next(c for c in setup if "--no-deps" in c)
    assert embedded.split("--no-deps", 1)[1].strip() in dockerfile  # the same pinned packages
    # The job's working dir is where the image has the project; the image leaves out what a
    # submitted job's working dir leaves out.
    workdir = re.search(r"^WORKDIR (\S+)$", dockerfile, re.M).group(1)
    runtime_env = yaml.safe_load(load_k8s("rayjob.yaml")["RayJob"]["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == workdir
    assert set(EXCLUDES) <= set((REPO / "k8s" / "Dockerfile.dockerignore").read_text().split())


def _set(doc: Any, keys: tuple, value: Any) -> None:
    """Set (or, with None, delete) doc[k0][k1]...; integer keys index lists."""
    *parents, last = keys
    for key in parents:
        doc = doc[key]
    if value is None:
        del doc[last]
    else:
        doc[last] = value


GPU_RES = ("workerGroupSpecs", 0, "template", "spec", "containers", 0, "resources")
CPU_RES = ("workerGroupSpecs", 1, "template", "spec", "containers", 0, "resources")


@pytest.mark.parametrize(
    ("keys", "value", "expected"),
    [
        (("headGroupSpec", "rayStartParams", "num-cpus"), "4", "num-cpus: '0'"),
        (("enableInTreeAutoscaling",), False, "enableInTreeAutoscaling"),
        (("autoscalerOptions", "idleTimeoutSeconds"), 3600, "idleTimeoutSeconds"),
        (("workerGroupSpecs", 0, "minReplicas"), 1, "does not start at zero"),
        (("workerGroupSpecs", 0, "maxReplicas"), 2, "max_concurrent=64"),
        ((*GPU_RES, "limits", "nvidia.com/gpu"), 1, "requests"),
        ((*GPU_RES, "limits"), {"cpu": "44", "memory": "176Gi", "nvidia.com/gpu": 1}, "nemo-12b"),
        ((*GPU_RES, "limits"), {"cpu": "44", "memory": "64Gi", "nvidia.com/gpu": 4}, "memory"),
        ((*CPU_RES, "requests"), {"cpu": "2", "memory": "8Gi"}, "requests"),
        ((*CPU_RES, "limits"), {"cpu": "2", "memory": "8Gi"}, "trial of frozen-mpnet-mlp"),
        (("rayVersion",), "2.9.0", "rayVersion"),
        (("workerGroupSpecs", 1, "template", "spec", "containers", 0, "image"), "x", "images"),
    ],
)
def test_raycluster_checker_rejects_a_broken_copy(paper, keys, value, expected):
    spec = copy.deepcopy(load_k8s("raycluster.yaml")["RayCluster"]["spec"])
    _set(spec, keys, value)
    problems = raycluster_problems(spec, paper)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("keys", "value", "expected"),
    [
        (("entrypoint",), "synthpat run configs/quickstart.yaml", "not 'synthpat run"),
        (("entrypoint",), f"python -m orchestrator run {PAPER}", "not 'synthpat run"),
        (("entrypoint",), f"synthpat run {PAPER} --force", "other than key=value"),
        (("entrypoint",), f"synthpat run {PAPER} resources.storage=/x", "config error"),
        (
            ("entrypoint",),
            f"synthpat run {PAPER} resources.runs_dir=/home/ray/runs "
            "resources.storage_path=/home/ray/runs/tune",
            "not shared storage",
        ),
        (("entrypoint",), f"synthpat run {PAPER} resources.runs_dir=/tmp/runs", "runs_dir"),
        (("entrypoint",), f"synthpat run {PAPER}", "runs_dir"),
        (("shutdownAfterJobFinishes",), False, "shutdownAfterJobFinishes"),
        (("entrypointNumCpus",), 1, "entrypointNumCpus"),
        (
            ("rayClusterSpec", "workerGroupSpecs", 1, "template", "spec", "serviceAccountName"),
            None,
            "account",
        ),
        (("rayClusterSpec", "headGroupSpec", "rayStartParams", "num-cpus"), None, "num-cpus: '0'"),
    ],
)
def test_rayjob_checker_rejects_a_broken_copy(keys, value, expected):
    job = copy.deepcopy(load_k8s("rayjob.yaml")["RayJob"])
    _set(job["spec"], keys, value)
    problems = rayjob_problems(job)
    assert any(expected in p for p in problems), problems


# --- Slurm ---------------------------------------------------------------------------------------

SBATCH = REPO / "slurm" / "synthpat.sbatch"
HEAD_IP = "10.1.2.3"
#: Slurm memory units in GiB (a bare number is MiB).
SLURM_GIB = {"K": 2**-20, "M": 2**-10, "G": 1, "T": 2**10}

#: Stand-ins for the cluster's commands; each logs its call to $STUB_LOG.
STUBS = {
    # The nodes the job got: node0 .. node<N-1>.
    "scontrol": 'for ((i = 0; i < STUB_NODES; i++)); do echo "node$i"; done',
    "srun": (
        f'echo "srun $*" >> "$STUB_LOG"\ncase "$*" in *hostname*) echo "{HEAD_IP} fe80::1" ;; esac'
    ),
    # The script's wait for N Ray nodes (`python -u - N TIMEOUT`): here, until the log shows N
    # `ray start` calls, which the script runs in the background.
    "python": (
        "cat > /dev/null\n"
        "for ((i = 0; i < 40; i++)); do\n"
        '    (( $(grep -c "ray start" "$STUB_LOG") >= $3 )) && break\n'
        "    sleep 0.05\n"
        "done\n"
        'echo "wait $3 RAY_ADDRESS=${RAY_ADDRESS:-}" >> "$STUB_LOG"'
    ),
    "ray": 'echo "ray $*" >> "$STUB_LOG"',
    "synthpat": (
        'echo "synthpat RAY_ADDRESS=${RAY_ADDRESS:-} PWD=$PWD" >> "$STUB_LOG"\n'
        'printf "%s\\n" "$@" > "$STUB_ARGS"'
    ),
}


def sbatch_directives(text: str) -> tuple[dict[str, str], list[str]]:
    """The #SBATCH options sbatch reads, and a problem for each one after the first command
    (sbatch stops reading them there)."""
    options: dict[str, str] = {}
    problems = []
    commands_seen = False
    for n, line in enumerate(text.splitlines()[1:], start=2):
        if line.startswith("#SBATCH"):
            if commands_seen:
                problems.append(f"line {n}: {line!r} comes after a command; sbatch ignores it")
            for opt in shlex.split(line.removeprefix("#SBATCH")):
                key, _, value = opt.partition("=")
                options[key] = value
        elif line.strip() and not line.lstrip().startswith("#"):
            commands_seen = True
    return options, problems


def slurm_gpus(options: dict[str, str]) -> int:
    """GPUs per node of a job with one task per node."""
    for key in ("--gpus-per-task", "--gpus-per-node"):
        if key in options:
            return int(options[key].split(":")[-1])
    gres = [g for g in options.get("--gres", "").split(",") if g.startswith("gpu")]
    return int(gres[0].split(":")[-1]) if gres else 0


def slurm_gib(value: str) -> float:
    unit = value[-1].upper() if value[-1].isalpha() else "M"
    return float(value.rstrip("KMGTkmgt")) * SLURM_GIB[unit]


def ray_start_args(words: list[str]) -> dict[str, str | bool]:
    """The flags after `ray start`, as {flag: value}; True for a flag without a value."""
    words = words[words.index("start") + 1 :]
    flags: dict[str, str | bool] = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            key, eq, value = word.partition("=")
            nxt = words[i + 1] if i + 1 < len(words) else "--"
            flags[key] = value if eq else (nxt if not nxt.startswith("--") else True)
    return flags


@dataclass(frozen=True)
class SbatchRun:
    code: int
    stderr: str
    calls: list[str]  # the stand-ins' log, in order
    argv: list[str]  # what synthpat was called with


def run_sbatch(text: str, tmp: Path, env: dict[str, str] | None = None) -> SbatchRun:
    """Run the script as Slurm runs it on the job's first node, with the environment Slurm
    gives it (from its #SBATCH lines) and stand-ins for the cluster's commands."""
    options, _ = sbatch_directives(text)
    bin_dir, venv = tmp / "bin", tmp / "venv" / "bin"
    for d in (bin_dir, venv, tmp / "home"):
        d.mkdir(parents=True, exist_ok=True)
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    (venv / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    (tmp / "job.sbatch").write_text(text)
    (tmp / "calls.log").write_text("")
    nodes = int(options.get("--nodes", 1))
    slurm = {
        "SLURM_JOB_NODELIST": f"node[0-{nodes - 1}]",
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_SUBMIT_DIR": str(REPO),
        "SLURM_CPUS_PER_TASK": options.get("--cpus-per-task", "1"),
        "SLURM_GPUS_ON_NODE": str(slurm_gpus(options)),
    }
    if "--gpus-per-task" in options:
        slurm["SLURM_GPUS_PER_TASK"] = options["--gpus-per-task"]
    done = subprocess.run(
        ["bash", str(tmp / "job.sbatch")],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp / "home"),
            "SYNTHPAT_API_KEY": "test-key",
            "SYNTHPAT_VENV": str(tmp / "venv"),
            "STUB_LOG": str(tmp / "calls.log"),
            "STUB_ARGS": str(tmp / "synthpat.args"),
            "STUB_NODES": str(nodes),
            **slurm,
            **(env or {}),
        },
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )
    args = tmp / "synthpat.args"
    return SbatchRun(
        done.returncode,
        done.stderr,
        (tmp / "calls.log").read_text().splitlines(),
        ["synthpat", *args.read_text().splitlines()] if args.is_file() else [],
    )


def sbatch_problems(text: str, tmp: Path) -> list[str]:
    """The batch script: valid bash; whole nodes, one Ray node on each, with GPUs; a head that
    takes no work on the first node, a worker on every other, a wait for all of them, then
    `synthpat run configs/paper.yaml` joining through RAY_ADDRESS, with its storage path and run
    folder on the shared filesystem ($SYNTHPAT_SHARED), and workers that hold the actors."""
    syntax = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    if syntax.returncode:
        return [f"bash -n: {syntax.stderr.strip()}"]
    options, problems = sbatch_directives(text)
    if options.get("--ntasks-per-node", options.get("--tasks-per-node")) != "1":
        problems.append("#SBATCH --ntasks-per-node is not 1: one Ray node per Slurm node")
    if "--exclusive" not in options:
        problems.append("#SBATCH --exclusive is missing: Ray would share nodes (and ports)")
    nodes = int(options.get("--nodes", 1))
    if nodes < 2:
        problems.append(f"#SBATCH --nodes={nodes}: no node besides the head")
    if not slurm_gpus(options):
        problems.append("no #SBATCH GPUs (--gpus-per-task, --gpus-per-node or --gres=gpu:N)")
    shared = tmp / "shared-fs"
    run = run_sbatch(text, tmp, {"SYNTHPAT_SHARED": str(shared)})
    if run.code:
        return [*problems, f"exit {run.code}: {run.stderr.strip()[-500:]}"]
    calls = run.calls
    starts = [(i, shlex.split(c)) for i, c in enumerate(calls) if "ray start" in c]
    heads = [(i, w) for i, w in starts if "--head" in w]
    workers = [w for _, w in starts if "--head" not in w]
    if len(heads) != 1 or heads[0][1][heads[0][1].index("-w") + 1] != "node0":
        return [*problems, f"not one head on the first node: {heads}"]
    head = ray_start_args(heads[0][1])
    if head.get("--num-cpus") != "0" or head.get("--num-gpus") != "0":
        problems.append(
            f"the head takes work: --num-cpus {head.get('--num-cpus')} "
            f"--num-gpus {head.get('--num-gpus')}"
        )
    on = sorted(w[w.index("-w") + 1] for w in workers)
    if on != [f"node{i}" for i in range(1, nodes)]:
        problems.append(f"workers on {on}, not one on each other node")
    flags = [ray_start_args(w) for w in workers]
    if any(f.get("--block") is not True for f in [head, *flags]):
        problems.append("a `ray start` without --block: its srun step would end at once")
    address = f"{HEAD_IP}:6379"
    if any(f.get("--address") != address for f in flags):
        problems.append(f"workers join {[f.get('--address') for f in flags]}, not {address}")
    studies = [i for i, c in enumerate(calls) if c.startswith("synthpat ")]
    if len(studies) != 1:
        return [*problems, f"synthpat ran {len(studies)} times"]
    waited = [i for i, c in enumerate(calls) if c.startswith(f"wait {nodes} ")]
    if not waited or waited[0] < starts[-1][0] or waited[0] > studies[0]:
        problems.append(f"the study starts without waiting for all {nodes} nodes")
    if calls[studies[0]] != f"synthpat RAY_ADDRESS={address} PWD={REPO}":
        problems.append(f"{calls[studies[0]]}: not RAY_ADDRESS={address} in {REPO}")
    if wrong := study_command_problems(run.argv):
        return problems + wrong
    cfg, errors = load_with(run.argv[3:])
    if cfg is None:
        return problems + errors
    if cfg.resources.address not in (None, "auto"):
        problems.append(f"resources.address={cfg.resources.address} overrides RAY_ADDRESS")
    problems += storage_problems(cfg, str(shared))
    if not (cfg.resources.runs_dir and cfg.resources.runs_dir.is_relative_to(shared)):
        problems.append(f"resources.runs_dir={cfg.resources.runs_dir} is not under {shared}")
    cpus = float(options.get("--cpus-per-task", 1))
    memory = slurm_gib(options["--mem"]) if "--mem" in options else (
        cpus * slurm_gib(options.get("--mem-per-cpu", "0"))
    )  # fmt: skip
    kinds = [
        NodeType("worker", float(f.get("--num-cpus", 0)), float(f.get("--num-gpus", 0)),
                 memory, {}, len(flags))
        for f in flags[:1]
    ]  # fmt: skip
    return problems + node_problems(kinds, cfg)


def test_sbatch_directives_are_read_before_any_command():
    options, problems = sbatch_directives(SBATCH.read_text())
    assert problems == []
    assert options["--nodes"] == "5" and options["--exclusive"] == ""
    assert options["--ntasks-per-node"] == "1" and slurm_gpus(options) == 4


def test_sbatch_starts_head_and_workers_then_the_paper_study(tmp_path):
    assert sbatch_problems(SBATCH.read_text(), tmp_path) == []
    calls = "\n".join(run_sbatch(SBATCH.read_text(), tmp_path / "again").calls)
    assert calls.count(f"ray start --address {HEAD_IP}:6379 --num-cpus 48 --num-gpus 4") == 4


def test_sbatch_keeps_the_study_in_the_home_folder_by_default(tmp_path):
    run = run_sbatch(SBATCH.read_text(), tmp_path)  # no SYNTHPAT_SHARED
    shared = tmp_path / "home" / "synthpat-shared"
    assert f"resources.storage_path={shared}/storage/paper" in run.argv
    assert f"resources.runs_dir={shared}/runs" in run.argv
    assert (shared / "storage" / "paper").is_dir() and (shared / "runs").is_dir()


def test_sbatch_stops_before_starting_ray_without_the_serve_api_key(tmp_path):
    run = run_sbatch(SBATCH.read_text(), tmp_path, {"SYNTHPAT_API_KEY": ""})
    assert run.code != 0 and "SYNTHPAT_API_KEY" in run.stderr
    assert run.calls == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "--num-cpus 0 --num-gpus 0 --dash",
            "--num-cpus 4 --num-gpus 0 --dash",
            "the head takes work",
        ),
        ("#SBATCH --exclusive\n", "", "--exclusive is missing"),
        ("#SBATCH --ntasks-per-node=1", "#SBATCH --ntasks-per-node=4", "ntasks-per-node"),
        ("#SBATCH --gpus-per-task=4", "#SBATCH --gpus-per-task=1", "mistral-nemo-12b"),
        ("#SBATCH --mem-per-cpu=4G", "#SBATCH --mem-per-cpu=1G", "memory"),
        ("#SBATCH --cpus-per-task=48", "#SBATCH --cpus-per-task=4", "generator phi35-mini"),
        ("#SBATCH --nodes=5", "#SBATCH --nodes=1", "no node besides the head"),
        (
            "synthpat run configs/paper.yaml",
            "synthpat run configs/quickstart.yaml",
            "not 'synthpat",
        ),
        ('"resources.storage_path=$storage"', '"resources.storage_path=/tmp/tune"', "not shared"),
        ('"resources.runs_dir=$shared/runs"', '"resources.runs_dir=/tmp/runs"', "runs_dir"),
        ('    "trials.resources.max_concurrent=null"\n', "", "max_concurrent=64"),
        ('export RAY_ADDRESS="$ray_address"\n', "", "not RAY_ADDRESS"),
        ('wait_for_nodes "$SLURM_JOB_NUM_NODES"\n', "", "without waiting"),
        ("--dashboard-host=127.0.0.1 --block &", "--dashboard-host=127.0.0.1 &", "--block"),
        ('-w "$node"', '-w "$head_node"', "not one on each other node"),
        ("set -euo pipefail\n", "set -euo pipefail\n#SBATCH --exclusive\n", "sbatch ignores it"),
        ("\nfi\n", "\n", "bash -n"),
    ],
)
def test_sbatch_checker_rejects_a_broken_copy(tmp_path, old, new, expected):
    text = SBATCH.read_text()
    assert old in text
    problems = sbatch_problems(text.replace(old, new, 1), tmp_path)
    assert any(expected in p for p in problems), problems
