"""The CUDA adapter's host twin: the same names and signatures as trt_matte.cuda (so the
GPU stages cannot tell them apart), and a ledger that turns a use after free into a
test failure instead of silent corruption."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from trt_matte import cuda, fake_cuda
from trt_matte.engine.backend import upload_batch


def public_names(module) -> set[str]:
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__}


def parameters(function) -> list[tuple[str, object, object]]:
    return [(parameter.name, parameter.kind, parameter.default)
            for parameter in inspect.signature(function).parameters.values()]


def test_the_twin_offers_what_the_stages_use_with_the_same_signatures():
    # runtime_api and check are the real adapter's own plumbing around cuda-python.
    wanted = public_names(cuda) - {"runtime_api", "check"}
    assert wanted <= public_names(fake_cuda), sorted(wanted - public_names(fake_cuda))
    for name in wanted:
        real, twin = getattr(cuda, name), getattr(fake_cuda, name)
        if inspect.isclass(real):
            for method in (m for m in vars(real) if not m.startswith("_") or m == "__init__"):
                assert hasattr(twin, method), f"{name}.{method}"
                if callable(getattr(real, method)):
                    assert parameters(getattr(twin, method)) == parameters(getattr(real, method)), f"{name}.{method}"
        else:
            assert parameters(twin) == parameters(real), name


def test_copies_move_bytes_in_order_and_buffers_are_aligned():
    stream = fake_cuda.Stream()
    device, pinned = fake_cuda.DeviceBuffer(1000), fake_cuda.PinnedBuffer(1000)
    try:
        assert device.address % 256 == 0 and pinned.address % 256 == 0
        pictures = np.arange(600, dtype=np.uint16).astype(np.uint8).reshape(2, 300)
        assert upload_batch(fake_cuda, device, pictures, stream) == device.address
        fake_cuda.copy_async(pinned.address, device.address, 600, "cudaMemcpyDeviceToHost", stream)
        np.testing.assert_array_equal(pinned.array[:600], pictures.ravel())
        with pytest.raises(ValueError, match="exceeds the input buffer"):
            upload_batch(fake_cuda, device, np.zeros((2, 600), np.uint8), stream)
    finally:
        device.close()
        pinned.close()
        stream.close()


def test_the_ledger_catches_a_use_after_free_and_an_overrun():
    before = fake_cuda.live_allocations()
    stream = fake_cuda.Stream()
    source, target = fake_cuda.DeviceBuffer(512), fake_cuda.PinnedBuffer(512)
    assert fake_cuda.live_allocations() == before + 2
    with pytest.raises(ValueError, match="overrun"):
        fake_cuda.copy_async(target.address, source.address, 513, "cudaMemcpyDeviceToHost", stream)
    freed = source.address
    source.close()
    source.close()  # idempotent, as the real one
    with pytest.raises(fake_cuda.UseAfterFree):
        fake_cuda.copy_async(target.address, freed, 16, "cudaMemcpyDeviceToHost", stream)
    target.close()
    assert fake_cuda.live_allocations() == before
    event = fake_cuda.Event()
    event.close()
    with pytest.raises(fake_cuda.UseAfterFree):
        event.synchronize()


def test_a_collected_buffers_bytes_may_serve_a_host_array_again():
    """Closed but alive, a buffer's range is freed fake memory; once collected, the
    allocator may hand the same address to a host array, which must not count as a use
    after free (a copy from such an array failed a test run before)."""
    import gc
    buffer = fake_cuda.PinnedBuffer(4096)
    start = buffer.address
    buffer.close()
    with pytest.raises(fake_cuda.UseAfterFree):
        fake_cuda.check_range(start, 16)
    del buffer
    gc.collect()
    fake_cuda.check_range(start, 16)  # now plain host memory as far as the ledger knows
