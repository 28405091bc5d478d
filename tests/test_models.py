"""Model lookup and download, against a local HTTP server: nothing here touches the internet."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest

from trt_matte import models
from trt_matte.errors import MatteError
from trt_matte.models import MODELS, cache_dir, cached_model_path, rembg_model_dirs, resolve_model

FAKE_BYTES = bytes(range(256)) * 1200  # 300 KiB: several reads, still instant
FAKE_MD5 = hashlib.md5(FAKE_BYTES).hexdigest()


@pytest.fixture(autouse=True)
def fresh_homes(tmp_path, monkeypatch):
    """Per-test caches (conftest's are shared by the session) and no stray rembg or mirror settings."""
    monkeypatch.setenv("TRT_MATTE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    for variable in ("REMBG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", models.BASE_URL_ENV):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def fake_u2netp(monkeypatch):
    """Make the registry expect FAKE_BYTES for u2netp."""
    monkeypatch.setitem(MODELS, "u2netp", dataclasses.replace(MODELS["u2netp"], md5=FAKE_MD5))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A directory served on 127.0.0.1, with TRT_MATTE_MODEL_BASE_URL pointing at it."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        monkeypatch.setenv(models.BASE_URL_ENV, f"http://127.0.0.1:{server.server_address[1]}/mirror/")
        yield root
        server.shutdown()
        thread.join()


@pytest.fixture
def no_server(monkeypatch):
    """TRT_MATTE_MODEL_BASE_URL at a port nothing listens on: any request fails at once."""
    with socket.socket() as reserved:  # bound but never listening, so connections are refused
        reserved.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{reserved.getsockname()[1]}"
        monkeypatch.setenv(models.BASE_URL_ENV, url)
        yield url


def _place(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- downloads ---------------------------------------------------------------------------------

def test_download_lands_in_cache(served, fake_u2netp):
    _place(served / "mirror" / "u2netp.onnx", FAKE_BYTES)
    resolved = resolve_model("u2netp", progress=False)
    assert resolved.path == cache_dir() / "models" / "u2netp.onnx"
    assert resolved.label == "u2netp"
    assert resolved.path.read_bytes() == FAKE_BYTES
    assert sorted(p.name for p in resolved.path.parent.iterdir()) == ["u2netp.onnx"]


def test_download_with_progress_bar(served, fake_u2netp, capsys):
    _place(served / "mirror" / "u2netp.onnx", FAKE_BYTES)
    assert resolve_model("u2netp", progress=True).path.read_bytes() == FAKE_BYTES
    assert "u2netp" in capsys.readouterr().err


def test_checksum_mismatch_keeps_nothing(served):
    _place(served / "mirror" / "u2netp.onnx", FAKE_BYTES)  # registry still expects the real md5
    with pytest.raises(MatteError) as raised:
        resolve_model("u2netp", progress=False)
    message = str(raised.value)
    assert FAKE_MD5 in message and MODELS["u2netp"].md5 in message
    destination = cached_model_path("u2netp")
    assert not destination.exists()
    # No leftover .partial file either; the folder made for the download goes too.
    assert not destination.parent.exists() or list(destination.parent.iterdir()) == []


def test_http_404_names_url_and_destination(served, fake_u2netp):
    with pytest.raises(MatteError) as raised:
        resolve_model("u2netp", progress=False)
    message = str(raised.value)
    assert "/mirror/u2netp.onnx" in message and "404" in message
    assert str(cached_model_path("u2netp")) in message and "--model" in message
    assert "\n" not in message
    assert not cached_model_path("u2netp").exists()


def test_unreachable_server_names_url_and_destination(no_server, fake_u2netp):
    with pytest.raises(MatteError) as raised:
        resolve_model("u2netp", progress=False)
    message = str(raised.value)
    assert f"{no_server}/u2netp.onnx" in message
    assert str(cached_model_path("u2netp")) in message


def test_stalled_server_times_out(monkeypatch, fake_u2netp):
    monkeypatch.setattr(models, "DOWNLOAD_TIMEOUT_S", 0.2)
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv(models.BASE_URL_ENV, url)
        with pytest.raises(MatteError, match="timed out") as raised:
            resolve_model("u2netp", progress=False)
    assert f"{url}/u2netp.onnx" in str(raised.value)


def test_default_url_is_rembg_release():
    assert models.model_url(MODELS["u2net"]) == \
        "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx"


# --- reuse without downloading -----------------------------------------------------------------

def test_cached_file_reused_without_request(no_server, fake_u2netp):
    cached = _place(cached_model_path("u2netp"), FAKE_BYTES)
    assert resolve_model("u2netp", progress=False) == models.ResolvedModel(cached, "u2netp")


def test_default_model_is_human_seg(no_server, monkeypatch):
    monkeypatch.setitem(MODELS, "u2net_human_seg", dataclasses.replace(MODELS["u2net_human_seg"], md5=FAKE_MD5))
    cached = _place(cached_model_path("u2net_human_seg"), FAKE_BYTES)
    assert resolve_model(None, progress=False) == models.ResolvedModel(cached, "u2net_human_seg")


def test_rembg_legacy_file_reused_in_place(tmp_path, no_server, fake_u2netp):
    legacy = _place(tmp_path / "u2net" / "u2netp.onnx", FAKE_BYTES)
    assert resolve_model("u2netp", progress=False).path == legacy
    assert not cached_model_path("u2netp").exists()  # used where it lies, not copied


def test_rembg_per_model_dir_reused(tmp_path, monkeypatch, no_server, fake_u2netp):
    monkeypatch.delenv("U2NET_HOME")
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "rembg"))
    current = _place(tmp_path / "rembg" / "models" / "u2netp" / "u2netp.onnx", FAKE_BYTES)
    assert resolve_model("u2netp", progress=False).path == current


def test_rembg_file_with_wrong_md5_ignored(tmp_path, served, fake_u2netp):
    _place(tmp_path / "u2net" / "u2netp.onnx", b"truncated")
    _place(served / "mirror" / "u2netp.onnx", FAKE_BYTES)
    resolved = resolve_model("u2netp", progress=False)
    assert resolved.path == cached_model_path("u2netp")
    assert resolved.path.read_bytes() == FAKE_BYTES


def test_real_u2netp_reused_from_u2net_home(tmp_path, u2netp_path, no_server):
    legacy = tmp_path / "u2net" / "u2netp.onnx"
    legacy.parent.mkdir()
    shutil.copyfile(u2netp_path, legacy)
    assert resolve_model("u2netp", progress=False).path == legacy


@pytest.mark.parametrize("env", [
    {"U2NET_HOME": "u2"},
    {"REMBG_HOME": "rh"},
    {"XDG_DATA_HOME": "data"},
    {"XDG_DATA_HOME": "data", "REMBG_HOME": "rh"},
    {},
])
def test_rembg_dirs_match_installed_rembg(tmp_path, monkeypatch, env):
    session = pytest.importorskip("rembg.sessions.u2netp").U2netpSession
    monkeypatch.delenv("U2NET_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    for variable, value in env.items():
        monkeypatch.setenv(variable, str(tmp_path / value))
    expected = [Path(session.model_dir()), Path(session.legacy_home())]
    assert rembg_model_dirs("u2netp") == expected


# --- path specs and names ----------------------------------------------------------------------

def test_existing_path_used_as_given(tmp_path):
    custom = _place(tmp_path / "weights" / "mine.onnx", b"anything")
    assert resolve_model(str(custom)) == models.ResolvedModel(custom, "mine.onnx")


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(MatteError, match="not found"):
        resolve_model(str(tmp_path / "absent.onnx"))


def test_missing_bare_onnx_name_is_a_path_error():
    with pytest.raises(MatteError, match="not found"):
        resolve_model("absent.onnx")


def test_directory_is_an_error(tmp_path):
    with pytest.raises(MatteError, match="not a file"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("spec", ["u2net_portrait", ""])
def test_unknown_name_lists_known_models(spec):
    with pytest.raises(MatteError) as raised:
        resolve_model(spec)
    message = str(raised.value)
    assert f"unknown model {spec!r}" in message
    assert all(name in message for name in MODELS)


def test_registry():
    assert models.DEFAULT_MODEL in MODELS
    assert list(MODELS) == ["u2net_human_seg", "u2net", "u2netp"]
    assert MODELS["u2netp"].md5 == "8e83ca70e441ab06c318d82300c84806"


# --- cache directory ---------------------------------------------------------------------------

def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TRT_MATTE_HOME", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"
    monkeypatch.delenv("TRT_MATTE_HOME")
    assert cache_dir() == tmp_path / "xdg" / "trt-matte"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty counts as unset
    assert cache_dir() == tmp_path / "user" / ".cache" / "trt-matte"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "user" / ".cache" / "trt-matte"
