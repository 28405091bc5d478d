"""Shared fixtures: the real U²-Net-p weights from $TRT_MATTE_SHARED, else ../shared
beside the checkout (tests that need them skip when absent),
the matte graph built from them, an ONNX Runtime CPU backend, and the ffmpeg binary.
Every other asset a test needs it makes with ffmpeg."""
from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from trt_matte.errors import MatteError

from trt_matte.accuracy import mask_iou  # noqa: F401 -- the tests' IoU is the product's own

REPO_ROOT = Path(__file__).resolve().parent.parent
# As the scripts find them: a GPU machine has no ../shared, so the assets travel elsewhere.
SHARED = Path(os.environ.get("TRT_MATTE_SHARED") or REPO_ROOT.parent / "shared")
U2NETP = SHARED / "models" / "u2netp.onnx"
CARPHONE = SHARED / "media" / "carphone.mp4"


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    from trt_matte.media.ffmpeg import ffmpeg_exe as find_ffmpeg
    return find_ffmpeg()


@pytest.fixture(scope="session")
def u2netp_path() -> Path:
    if not U2NETP.is_file():
        pytest.skip(f"needs {U2NETP} (the real U²-Net-p weights; set TRT_MATTE_SHARED)")
    return U2NETP


@pytest.fixture(scope="session")
def carphone_path() -> Path:
    if not CARPHONE.is_file():
        pytest.skip(f"needs {CARPHONE} (set TRT_MATTE_SHARED)")
    return CARPHONE


@pytest.fixture(scope="session")
def rembg_session(u2netp_path, tmp_path_factory):
    """rembg's own u2net_custom session on the same weights: the independent reference.
    rembg only loads custom models from inside its home, so the weights are copied there."""
    rembg = pytest.importorskip("rembg")
    home = tmp_path_factory.mktemp("rembg_home")
    (home / u2netp_path.name).write_bytes(u2netp_path.read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("U2NET_HOME", str(home))
        return rembg.new_session("u2net_custom", model_path=str(home / u2netp_path.name))


def rembg_mask(session, picture) -> np.ndarray:
    """rembg's mask of a PIL picture or an RGB array."""
    from PIL import Image
    from rembg import remove
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    return np.asarray(remove(image, session=session, only_mask=True))


@pytest.fixture(scope="session")
def cache_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trt_matte_home")


@pytest.fixture(autouse=True)
def isolated_cache(cache_home, monkeypatch):
    """No test reads or writes the user's real caches."""
    monkeypatch.setenv("TRT_MATTE_HOME", str(cache_home))
    monkeypatch.setenv("U2NET_HOME", str(cache_home / "rembg-legacy"))


@pytest.fixture(scope="session")
def matte_graph(u2netp_path, cache_home) -> Path:
    from trt_matte.build_engine.matte_graph import matte_graph_path
    return matte_graph_path(u2netp_path, cache_home)


@pytest.fixture(scope="session")
def cpu_backend(matte_graph):
    from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
    return OnnxRuntimeBackend(matte_graph, device="cpu")


def decode_rgb(ffmpeg: str, path: Path, frames: int | None = None) -> np.ndarray:
    """All (or the first ``frames``) frames of a video as uint8 RGB [N,H,W,3]."""
    limit = ["-frames:v", str(frames)] if frames else []
    probe = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), *limit, "-fps_mode", "passthrough",
                            "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True)
    width, height = video_size(ffmpeg, path)
    return np.frombuffer(probe.stdout, np.uint8).reshape(-1, height, width, 3)


def decode_gray(ffmpeg: str, path: Path) -> np.ndarray:
    width, height = video_size(ffmpeg, path)
    out = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-fps_mode", "passthrough",
                          "-f", "rawvideo", "-pix_fmt", "gray", "-"], capture_output=True, check=True)
    return np.frombuffer(out.stdout, np.uint8).reshape(-1, height, width)


def video_size(ffmpeg: str, path: Path) -> tuple[int, int]:
    """Display width and height as ffmpeg decodes them (rotation applied)."""
    out = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-frames:v", "1",
                          "-f", "image2pipe", "-c:v", "pam", "-"], capture_output=True, check=True).stdout
    header = dict(line.split(b" ", 1) for line in out.split(b"ENDHDR\n", 1)[0].splitlines()[1:])
    return int(header[b"WIDTH"]), int(header[b"HEIGHT"])


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def write_tiny_u2net(path: Path) -> Path:
    """A stand-in with U²-Net's interface (input.1 [1,3,320,320], seven [1,1,320,320]
    outputs) whose mask is the picture's brightness: runs in milliseconds, so pipeline
    tests need neither the real weights nor minutes of CPU, yet masks follow the image."""
    import onnx
    from onnx import TensorProto, helper

    heads = [f"d{index}" for index in range(7)]
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["brightness"], axes=[1], keepdims=1),
             helper.make_node("Sigmoid", ["brightness"], ["d0"])]
    nodes += [helper.make_node("Identity", ["d0"], [name]) for name in heads[1:]]
    graph = helper.make_graph(
        nodes, "tiny_u2net",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, 320, 320]) for name in heads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.save(model, str(path))
    return path


def write_tiny_conv_u2net(path: Path) -> Path:
    """A quantizable stand-in: U²-Net's interface and its building blocks (a strided conv,
    ReLU, a Resize whose sizes come from Shape ops, a concatenation, a 1-channel head
    conv, Sigmoid). Averaging weights keep the mask following the picture's brightness."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    generator = np.random.default_rng(7)
    down = (np.full((8, 3, 3, 3), 1 / 27) * generator.uniform(0.5, 1.5, (8, 1, 1, 1))).astype(np.float32)
    head = np.full((1, 11, 1, 1), 1 / 11, np.float32)
    constants = [numpy_helper.from_array(down, "down.weight"), numpy_helper.from_array(np.zeros(8, np.float32), "down.bias"),
                 numpy_helper.from_array(head, "head.weight"), numpy_helper.from_array(np.zeros(1, np.float32), "head.bias"),
                 numpy_helper.from_array(np.zeros(0, np.float32), "empty"),
                 numpy_helper.from_array(np.array([0], np.int64), "from"), numpy_helper.from_array(np.array([2], np.int64), "to"),
                 numpy_helper.from_array(np.array([2], np.int64), "hw_from"), numpy_helper.from_array(np.array([4], np.int64), "hw_to")]
    nodes = [
        helper.make_node("Conv", ["input.1", "down.weight", "down.bias"], ["down"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["down"], ["down_relu"]),
        helper.make_node("Shape", ["down_relu"], ["down_shape"]),
        helper.make_node("Slice", ["down_shape", "from", "to"], ["batch_channels"]),
        helper.make_node("Shape", ["input.1"], ["input_shape"]),
        helper.make_node("Slice", ["input_shape", "hw_from", "hw_to"], ["height_width"]),
        helper.make_node("Concat", ["batch_channels", "height_width"], ["sizes"], axis=0),
        helper.make_node("Resize", ["down_relu", "empty", "empty", "sizes"], ["up"], mode="linear",
                         coordinate_transformation_mode="pytorch_half_pixel"),
        helper.make_node("Concat", ["up", "input.1"], ["joined"], axis=1),
        helper.make_node("Conv", ["joined", "head.weight", "head.bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["d0"]),
    ]
    heads = [f"d{index}" for index in range(7)]
    nodes += [helper.make_node("Identity", ["d0"], [name]) for name in heads[1:]]
    graph = helper.make_graph(
        nodes, "tiny_conv_u2net", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, 320, 320]) for name in heads],
        initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def synthetic_frames(ffmpeg_exe, tmp_path_factory) -> np.ndarray:
    """Eight 176x144 RGB frames (carphone's size) of ffmpeg's testsrc2: colour, edges and
    text to orient by, for tests that need pictures but not a person."""
    clip = make_clip(ffmpeg_exe, tmp_path_factory.mktemp("synthetic") / "testsrc2.mkv", size="176x144", frames=8,
                     codec="libx264rgb", pix_fmt="rgb24")
    return decode_rgb(ffmpeg_exe, clip)


@pytest.fixture(scope="session")
def tiny_conv_model(tmp_path_factory) -> Path:
    return write_tiny_conv_u2net(tmp_path_factory.mktemp("tiny_conv") / "tiny_conv_u2net.onnx")


@pytest.fixture(scope="session")
def tiny_calibration(tiny_conv_model, ffmpeg_exe, tmp_path_factory):
    """The tiny convolutional model calibrated on a synthetic clip: (clip, report, folder)."""
    from trt_matte.calibration.calibrate import calibrate

    work = tmp_path_factory.mktemp("tiny_calibration")
    clip = make_clip(ffmpeg_exe, work / "clip.mp4", size="96x72", frames=30)
    report = calibrate(tiny_conv_model, "tiny", [clip], work / "cache", frames=12, seed=1)
    return clip, report, Path(report.folder)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_u2net(tmp_path_factory.mktemp("tiny") / "tiny_u2net.onnx")


@pytest.fixture(scope="session")
def tiny_backend(tiny_model, cache_home):
    from trt_matte.build_engine.matte_graph import matte_graph_path
    from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
    return OnnxRuntimeBackend(matte_graph_path(tiny_model, cache_home), device="cpu")


def make_clip(ffmpeg: str, target: Path, *, size: str = "160x120", frames: int = 24, codec: str = "libx264",
              pix_fmt: str = "yuv420p", extra_input: list[str] | None = None, extra_output: list[str] | None = None) -> Path:
    """A synthetic clip with moving content (ffmpeg's testsrc2), made fresh by each test."""
    subprocess.run([ffmpeg, "-v", "error", "-y", *(extra_input or []), "-f", "lavfi",
                    "-i", f"testsrc2=size={size}:rate=25", "-frames:v", str(frames), "-c:v", codec,
                    "-pix_fmt", pix_fmt, *(extra_output or []),
                    str(target)], check=True, capture_output=True)
    return target


def packet_times(path: Path) -> list[float]:
    """Presentation times (seconds) of every video packet, sorted: what players schedule."""
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(float(packet.pts * stream.time_base) for packet in container.demux(stream)
                      if packet.pts is not None)


def with_damaged_frames(source: Path, target: Path, packets: list[int], seed: int = 0) -> Path:
    """``source`` with the payload of those video packets (0-based, file order) scrambled
    past their first 8 bytes: the container stays intact, their frames do not decode."""
    import av
    data = bytearray(source.read_bytes())
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        places = [(packet.pos, packet.size) for packet in container.demux(stream) if packet.size]
    rng = random.Random(seed)
    for index in packets:
        position, size = places[index]
        data[position + 8:position + size] = bytes(rng.randrange(256) for _ in range(size - 8))
    target.write_bytes(bytes(data))
    return target


def decoded_times(ffmpeg: str, path: Path) -> list[float]:
    """Presentation times (seconds) of the frames ``ffmpeg -i path`` outputs: what it
    decodes, less what it skips as damaged."""
    listing = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                              "-copyts", "-f", "framecrc", "-"], capture_output=True, text=True).stdout
    rows = [line.split(",") for line in listing.splitlines() if line and not line.startswith("#")]
    time_base = next(line for line in listing.splitlines() if line.startswith("#tb 0:")).split(":")[1].strip()
    numerator, denominator = (int(part) for part in time_base.split("/"))
    return [int(row[2]) * numerator / denominator for row in rows]


def gpu_visible() -> bool:
    from trt_matte.cuda import gpu_count
    return gpu_count() > 0


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip, visibly, where CUDA sees no GPU."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not gpu_visible():
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU (CUDA sees none here)")
        for item in gpu_items:
            item.add_marker(skip)


def with_display_rotation(ffmpeg: str, source: Path, target: Path, degrees: int, mirrored: bool = False) -> Path:
    """A copy of ``source`` whose display matrix turns it ``degrees`` counter-clockwise
    (and, if ``mirrored``, flips it), as phones store portrait and selfie clips: same
    packets, only the metadata differs. Written by the bundled ffmpeg whatever ``ffmpeg``
    is: -display_rotation came with ffmpeg 6, and 5.1 has no way to write a flip."""
    import imageio_ffmpeg
    flip = ["-display_hflip"] if mirrored else []
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-display_rotation", str(degrees), *flip,
                    "-i", str(source), "-c", "copy", str(target)], check=True)
    return target


def child_processes(parent: int) -> dict[int, str]:
    """pid -> command line of the live children of ``parent`` (Linux /proc)."""
    children = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                children[int(status.parent.name)] = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
    return children


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for_child(parent: int, marker: str, timeout: float = 20.0) -> int:
    """The pid of the first child of ``parent`` whose command line contains ``marker``."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, command in child_processes(parent).items():
            if marker in command:
                return pid
        time.sleep(0.005)
    raise AssertionError(f"no child of {parent} running {marker!r} within {timeout} s")


def dali_image_inputs(paths: list[Path], batch_size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """What the DALI image reader on the CPU hands the model: (uint8 [n,320,320,3], displayed sizes)."""
    from trt_matte.media.dali_images import image_batches
    batches = list(image_batches(paths, batch_size, device_id=None))
    return (np.concatenate([batch.host_array() for batch in batches]),
            [size for batch in batches for size in batch.sizes])


@pytest.fixture
def ctrl_c_raises():
    """SIGINT as an interactive shell leaves it: a suite started in the background
    inherits it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c_after_rename(monkeypatch, after: int) -> list[str]:
    """os.replace as trt_matte.files uses it, with a Ctrl-C landing right after rename
    number ``after`` (use with the ``ctrl_c_raises`` fixture); the names renamed to."""
    renamed: list[str] = []
    from trt_matte import files

    real_replace = os.replace

    def replace_then_ctrl_c(source, target):
        real_replace(source, target)
        renamed.append(os.path.basename(target))
        if len(renamed) == after:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(files.os, "replace", replace_then_ctrl_c)
    return renamed


def leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


class ExplodingBackend:
    """Runs ``inner`` but fails on the third batch, as a crash mid-run would."""

    name, device, preferred_batch, takes_device_batches, shapes_masks = "exploding", "cpu", 2, False, False

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def run(self, batch):
        self.calls += 1
        if self.calls == 3:
            raise MatteError("simulated failure")
        return self.inner.run(batch)


def _record_skip(report) -> None:
    """With TRT_MATTE_RECORD_SKIPS set, each skipped test's (or module's) id is appended to
    that file: CI's second leg, with the full test extra, reruns just those."""
    record = os.environ.get("TRT_MATTE_RECORD_SKIPS")
    if record and report.skipped and report.nodeid:
        with open(record, "a", encoding="utf-8") as skipped:
            skipped.write(report.nodeid + "\n")


def pytest_runtest_logreport(report):
    _record_skip(report)


def pytest_collectreport(report):
    _record_skip(report)  # a module skipped whole (importorskip at its top)
