"""What the trainers feed: a fresh block-ordered epoch order, and the step budget.

Both torch trainers (`train_frozen_head`, `train_finetune`) are checked on the rows they actually
step on (their `on_step` hook) and on the optimizer steps they take.
"""

from __future__ import annotations

import numpy as np
import pytest
from tiny_bert import LABELS, build_tiny_bert, make_texts

import tasks.finetune
from config.trials import FinetuneFamily, FrozenHeadFamily
from tasks.finetune import train_finetune
from tasks.finetune_engine import TrainEngine
from tasks.heads import train_frozen_head
from tasks.mixes import epoch_order, shard


def family(model: str, **settings) -> FinetuneFamily:
    """A fine-tune family of a tiny model with a fast schedule (`settings` override it)."""
    defaults = {"max_length": 16, "epochs": 2, "learning_rate": 1e-3, "batch_size": 8}
    return FinetuneFamily(model=model, **{**defaults, **settings})


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def head_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    return x, (rng.random((n, 3)) < 0.4).astype(np.float32)


def text_data(n: int) -> tuple[list[str], np.ndarray]:
    texts, sets = make_texts(n, seed=n)
    return texts, np.array([[c in s for c in LABELS] for s in sets], dtype=np.float32)


class Recorder:
    """`on_step` hook: the rows of every optimizer step, grouped by epoch."""

    def __init__(self):
        self.epochs: dict[int, list[int]] = {}
        self.steps = 0

    def __call__(self, epoch: int, rows: np.ndarray) -> None:
        self.epochs.setdefault(epoch, []).extend(int(r) for r in rows)
        self.steps += 1


def check_fed(fed: dict[int, list[int]], blocks: np.ndarray, seed: int) -> None:
    """Every epoch fed `epoch_order`: all rows, blocks in order, a different order each epoch."""
    for epoch, rows in fed.items():
        assert rows == epoch_order(blocks, seed, epoch).tolist()
        assert (np.diff(blocks[rows]) >= 0).all()
    assert fed[0] != fed[1]


def test_frozen_head_feeds_a_fresh_block_order_each_epoch():
    x, y = head_data(40)
    blocks = np.repeat([0, 1, 2], [10, 20, 10])
    rec = Recorder()
    cfg = FrozenHeadFamily(epochs=3, batch_size=8)
    train_frozen_head(x, y, cfg, "bce", seed=5, blocks=blocks, on_step=rec)
    assert sorted(rec.epochs) == [0, 1, 2] and rec.steps == 15
    check_fed(rec.epochs, blocks, seed=5)
    one = Recorder()  # no blocks: one block, i.e. shuffled
    train_frozen_head(x, y, cfg, "bce", seed=5, on_step=one)
    assert one.epochs[0] == epoch_order(np.zeros(40), 5, 0).tolist()
    with pytest.raises(ValueError, match=r"blocks has shape \(39,\), expected \(40,\)"):
        train_frozen_head(x, y, cfg, "bce", seed=5, blocks=blocks[:39])


@pytest.mark.parametrize("n", [24, 72])
def test_frozen_head_steps_budget_is_exact_whatever_the_mix_size(n):
    x, y = head_data(n)
    cfg = FrozenHeadFamily(epochs=2, batch_size=8)
    under_steps, under_epochs = Recorder(), Recorder()
    train_frozen_head(x, y, cfg, "bce", seed=0, steps=10, on_step=under_steps)
    train_frozen_head(x, y, cfg, "bce", seed=0, on_step=under_epochs)
    assert under_steps.steps == 10
    assert under_epochs.steps == 2 * n // 8  # 6 for 24 rows, 18 for 72: scales with size
    # Ten steps over 24 rows: epochs of 3 steps, fresh orders, the fourth cut after one batch.
    assert len(under_steps.epochs) == (4 if n == 24 else 2)


class CountingEngine(TrainEngine):
    """The real engine, counting optimizer steps and keeping its LR schedule's length."""

    made: list[CountingEngine] = []

    def __init__(self, model, family, precision, device, total_steps, *args):
        super().__init__(model, family, precision, device, total_steps, *args)
        self.total_steps, self.steps = total_steps, 0
        CountingEngine.made.append(self)

    def step(self, loss) -> None:
        super().step(loss)
        self.steps += 1


@pytest.fixture
def counting(monkeypatch):
    CountingEngine.made = []
    monkeypatch.setattr(tasks.finetune, "TrainEngine", CountingEngine)
    return CountingEngine.made


def finetune(model, n, tmp_path, **kw):
    texts, y = text_data(n)
    fam = family(model)
    return train_finetune(
        fam, texts, y, texts[:8], y[:8], LABELS, "bce", "fp32", "sdpa", 3, tmp_path, **kw
    )


def test_finetune_feeds_a_fresh_block_order_each_epoch(tiny_model, tmp_path, counting):
    blocks = np.repeat([0, 1], [8, 16])
    rec = Recorder()
    finetune(tiny_model, 24, tmp_path, blocks=blocks, on_step=rec)
    assert rec.steps == 6 and counting[0].steps == 6
    check_fed(rec.epochs, blocks, seed=3)


def test_finetune_ranks_take_equal_shards_of_one_global_order(tiny_model, tmp_path, monkeypatch):
    """What each of two ranks feeds (the rank faked, no process group): its shard of the same
    global order, padded to equal lengths as DistributedSampler pads."""
    blocks = np.repeat([0, 1], [9, 14])  # 23 rows: one padded row
    fed = []
    for rank in (0, 1):
        monkeypatch.setattr(tasks.finetune, "_dist_info", lambda r=rank: (False, r, 2))
        rec = Recorder()
        finetune(tiny_model, 23, tmp_path, blocks=blocks, on_step=rec)
        fed.append(rec.epochs)
        assert rec.steps == 2 * 2  # 12 rows per rank, batches of 8: two steps an epoch
    for epoch in (0, 1):
        order = epoch_order(blocks, 3, epoch)
        for rank in (0, 1):
            assert fed[rank][epoch] == shard(order, rank, 2).tolist()
        assert set(fed[0][epoch]) | set(fed[1][epoch]) == set(range(23))
    assert fed[0][0] != fed[0][1]


@pytest.mark.parametrize("n", [24, 72])
def test_finetune_steps_budget_is_exact_and_spans_the_schedule(tiny_model, tmp_path, counting, n):
    reports = []
    clf = finetune(tiny_model, n, tmp_path, steps=7, report=lambda e, m: reports.append(m))
    engine = counting[0]
    assert engine.steps == 7 and engine.total_steps == 7
    assert clf.meta["provenance"]["train_steps"] == 7
    assert reports[-1]["train_steps"] == 7.0
    assert engine.sched.get_last_lr()[0] == pytest.approx(0.0)  # linear decay ran its course
    finetune(tiny_model, n, tmp_path)  # under epochs: 2 epochs of n / 8 steps
    assert counting[1].steps == counting[1].total_steps == 2 * n // 8
