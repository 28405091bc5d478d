"""The engine cache: keys, sidecars, and what happens to stale or damaged entries."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from trt_matte.build_engine.engine_cache import EngineCache, EngineSpec, GpuIdentity

H100 = GpuIdentity("NVIDIA H100 80GB HBM3", "9.0")
SPEC = EngineSpec(graph_sha256="ab" * 32, precision="fp16", tensorrt_version="11.4.0.106", gpu=H100,
                  min_batch=1, opt_batch=16, max_batch=16, max_frame_side=4096, workspace_bytes=4 << 30,
                  build_recipe=2)
PLAN = b"serialized plan bytes" * 100


@pytest.mark.parametrize("change", [
    {"graph_sha256": "cd" * 32}, {"precision": "fp32"}, {"tensorrt_version": "11.5.0.1"},
    {"gpu": GpuIdentity("NVIDIA H200", "9.0")}, {"gpu": GpuIdentity("NVIDIA H100 80GB HBM3", "8.9")},
    {"max_batch": 32}, {"opt_batch": 4}, {"max_frame_side": 8192}, {"workspace_bytes": 1 << 30},
    {"build_recipe": 1},
])
def test_every_build_input_changes_the_key(change):
    assert dataclasses.replace(SPEC, **change).key() != SPEC.key()


def test_key_survives_the_sidecar_and_another_process():
    """An engine is found again by its key: the key of the spec read back from a sidecar,
    and the one another process computes (another hash seed), equal the builder's."""
    round_trip = EngineSpec.from_dict(json.loads(json.dumps(dataclasses.asdict(SPEC))))
    assert round_trip.key() == SPEC.key()
    program = ("import json, sys; from trt_matte.build_engine.engine_cache import EngineSpec; "
               "print(EngineSpec.from_dict(json.loads(sys.argv[1])).key())")
    other = subprocess.run([sys.executable, "-c", program, json.dumps(dataclasses.asdict(SPEC))],
                           env={**os.environ, "PYTHONHASHSEED": "12345"}, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == SPEC.key()
    assert re.fullmatch(r"[0-9a-f]{24}", SPEC.key())


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


def _larger(spec: EngineSpec, **limits: int) -> EngineSpec:
    return dataclasses.replace(spec, **limits)


def test_an_engine_built_with_larger_limits_serves_a_default_run(tmp_path):
    cache = EngineCache(tmp_path)
    big = _larger(SPEC, max_frame_side=8192)
    cache.store(big, b"plan for 8192", 1.0)
    assert cache.lookup(SPEC) is None
    cached, spec = cache.find_covering(SPEC)
    assert spec == big and cached.path.read_bytes() == b"plan for 8192"
    # ...but never a run that needs more than it was built for.
    assert cache.find_covering(_larger(SPEC, max_frame_side=8192, max_batch=32)) is None


def test_the_smallest_covering_engine_wins_and_damaged_ones_are_passed_over(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(_larger(SPEC, max_batch=64, opt_batch=64), b"batch 64", 1.0)
    cache.store(_larger(SPEC, max_batch=32, opt_batch=32), b"batch 32", 1.0)
    assert cache.find_covering(SPEC)[1].max_batch == 32
    cache.engine_path(_larger(SPEC, max_batch=32, opt_batch=32)).write_bytes(b"cut")
    assert cache.find_covering(SPEC)[1].max_batch == 64
    cache.sidecar_path(_larger(SPEC, max_batch=64, opt_batch=64)).write_text("{not json")
    assert cache.find_covering(SPEC) is None


@pytest.mark.parametrize("change", [
    {"graph_sha256": "cd" * 32}, {"precision": "fp32"}, {"tensorrt_version": "11.5.0.1"},
    {"workspace_bytes": 1 << 30}, {"build_recipe": 1}, {"min_batch": 2},
])
def test_an_engine_of_another_graph_or_build_never_serves(tmp_path, change):
    cache = EngineCache(tmp_path)
    cache.store(_larger(SPEC, max_frame_side=8192, **change), PLAN, 1.0)
    assert cache.find_covering(SPEC) is None
