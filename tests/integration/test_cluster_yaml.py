"""cluster.yaml (and its GCP variant) validate against Ray's autoscaler schema, offline."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster.gcp.yaml"])
def test_cluster_config_validates_against_ray_schema(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(yaml.safe_load((REPO / name).read_text())))  # raises if bad
    raw = yaml.safe_load((REPO / name).read_text())
    types = raw["available_node_types"]
    head = raw["head_node_type"]
    assert types[head]["resources"] == {"CPU": 0}  # no work lands on the head
    gpu_types = [t for t in types if t.startswith("gpu.")]
    assert len(gpu_types) == 2
    assert sum(types[t]["max_workers"] for t in types if t != head) >= raw["max_workers"]
    assert all(types[t]["min_workers"] == 0 for t in gpu_types)  # scale to zero
    assert raw["idle_timeout_minutes"] <= 15
    assert any("[gpu]" in c for c in raw["setup_commands"])
    if raw["provider"]["type"] == "gcp":
        # GCP's provider fills in no CPU/GPU counts: a worker type without them never scales up.
        for t in gpu_types:
            res, accel = types[t]["resources"], types[t]["node_config"]["guestAccelerators"][0]
            assert res["CPU"] >= 1 and res["GPU"] == accel["acceleratorCount"], t


def test_schema_check_catches_a_typo():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    raw["idle_timout_minutes"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(raw))
