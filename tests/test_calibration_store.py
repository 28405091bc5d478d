"""The store of calibrations: which one a run uses, and the accuracy gate that refuses
one below it unless told to accept it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from trt_matte.accuracy import GATE_IOU
from trt_matte.calibration.store import REPORT_NAME, int8_network, model_folder
from trt_matte.errors import MatteError


def test_gate_refuses_an_inaccurate_calibration_unless_forced(tiny_conv_model, tiny_calibration):
    _, report, folder = tiny_calibration
    cache = Path(report.folder).parents[2]
    stored = json.loads((folder / REPORT_NAME).read_text())
    original = json.dumps(stored)
    stored["accuracy"]["cpu"]["iou"] = GATE_IOU - 0.01
    (folder / REPORT_NAME).write_text(json.dumps(stored))
    try:
        with pytest.raises(MatteError, match="--force"):
            int8_network(tiny_conv_model, cache, "cpu")
        assert int8_network(tiny_conv_model, cache, "cpu", accept_below_gate=True) == folder / "network-cpu.onnx"
        assert int8_network(tiny_conv_model, cache, "tensorrt") == folder / "network-tensorrt.onnx"
    finally:
        (folder / REPORT_NAME).write_text(original)


def test_int8_without_calibration_says_how_to_make_one(tiny_model, tmp_path):
    with pytest.raises(MatteError, match="trt-matte calibrate"):
        int8_network(tiny_model, tmp_path, "cpu", model_label="tiny")
    assert not model_folder(tiny_model, tmp_path).exists()
