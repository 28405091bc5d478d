"""The U²-Net weights trt-matte knows by name, and where it finds them.

``resolve_model(spec)`` turns what the user typed after ``--model`` into an ONNX file:

* nothing: the default model, ``u2net_human_seg``;
* a known name (``u2net_human_seg``, ``u2net``, ``u2netp``), tried in this order:

  1. our own cache, ``cache_dir()/models/<name>.onnx``;
  2. a copy rembg already downloaded (see ``rembg_model_dirs``), used where it lies;
  3. a download from rembg's release page (or ``$TRT_MATTE_MODEL_BASE_URL``) into
     our cache.

  A file only counts in steps 1 and 2 when its md5 matches the registry, so a
  truncated or foreign file is never loaded in place of the real weights;
* anything else: the path of an ONNX file, used as given.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from trt_matte.errors import MatteError
from trt_matte.files import atomic_output

# Every U²-Net takes square RGB pictures of this side and returns masks of the same size.
MODEL_SIZE = 320
MODEL_RGB_BYTES = MODEL_SIZE * MODEL_SIZE * 3

_RELEASES = "https://github.com/danielgatis/rembg/releases/download/v0.0.0"
BASE_URL_ENV = "TRT_MATTE_MODEL_BASE_URL"
# Applies to the connection and to each read, not the whole transfer, so a slow
# but live download of 176 MB is never cut off.
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelInfo:
    name: str
    url: str
    md5: str
    description: str


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    label: str


def _release(name: str, md5: str, description: str) -> ModelInfo:
    return ModelInfo(name, f"{_RELEASES}/{name}.onnx", md5, description)


DEFAULT_MODEL = "u2net_human_seg"

# md5 sums as rembg pins them in rembg/sessions/<name>.py.
MODELS: dict[str, ModelInfo] = {
    info.name: info for info in (
        _release("u2net_human_seg", "c09ddc2e0104f800e3e1bb4652583d1f",
                 "U²-Net trained on people: the best matte for human subjects (176 MB)"),
        _release("u2net", "60024c5c889badc19c04ad937298a77b",
                 "U²-Net for general salient objects (176 MB)"),
        _release("u2netp", "8e83ca70e441ab06c318d82300c84806",
                 "U²-Net-p, the small general model: fastest, coarser edges (4.6 MB)"),
    )
}


def _env_path(variable: str) -> Path | None:
    # An empty variable counts as unset, as the XDG spec asks; otherwise "" would mean cwd.
    value = os.environ.get(variable)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """``$TRT_MATTE_HOME``, else ``$XDG_CACHE_HOME/trt-matte``, else ``~/.cache/trt-matte``."""
    own = _env_path("TRT_MATTE_HOME")
    if own is not None:
        return own
    return (_env_path("XDG_CACHE_HOME") or Path.home() / ".cache") / "trt-matte"


def cached_model_path(name: str) -> Path:
    return cache_dir() / "models" / f"{name}.onnx"


def rembg_model_dirs(name: str) -> list[Path]:
    """Directories where rembg may already hold ``<name>.onnx``, in rembg's own search order.

    Mirrors rembg 2.0.86's ``BaseSession.model_dir`` (``<rembg home>/models/<name>``)
    and ``legacy_home`` (the flat ``~/.u2net`` every older rembg wrote to).
    ``$U2NET_HOME``, when set, is both the legacy directory and the rembg home.
    """
    u2net_home = _env_path("U2NET_HOME")
    data_home = _env_path("XDG_DATA_HOME")
    legacy = u2net_home or (data_home or Path.home()) / ".u2net"
    rembg_home = u2net_home or _env_path("REMBG_HOME") or (
        data_home / "rembg" if data_home else Path.home() / ".rembg")
    return [rembg_home / "models" / name, legacy]


def model_url(info: ModelInfo) -> str:
    """The download URL, with the release prefix swapped for ``$TRT_MATTE_MODEL_BASE_URL`` if set."""
    base = os.environ.get(BASE_URL_ENV)
    if not base:
        return info.url
    return base.rstrip("/") + info.url.removeprefix(_RELEASES)


def _md5(path: Path) -> str:
    # usedforsecurity=False keeps md5 available on FIPS-mode Pythons; this is an integrity check.
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _has_md5(path: Path, md5: str) -> bool:
    try:
        return path.is_file() and _md5(path) == md5
    except OSError:  # unreadable: treat like absent and fall through to the next source
        return False


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _download(info: ModelInfo, destination: Path, progress: bool) -> None:
    url = model_url(info)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                atomic_output(destination) as temp_path:
            size = int(response.headers.get("Content-Length") or 0) or None
            digest = hashlib.md5(usedforsecurity=False)
            with temp_path.open("wb") as out, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                                                   desc=info.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            # Raising inside atomic_output discards the temporary file: a bad download never lands.
            if digest.hexdigest() != info.md5:
                raise MatteError(f"downloaded {url} has md5 {digest.hexdigest()}, expected {info.md5}; "
                                 "discarded it (a proxy or mirror may have served a different file)")
    # ValueError: a $TRT_MATTE_MODEL_BASE_URL without a scheme; HTTPException: a truncated response.
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # an HTTPError is also the open error response; free its socket now
        raise MatteError(f"could not download {url} ({_failure_reason(exc)}); "
                         f"download it yourself to {destination}, or pass --model PATH.onnx") from exc


def _resolve_named(info: ModelInfo, progress: bool) -> Path:
    cached = cached_model_path(info.name)
    if _has_md5(cached, info.md5):
        return cached
    for directory in rembg_model_dirs(info.name):
        candidate = directory / f"{info.name}.onnx"
        if _has_md5(candidate, info.md5):
            return candidate
    _download(info, cached, progress)
    return cached


def _looks_like_name(spec: str) -> bool:
    if not spec:  # Path("") is the working directory; an empty --model is a missing name
        return True
    separators = {"/", os.sep, os.altsep} - {None}
    return not any(sep in spec for sep in separators) and not spec.endswith(".onnx") and not Path(spec).exists()


def _resolve_path(spec: str) -> ResolvedModel:
    path = Path(spec).expanduser().absolute()
    if not path.exists():
        raise MatteError(f"model file not found: {path}")
    if not path.is_file():
        raise MatteError(f"model path is not a file: {path}")
    return ResolvedModel(path, path.name)


def resolve_model(spec: str | None, progress: bool = True) -> ResolvedModel:
    """The ONNX file for ``spec`` (a registry name, a path, or None for the default).

    Raises MatteError for an unknown name, a missing path, or a download that fails.
    """
    name = DEFAULT_MODEL if spec is None else spec
    info = MODELS.get(name)
    if info is not None:
        return ResolvedModel(_resolve_named(info, progress), info.name)
    if _looks_like_name(name):
        raise MatteError(f"unknown model {name!r}; known models: {', '.join(MODELS)} "
                         "(or pass the path of an .onnx file)")
    return _resolve_path(name)
