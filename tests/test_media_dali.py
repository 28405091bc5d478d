"""What the DALI readers share: pipeline settings, the Lanczos resize to 320x320, and
DALI's many-line errors turned into one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("nvidia.dali")

from trt_matte.media.dali import dali_error, host_frames, pipeline_options, resized_for_model  # noqa: E402


def test_dali_errors_keep_only_the_cause():
    raised = RuntimeError("Critical error in pipeline:\nError in CPU operator `nvidia.dali.fn.experimental.readers"
                          ".video`,\nwhich was used in the pipeline definition with the following traceback:\n\n"
                          "  File \"x.py\", line 3\n\nencountered:\n\nAssert on \"ok\" failed: Could not open "
                          "file clip.mp4\nC++ context: [/opt/dali/reader.cc:123]\n")
    error = dali_error(Path("clip.mp4"), raised)
    assert str(error) == "DALI cannot read clip.mp4: Could not open file clip.mp4"


def test_resized_for_model_is_an_antialiased_lanczos_on_the_cpu(synthetic_frames):
    from nvidia.dali import fn, pipeline_def

    pictures = [frame for frame in synthetic_frames[:3]]

    @pipeline_def(**pipeline_options(batch_size=3, device_id=None))
    def resize():
        return resized_for_model(fn.external_source(source=lambda: pictures, layout="HWC"))

    pipe = resize()
    pipe.build()
    (resized,) = pipe.run()
    ours = host_frames(resized.as_tensor(), 3)
    pillow = np.stack([np.asarray(Image.fromarray(frame).resize((320, 320), Image.Resampling.LANCZOS))
                       for frame in pictures])
    assert ours.shape == (3, 320, 320, 3)
    assert np.abs(ours.astype(int) - pillow).mean() < 1.5  # the same filter, other rounding
