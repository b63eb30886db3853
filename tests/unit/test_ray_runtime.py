"""Which cluster synthpat joins, without starting Ray."""

from config.resources import ResourcesConfig
from orchestrator.ray_runtime import cluster_address


def test_cluster_address_prefers_the_config_then_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(ResourcesConfig()) is None  # a local Ray: a fixed cluster
    assert cluster_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert cluster_address(ResourcesConfig()) == "http://head:8265"
    assert cluster_address(ResourcesConfig(address="ray://other:10001")) == "ray://other:10001"
