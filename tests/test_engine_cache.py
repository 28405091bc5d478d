"""The engine cache: keys, sidecars, and what happens to stale or damaged entries."""
from __future__ import annotations

import dataclasses
import json

import pytest

from trt_matte.build_engine.engine_cache import EngineCache, EngineSpec, GpuIdentity

H100 = GpuIdentity("NVIDIA H100 80GB HBM3", "9.0")
SPEC = EngineSpec(graph_sha256="ab" * 32, precision="fp16", tensorrt_version="11.4.0.106", gpu=H100,
                  min_batch=1, opt_batch=8, max_batch=16, max_frame_side=4096, workspace_bytes=4 << 30)
PLAN = b"serialized plan bytes" * 100


@pytest.mark.parametrize("change", [
    {"graph_sha256": "cd" * 32}, {"precision": "fp32"}, {"tensorrt_version": "11.5.0.1"},
    {"gpu": GpuIdentity("NVIDIA H200", "9.0")}, {"gpu": GpuIdentity("NVIDIA H100 80GB HBM3", "8.9")},
    {"max_batch": 32}, {"opt_batch": 4}, {"max_frame_side": 8192}, {"workspace_bytes": 1 << 30},
])
def test_every_build_input_changes_the_key(change):
    assert dataclasses.replace(SPEC, **change).key() != SPEC.key()


def test_key_is_stable():
    assert SPEC.key() == dataclasses.replace(SPEC).key()
    assert len(SPEC.key()) == 24


def test_store_then_lookup(tmp_path):
    cache = EngineCache(tmp_path)
    stored = cache.store(SPEC, PLAN, build_seconds=42.0)
    found = cache.lookup(SPEC)
    assert found is not None and found.path == stored.path and found.path.read_bytes() == PLAN
    assert found.sidecar["spec"]["gpu"]["name"] == H100.name and found.sidecar["build_seconds"] == 42.0
    assert found.path.parent.name == "nvidia-h100-80gb-hbm3-sm90"
    assert cache.lookup(dataclasses.replace(SPEC, max_batch=8)) is None


def test_engines_per_gpu_do_not_collide(tmp_path):
    cache = EngineCache(tmp_path)
    other = dataclasses.replace(SPEC, gpu=GpuIdentity("NVIDIA H200", "9.0"))
    cache.store(SPEC, PLAN, 1.0)
    cache.store(other, b"another plan", 1.0)
    assert cache.lookup(SPEC).path.read_bytes() == PLAN
    assert cache.lookup(other).path.read_bytes() == b"another plan"
    assert cache.timing_cache_path(SPEC.gpu) != cache.timing_cache_path(other.gpu)


def test_truncated_engine_is_not_reused(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(SPEC, PLAN, 1.0)
    cache.engine_path(SPEC).write_bytes(PLAN[:50])
    assert cache.lookup(SPEC) is None


def test_missing_or_garbled_sidecar_is_not_reused(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(SPEC, PLAN, 1.0)
    cache.sidecar_path(SPEC).write_text("{not json")
    assert cache.lookup(SPEC) is None
    cache.sidecar_path(SPEC).unlink()
    assert cache.lookup(SPEC) is None


def test_sidecar_from_another_spec_is_not_reused(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(SPEC, PLAN, 1.0)
    sidecar = json.loads(cache.sidecar_path(SPEC).read_text())
    sidecar["spec"]["tensorrt_version"] = "10.0.0"
    cache.sidecar_path(SPEC).write_text(json.dumps(sidecar))
    assert cache.lookup(SPEC) is None


def test_discard_removes_the_entry(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(SPEC, PLAN, 1.0)
    cache.discard(SPEC)
    assert cache.lookup(SPEC) is None
    assert not cache.engine_path(SPEC).exists() and not cache.sidecar_path(SPEC).exists()
    cache.discard(SPEC)  # discarding twice is harmless
