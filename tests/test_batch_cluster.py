"""trt-matte batch on a real Ray cluster of two nodes, both on this machine and on
127.0.0.1 only (Ray's multi-machine switch off, so no process listens on or dials another
address; no dashboard, no usage statistics), one CPU each. Each test is bounded in time;
the cluster is stopped at the end of the module."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# Read by Ray once, at import: set first, for this process and the cluster's.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
ray = pytest.importorskip("ray")

from conftest import decode_gray, make_clip, mean_abs_error  # noqa: E402
from trt_matte import Matter  # noqa: E402
from trt_matte.batch.cluster import RayOptions, run_on_ray  # noqa: E402
from trt_matte.batch.local import DONE, FAILED, SKIPPED  # noqa: E402
from trt_matte.batch.plan import plan_batch  # noqa: E402

OPTIONS = {"model": "tiny", "precision": "auto", "stretch_floor": 0.0, "crf": 18, "audio": True, "smooth": 0,
           "cutout": False}
CLUSTER_START_SECONDS = 60


@pytest.fixture(scope="module")
def cluster_address():
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes(timeout=CLUSTER_START_SECONDS)
        yield cluster.address
    finally:
        cluster.shutdown()


@pytest.fixture
def matter_options(tiny_model):
    return {"model": str(tiny_model), "backend": "onnxruntime", "device": "cpu"}


@pytest.fixture
def shoot(ffmpeg_exe, synthetic_frames, tmp_path):
    from PIL import Image
    folder = tmp_path / "shoot"
    folder.mkdir()
    for index in range(3):
        make_clip(ffmpeg_exe, folder / f"clip{index}.mp4", size="160x120", frames=10 + index)
    Image.fromarray(synthetic_frames[0]).save(folder / "p.png")
    (folder / "broken.mp4").write_bytes(b"not a video")
    (folder / "broken.png").write_bytes(b"not a picture")
    return folder


def test_every_ray_process_listens_on_127_0_0_1_only(cluster_address):
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to list listening sockets")
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30).stdout.splitlines()
    ours = [line for line in listening if any(name in line for name in ("gcs_server", "raylet", "ray::"))]
    assert ours, "the cluster's processes were not found listening"
    hosts = {line.split()[3].rpartition(":")[0].strip("[]").removeprefix("::ffff:") for line in ours}
    assert hosts == {"127.0.0.1"}, "\n".join(ours)


def test_a_mixed_batch_on_two_nodes_equals_single_runs(ffmpeg_exe, cluster_address, matter_options, shoot,
                                                       tiny_model, tmp_path):
    out = tmp_path / "out"
    items = plan_batch([shoot], out, recursive=False)
    on_sigterm = signal.getsignal(signal.SIGTERM)
    report = run_on_ray(items, out, matter_options, OPTIONS, RayOptions(cluster_address, None), progress=False)
    assert signal.getsignal(signal.SIGTERM) is on_sigterm, "ray.init's SIGTERM handler (sys.exit) was left in place"
    statuses = {name: outcome.status for name, outcome in report.outcomes.items()}
    assert statuses == {"shoot/clip0.matte.mp4": DONE, "shoot/clip1.matte.mp4": DONE, "shoot/clip2.matte.mp4": DONE,
                        "shoot/p.png": DONE, "shoot/broken.matte.mp4": FAILED, "shoot/broken.png": FAILED}
    with Matter(tiny_model, backend="onnxruntime", device="cpu") as matter:
        for index in range(3):
            single = matter.video(shoot / f"clip{index}.mp4", tmp_path / f"single{index}.mp4", crf=OPTIONS["crf"])
            assert mean_abs_error(decode_gray(ffmpeg_exe, out / "shoot" / f"clip{index}.matte.mp4"),
                                  decode_gray(ffmpeg_exe, single.output)) == 0
    again = run_on_ray(items, out, matter_options, OPTIONS, RayOptions(cluster_address, None), progress=False)
    assert again.count(SKIPPED) == 4 and again.count(DONE) == 0 and again.count(FAILED) == 2


def _worker_pids() -> list[int]:
    """Processes running a batch task: Ray titles them after the actor's method."""
    titles = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, timeout=30).stdout
    return [int(line.split()[0]) for line in titles.splitlines() if "MatteWorker.matte" in line]


def test_a_worker_killed_mid_task_is_retried_and_nothing_is_lost_or_doubled(ffmpeg_exe, cluster_address,
                                                                           matter_options, tmp_path):
    folder = tmp_path / "long"
    folder.mkdir()
    for index in range(2):
        make_clip(ffmpeg_exe, folder / f"long{index}.mp4", size="320x240", frames=300)
    out = tmp_path / "out"
    items = plan_batch([folder], out, recursive=False)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(report=run_on_ray(
        items, out, matter_options, OPTIONS, RayOptions(cluster_address, None), progress=False)), daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    killed = None
    while killed is None and time.monotonic() < deadline and runner.is_alive():
        pids = _worker_pids()
        if pids:
            time.sleep(0.3)  # well into the task: frames read, the output being written
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.05)
    runner.join(timeout=180)
    assert killed is not None, "no worker was seen running a task"
    assert not runner.is_alive(), "the batch did not finish"
    report = result["report"]
    assert report.count(DONE) == 2, report.failures()
    for index in range(2):
        assert len(decode_gray(ffmpeg_exe, out / "long" / f"long{index}.matte.mp4")) == 300
    assert sorted(path.name for path in (out / "long").iterdir()) == ["long0.matte.mp4", "long1.matte.mp4"]


def test_the_cli_runs_a_batch_on_the_cluster(cluster_address, shoot, tiny_model, tmp_path):
    command = [sys.executable, "-m", "trt_matte", "batch", str(shoot / "clip0.mp4"), str(shoot / "broken.mp4"),
               "-o", str(tmp_path / "out"), "--model", str(tiny_model), "--backend", "onnxruntime",
               "--ray-address", cluster_address]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "batch: 1 done, 0 skipped (made before with these options), 1 failed" in done.stderr
    assert "Ray worker(s)" in done.stderr
    assert Path(tmp_path / "out" / "clip0.matte.mp4").is_file()


def test_ray_without_an_address_starts_its_own_and_stops_it(shoot, tiny_model, tmp_path):
    """No RAY_ADDRESS: a Ray of this machine's own, on 127.0.0.1, gone when the batch ends."""
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")}
    before = set(_ray_daemons())
    done = subprocess.run([sys.executable, "-m", "trt_matte", "batch", str(shoot / "clip1.mp4"), "-o",
                           str(tmp_path / "out"), "--model", str(tiny_model), "--backend", "onnxruntime", "--ray",
                           "-q"], capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (tmp_path / "out" / "clip1.matte.mp4").is_file()
    deadline = time.monotonic() + 30
    while set(_ray_daemons()) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(_ray_daemons()) - before == set()


def _ray_daemons() -> list[int]:
    listing = subprocess.run(["ps", "-eo", "pid=,comm="], capture_output=True, text=True, timeout=30).stdout
    return [int(line.split()[0]) for line in listing.splitlines() if line.split()[1] in ("raylet", "gcs_server")]


def test_a_model_the_workers_cannot_load_is_one_line(cluster_address, shoot, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    done = subprocess.run([sys.executable, "-m", "trt_matte", "batch", str(shoot / "clip0.mp4"), "-o",
                           str(tmp_path / "out"), "--model", str(bad), "--backend", "onnxruntime",
                           "--ray-address", cluster_address], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"trt-matte: error: {bad} is not an ONNX model (DecodeError)"]


def test_split_over_two_nodes_equals_the_unsplit_run(ffmpeg_exe, cluster_address, matter_options, tiny_model,
                                                     tmp_path):
    """--split: a VFR clip with audio cut at keyframes over both nodes' workers, joined:
    the same masks (smoothing across the cuts included), timestamps and audio as one run."""
    import av
    from conftest import packet_times
    from trt_matte.batch.split import plan_segments
    from trt_matte.media.probe import probe_video

    vfr = "settb=1/1000,setpts='(if(lt(N,20),N*0.04,0.8+(N-20)*0.02))/TB'"
    video = make_clip(ffmpeg_exe, tmp_path / "video.mp4", size="96x64", frames=300,
                      extra_output=["-vf", vfr, "-fps_mode", "passthrough", "-enc_time_base", "1:1000", "-g", "25"])
    source = tmp_path / "take.mkv"
    subprocess.run([ffmpeg_exe, "-v", "error", "-i", str(video), "-f", "lavfi", "-i", "sine=duration=7",
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(source)], check=True)
    assert len(plan_segments(source, probe_video(source), workers=2)) == 4
    options = {**OPTIONS, "crf": 0, "smooth": 1}
    out = tmp_path / "split"
    report = run_on_ray(plan_batch([source], out, recursive=False), out, matter_options, options,
                        RayOptions(cluster_address, None), progress=False, split=True)
    assert [outcome.status for outcome in report.outcomes.values()] == [DONE]
    assert sorted(os.listdir(out)) == ["take.matte.mp4", "trt-matte-batch.json"]  # no scratch left
    with Matter(tiny_model, backend="onnxruntime", device="cpu") as matter:
        single = matter.video(source, tmp_path / "single.mp4", crf=0, smooth=1).output
    joined = out / "take.matte.mp4"
    assert (decode_gray(ffmpeg_exe, joined) == decode_gray(ffmpeg_exe, single)).all()
    assert packet_times(joined) == packet_times(single) and len(packet_times(joined)) == 300

    def audio(path):
        with av.open(str(path)) as container:
            return [packet.pts for packet in container.demux(container.streams.audio[0]) if packet.size]
    assert audio(joined) == audio(single) and audio(joined)
