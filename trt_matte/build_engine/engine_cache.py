"""Where serialized TensorRT engines live and when one may be reused.

A plan is tied to the TensorRT version and the GPU that built it, and to every build
setting, so its key covers the matte graph's bytes, precision, TensorRT version, GPU
name and compute capability, the optimization profile and the workspace limit. Each
engine has a JSON sidecar (written last, so its presence marks a complete entry) that
records the key's fields and the plan's own SHA-256: a truncated or foreign file is
never handed to TensorRT. The timing cache is kept per GPU model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write_bytes

SIDECAR_FORMAT = 1


@dataclass(frozen=True)
class GpuIdentity:
    name: str
    compute_capability: str  # "9.0"

    @property
    def folder_name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        return f"{slug}-sm{self.compute_capability.replace('.', '')}"


@dataclass(frozen=True)
class EngineSpec:
    graph_sha256: str
    precision: str
    tensorrt_version: str
    gpu: GpuIdentity
    min_batch: int
    opt_batch: int
    max_batch: int
    max_frame_side: int
    workspace_bytes: int
    # Bumped when the build code changes what a plan holds (profile, flags), so plans
    # built by older code are not reused.
    build_recipe: int

    def key(self) -> str:
        canonical = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]

    def covers(self, wanted: EngineSpec) -> bool:
        """Whether an engine built for ``self`` serves ``wanted``: the same graph and build,
        with a profile at least as large."""
        limits = ("opt_batch", "max_batch", "max_frame_side")
        same = {name: value for name, value in dataclasses.asdict(self).items() if name not in limits}
        return (same == {name: value for name, value in dataclasses.asdict(wanted).items() if name not in limits}
                and self.max_batch >= wanted.max_batch and self.max_frame_side >= wanted.max_frame_side)

    @classmethod
    def from_dict(cls, fields: dict) -> EngineSpec:
        return cls(**{**fields, "gpu": GpuIdentity(**fields["gpu"])})


@dataclass(frozen=True)
class CachedEngine:
    path: Path
    sidecar: dict
    fresh: bool = False  # built by this run rather than found in the cache


class EngineCache:
    def __init__(self, cache_dir: Path):
        self.root = Path(cache_dir) / "engines"

    def folder(self, gpu: GpuIdentity) -> Path:
        return self.root / gpu.folder_name

    def engine_path(self, spec: EngineSpec) -> Path:
        return self.folder(spec.gpu) / f"{spec.precision}-{spec.key()}.engine"

    def sidecar_path(self, spec: EngineSpec) -> Path:
        return self.engine_path(spec).with_suffix(".json")

    def timing_cache_path(self, gpu: GpuIdentity) -> Path:
        return self.folder(gpu) / "timing.cache"

    def lookup(self, spec: EngineSpec) -> CachedEngine | None:
        """The cached engine for ``spec`` if it is complete and intact, else None."""
        engine_path, sidecar_path = self.engine_path(spec), self.sidecar_path(spec)
        try:
            sidecar = json.loads(sidecar_path.read_text())
            plan = engine_path.read_bytes()
        except (OSError, ValueError):
            return None
        if sidecar.get("format") != SIDECAR_FORMAT or sidecar.get("spec") != dataclasses.asdict(spec):
            return None
        if hashlib.sha256(plan).hexdigest() != sidecar.get("engine_sha256"):
            return None
        return CachedEngine(engine_path, sidecar)

    def find_covering(self, wanted: EngineSpec) -> tuple[CachedEngine, EngineSpec] | None:
        """The intact engine that serves ``wanted`` with the smallest profile: the exact
        one, or one built with larger limits (``trt-matte build --max-size 8192`` serves
        later runs that ask for the default 4096)."""
        candidates = []
        for sidecar_path in sorted(self.folder(wanted.gpu).glob(f"{wanted.precision}-*.json")):
            try:
                spec = EngineSpec.from_dict(json.loads(sidecar_path.read_text())["spec"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # damaged or from another format: lookup() would refuse it too
            if spec.covers(wanted):
                candidates.append(spec)
        for spec in sorted(candidates, key=lambda spec: (spec.max_frame_side, spec.max_batch)):
            cached = self.lookup(spec)
            if cached is not None:
                return cached, spec
        return None

    def store(self, spec: EngineSpec, plan: bytes, build_seconds: float) -> CachedEngine:
        sidecar = {
            "format": SIDECAR_FORMAT,
            "spec": dataclasses.asdict(spec),
            "engine_sha256": hashlib.sha256(plan).hexdigest(),
            "engine_bytes": len(plan),
            "build_seconds": round(build_seconds, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_bytes(self.engine_path(spec), plan)
        atomic_write_bytes(self.sidecar_path(spec), json.dumps(sidecar, indent=2).encode())
        return CachedEngine(self.engine_path(spec), sidecar, fresh=True)

    def discard(self, spec: EngineSpec) -> None:
        """Forget an entry TensorRT refused (stale or corrupt), so it is rebuilt."""
        for path in (self.sidecar_path(spec), self.engine_path(spec)):
            path.unlink(missing_ok=True)
