"""`trials.budget=steps` in the grid and in a trial's results; thresholds that follow support."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from tiny_bert import FILLER, LABELS, WORDS, make_texts

from config import StudyConfig
from config.fidelity import EncoderConfig
from config.trials import FrozenHeadFamily, TfidfLinearFamily
from tasks.artifacts import RESULT_COLUMNS
from tasks.trials.families import build_family
from tasks.trials.grid import TrialCell, check_unique, expand_grid
from tasks.trials.inputs import Embeddings, EncoderKey, EvalData, TrialInputs, TrialSettings
from tasks.trials.recipe import CLASSIFIER, run_trial

GEN = {
    "generators": [{"kind": "vllm", "name": "g", "model": "embedded:smollm2-135m"}],
    "strategies": ["synthesis"],
    "ratios": [1.0, 5.0],
}


def study(**trials) -> StudyConfig:
    families = [
        {"kind": "frozen_head", "name": "head", "epochs": 10},
        {"kind": "finetune", "name": "ft", "epochs": 2, "batch_size": 16, "num_workers": 2},
        {"kind": "tfidf_linear", "name": "tfidf"},
    ]
    tree = {
        "study": "budget",
        "data": {
            "source": {"path": "x.jsonl"},
            "regimes": [{"name": "r40", "size": 40}, {"name": "r100", "size": 100}],
        },
        "generation": GEN,
        "trials": {
            "families": families,
            "arms": ["real_only", "real_plus_synthetic"],
            **trials,
        },
    }
    return StudyConfig.model_validate(tree)


def test_steps_budget_is_what_epochs_take_on_the_regimes_largest_mix():
    cells = expand_grid(study(budget="steps"))
    check_unique(cells)
    steps = {(c.regime, c.family, c.arm, c.n_train): c.steps for c in cells}
    # r40: mixes of 40, 80 and 240 rows (ratio 5 and its control); r100: 100, 200, 600.
    # Frozen head: 10 epochs x ceil(240 / 32) = 80 steps; every arm of the regime gets them.
    assert {s for (r, f, _, _), s in steps.items() if (r, f) == ("r40", "head")} == {80}
    assert {s for (r, f, _, _), s in steps.items() if (r, f) == ("r100", "head")} == {190}
    # Fine-tune on 2 workers: 2 epochs x ceil(ceil(240 / 2) / 16) = 16 steps.
    assert {s for (r, f, _, _), s in steps.items() if (r, f) == ("r40", "ft")} == {16}
    assert {s for (r, f, _, _), s in steps.items() if f == "tfidf"} == {None}  # no steps
    assert {c.n_train for c in cells if c.arm == "duplicate_to_match"} == {80, 240, 200, 600}


def test_an_ensembles_reference_is_its_largest_member_not_their_sum():
    tree = study(budget="steps", arms=["real_only", "ensemble"]).model_dump()
    tree["generation"]["strategies"] = ["synthesis", "paraphrase"]
    cells = expand_grid(StudyConfig.model_validate(tree))
    ens = [c for c in cells if c.arm == "ensemble" and c.regime == "r40" and c.family == "head"]
    assert sorted(c.n_train for c in ens) == [120, 440]  # 40 real + 2 x 40, 40 + 2 x 200
    # Each member trains on 40 + 200 = 240 rows: 10 epochs x ceil(240 / 32) steps, not 440.
    assert {c.steps for c in cells if c.regime == "r40" and c.family == "head"} == {80}


def test_a_familys_own_steps_win_and_need_the_steps_budget():
    tree = study(budget="steps").model_dump()
    tree["trials"]["families"][0]["steps"] = 123
    cells = expand_grid(StudyConfig.model_validate(tree))
    assert {c.steps for c in cells if c.family == "head"} == {123}
    tree["trials"]["budget"] = "epochs"
    with pytest.raises(ValidationError, match=r"families \['head'\] set steps but trials.budget"):
        StudyConfig.model_validate(tree)


def test_budget_is_part_of_the_trial_id_only_when_it_is_steps():
    by_epochs = expand_grid(study())
    by_steps = expand_grid(study(budget="steps"))
    assert all(c.steps is None and "steps" not in c.identity() for c in by_epochs)
    # Today's ids are unchanged by the new field (pinned from before it existed).
    ids = {c.trial_id for c in by_epochs}
    assert "r40-real_only-head-s0-883ffea843" in ids
    torch_ids = {c.trial_id for c in by_steps if c.family != "tfidf"}
    assert not torch_ids & ids
    # TF-IDF has no step budget: its trials are the same under both budgets.
    assert {c.trial_id for c in by_steps if c.family == "tfidf"} < ids


def test_thresholds_default_to_per_label_where_supported():
    t = study().trials
    assert (t.thresholds, t.threshold_min_positives) == ("per_label_where_supported", 5)
    with pytest.raises(ValidationError, match="threshold_min_positives"):
        study(threshold_min_positives=0)


# --- one trial, run in-process --------------------------------------------------------------

VOCAB = sorted({w for ws in WORDS.values() for w in ws} | set(FILLER))


def table(n: int, seed: int, prefix: str) -> pd.DataFrame:
    texts, sets = make_texts(n, seed)
    return pd.DataFrame(
        {"id": [f"{prefix}{i}" for i in range(n)], "text": texts, "labels": sets}
    ).drop_duplicates("text")


def bag_of_words(texts: list[str]) -> np.ndarray:
    x = np.array([[t.split().count(w) for w in VOCAB] for t in texts], dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


ENCODER = EncoderConfig(model="embedded:minilm-l6", max_length=64)


@pytest.fixture
def data() -> TrialInputs:
    real, test = table(40, 1, "r"), table(60, 3, "t")
    val = table(80, 2, "v")
    # G09B keeps only 3 val positives: below K=5, it must get the global threshold.
    rare = val.labels.map(lambda s: "G09B" in s)
    val = pd.concat([val[~rare], val[rare].head(3)], ignore_index=True)
    texts = sorted(set(real.text) | set(val.text) | set(test.text))
    key = EncoderKey.of(ENCODER)
    shared = EvalData(
        labels=LABELS,
        names=LABELS,
        val=val,
        test=test,
        thresholds="per_label_where_supported",
        threshold_min_positives=5,
    )
    emb = Embeddings(key, {t: i for i, t in enumerate(texts)}, bag_of_words(texts))
    return TrialInputs(shared, real={"r40": real}, embeddings={key: emb})


def cell(kind: str, steps: int | None = None) -> TrialCell:
    c = TrialCell("r40", "real_only", kind, kind, "bce", "fp32", "none", 0, 40, 40, steps=steps)
    c.assign_id()
    return c


@pytest.mark.parametrize(("steps", "budget", "taken"), [(None, "epochs", 2 * 2), (25, "steps", 25)])
def test_frozen_head_trial_records_its_budget_and_steps(data, tmp_path, steps, budget, taken):
    fam = FrozenHeadFamily(name="frozen_head", epochs=2, steps=steps, encoder=ENCODER)
    one = cell("frozen_head", steps)
    row = asdict(run_trial(one, build_family(fam), data, TrialSettings(threads=1), tmp_path))
    assert list(row) == [k for k in RESULT_COLUMNS if k in row]
    assert (row["budget"], row["train_steps"]) == (budget, taken)  # 40 rows: 2 batches/epoch
    doc = json.loads((tmp_path / CLASSIFIER / "classifier.json").read_text())
    assert doc["provenance"]["train_steps"] == taken


def test_served_thresholds_follow_the_support_rule(data, tmp_path):
    from serve.server import ClassifierServer
    from tasks.evaluation import choose_thresholds, global_threshold, per_label_thresholds

    family = build_family(TfidfLinearFamily())
    row = run_trial(cell("tfidf_linear"), family, data, TrialSettings(), tmp_path)
    assert (row.budget, row.train_steps) == ("epochs", None)
    server = ClassifierServer({"checkpoint": str(tmp_path / CLASSIFIER), "trial_id": "t"})
    y_val = data.shared.y(data.shared.val)
    p_val = server.predict_proba(data.shared.val.text.tolist())
    assert y_val.sum(0).tolist()[2] == 3  # G09B: under K
    expected = choose_thresholds(y_val, p_val, "per_label_where_supported", 5)
    np.testing.assert_allclose(server.thresholds, expected)
    np.testing.assert_allclose(server.thresholds[2], global_threshold(y_val, p_val))
    np.testing.assert_allclose(server.thresholds[:2], per_label_thresholds(y_val, p_val)[:2])
