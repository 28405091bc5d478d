"""The TensorRT and CUDA runtime names trt-matte uses exist in the versions it targets.

Only two adapter modules touch those libraries: ``trt_matte/tensorrt_api.py`` (TensorRT)
and ``trt_matte/cuda.py`` (cuda-python's runtime API). The first test holds that rule;
the others read the adapters' names off their syntax tree and check each one against
the real bindings, so no GPU and no full TensorRT are needed. What the calls do on a
GPU is for ``scripts/gpu_check.py`` and the ``gpu``-marked tests.

* TensorRT 11.4: the ``tensorrt-cu13-bindings==11.4.0.106`` wheel (the ``test`` extra)
  installs ``tensorrt_bindings/tensorrt.so`` without a ``tensorrt`` module. pybind11
  registers every class, enum member, method and property by a C string literal, so a
  name the bindings define is in the file's string table (``shared/docs/tensorrt.md`` §0
  verified names the same way). Short literals that GCC merged into the tail of a longer
  string are listed in ``TAIL_MERGED``, each checked to still hold.
* cuda-python 13: ``cuda.bindings.runtime`` imports without a GPU, so every
  ``cudart.X.Y`` chain the adapter uses is resolved on the real module.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "trt_matte"
TENSORRT_ADAPTER = PACKAGE_DIR / "tensorrt_api.py"
CUDA_ADAPTER = PACKAGE_DIR / "cuda.py"
TARGET_TENSORRT = "11.4"

# Short names GCC tail-merged into a longer literal in the 11.4.0.106 tensorrt.so, each
# mapped to the string that holds it; the pybind11 sources register them as whole names.
TAIL_MERGED = {
    "Logger": "ILogger",
    "Builder": "IExprBuilder",
    "Runtime": "IPluginV3OneRuntime",
    "INPUT": "CONDITIONAL_INPUT",
    "OUTPUT": "CONDITIONAL_OUTPUT",
    "num_errors": "get_num_errors",
    "serialize": "plugins_to_serialize",
}
# Attributes in the TensorRT adapter that belong to Python objects, not to TensorRT.
PYTHON_ATTRIBUTES = {"read_bytes", "is_file", "items", "join", "name"}
# Calls the adapter is known to make (tensorrt.md §1, §3): a floor, so the scan is never empty.
EXPECTED_TENSORRT_NAMES = {
    "Logger", "WARNING", "Builder", "OnnxParser", "Runtime", "MemoryPoolType", "WORKSPACE", "TensorIOMode",
    "create_network", "parse_from_file", "create_builder_config", "set_memory_pool_limit", "set_shape",
    "build_serialized_network", "deserialize_cuda_engine", "create_execution_context", "set_input_shape",
    "infer_shapes", "set_tensor_address", "execute_async_v3",
}
# TensorRT <= 10 names that tensorrt.md §4 reports removed: absent from the 11.4 strings.
REMOVED_NAMES = {"execute_async_v2", "num_bindings", "get_binding_index", "set_binding_shape", "EXPLICIT_BATCH",
                 "int8_calibrator", "max_workspace_size", "build_cuda_engine", "platform_has_fast_fp16",
                 "IInt8EntropyCalibrator2", "get_profile_shape", "STRICT_TYPES"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _imported_modules(tree: ast.Module) -> set[str]:
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def _attribute_names(tree: ast.Module) -> set[str]:
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}


def _cudart_chains(tree: ast.Module) -> set[str]:
    """``X.Y`` for every ``cudart.X.Y`` and ``runtime_api().X.Y`` in the CUDA adapter."""
    chains = set()
    for node in ast.walk(tree):
        parts: list[str] = []
        value = node
        while isinstance(value, ast.Attribute):
            parts.insert(0, value.attr)
            value = value.value
        rooted = (isinstance(value, ast.Name) and value.id == "cudart") or (
            isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "runtime_api")
        if parts and rooted:
            chains.add(".".join(parts))
    # prefixes of a chain are visited too; keep the longest
    return {chain for chain in chains if not any(other.startswith(chain + ".") for other in chains)}


def test_only_the_adapters_import_tensorrt_or_cuda_python():
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for module in _imported_modules(_tree(path)):
            root = module.split(".")[0]
            if root == "tensorrt" and path != TENSORRT_ADAPTER or root == "cuda" and path != CUDA_ADAPTER:
                offenders.append(f"{path.relative_to(PACKAGE_DIR)} imports {module}")
            if root in ("pycuda",) or module in ("cuda.cudart", "cuda.cuda"):  # removed in cuda-bindings 13
                offenders.append(f"{path.relative_to(PACKAGE_DIR)} imports {module}")
    assert not offenders


def test_the_tensorrt_adapter_sets_no_builder_flags():
    """TensorRT 11 networks are strongly typed: precision comes from the ONNX graph, and the
    FP16/INT8 builder flags are gone (an FP16 flag would still parse: FP16 is a member of
    other enums)."""
    assert "BuilderFlag" not in _attribute_names(_tree(TENSORRT_ADAPTER))


# ---------------------------------------------------------------------------------------
# TensorRT 11.4 bindings


@pytest.fixture(scope="module")
def bindings_dir() -> Path:
    spec = importlib.util.find_spec("tensorrt_bindings")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tensorrt-cu13-bindings is not installed (pip install -e '.[test]')")
    version = importlib.metadata.version("tensorrt_cu13_bindings")
    if not version.startswith(TARGET_TENSORRT + "."):
        pytest.skip(f"installed tensorrt-cu13-bindings {version}; these checks are for {TARGET_TENSORRT}")
    for location in spec.submodule_search_locations:
        if (Path(location) / "tensorrt.so").is_file():
            return Path(location)
    pytest.skip(f"tensorrt_bindings at {list(spec.submodule_search_locations)} has no tensorrt.so")


@pytest.fixture(scope="module")
def so_strings(bindings_dir) -> frozenset[str]:
    data = (bindings_dir / "tensorrt.so").read_bytes()
    strings = frozenset(match.decode("ascii") for match in re.findall(rb"[\x20-\x7e\t]{4,}", data))
    assert len(strings) > 10_000, "tensorrt.so has suspiciously few strings"
    return strings


@pytest.fixture(scope="module")
def init_names(bindings_dir) -> set[str]:
    """Names tensorrt_bindings/__init__.py defines in Python (``__version__``, ``nptype``...)."""
    tree = _tree(bindings_dir / "__init__.py")
    names = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return names


def _in_bindings(name: str, so_strings: frozenset[str], init_names: set[str]) -> bool:
    host = TAIL_MERGED.get(name)
    return name in so_strings or name in init_names or (host is not None and host in so_strings)


def test_every_tensorrt_name_the_adapter_uses_exists_in_11_4(so_strings, init_names):
    used = {name for name in _attribute_names(_tree(TENSORRT_ADAPTER))
            if not name.startswith("_") and name not in PYTHON_ATTRIBUTES} | {"__version__"}
    assert EXPECTED_TENSORRT_NAMES <= used, sorted(EXPECTED_TENSORRT_NAMES - used)
    absent = sorted(name for name in used if not _in_bindings(name, so_strings, init_names))
    assert not absent, f"TensorRT names the adapter uses that the 11.4 bindings lack: {absent}"


def test_the_name_check_would_catch_a_removed_or_misspelt_call(so_strings, init_names):
    for name in REMOVED_NAMES | {"execute_async_v4", "set_input_shapes"}:
        assert not _in_bindings(name, so_strings, init_names), name
        assert not any(string.endswith(name) for string in so_strings), name


def test_tail_merge_exceptions_still_hold(so_strings):
    for name, host in TAIL_MERGED.items():
        assert host.endswith(name) and host in so_strings, (name, host)
        assert name not in so_strings, f"{name!r} is now a string of its own; drop it from TAIL_MERGED"


def test_tensorrt_bindings_do_not_provide_the_tensorrt_module(bindings_dir):
    """The product reads a failing ``import tensorrt`` as "TensorRT not installed"; the
    bindings wheel of the test extra must not make that import work."""
    files = importlib.metadata.files("tensorrt_cu13_bindings") or []
    top_level = {Path(str(entry)).parts[0] for entry in files}
    assert "tensorrt_bindings" in top_level
    assert not top_level & {"tensorrt", "tensorrt.py"}, sorted(top_level)


# ---------------------------------------------------------------------------------------
# cuda-python (cuda-bindings 13)


@pytest.fixture(scope="module")
def cudart():
    try:
        from cuda.bindings import runtime
    except ImportError:
        pytest.skip("cuda-python (cuda-bindings 13) is not installed")
    return runtime


def test_every_cudart_name_the_adapter_uses_exists(cudart):
    chains = _cudart_chains(_tree(CUDA_ADAPTER))
    # The copy directions are passed by name (copy_async's kind_name) from the GPU stages.
    kinds = {match for path in PACKAGE_DIR.rglob("*.py") for match in re.findall(r'"(cudaMemcpy\w+)"', path.read_text())}
    assert {"cudaMemcpyDeviceToHost", "cudaMemcpyHostToDevice"} <= kinds
    chains |= {f"cudaMemcpyKind.{kind}" for kind in kinds}
    assert {"cudaMalloc", "cudaMemcpyAsync", "cudaStreamCreateWithFlags", "cudaEventRecord"} <= chains
    absent = []
    for chain in sorted(chains):
        value = cudart
        for part in chain.split("."):
            if not hasattr(value, part):
                absent.append(chain)
                break
            value = getattr(value, part)
    assert not absent, f"CUDA runtime names missing from cuda.bindings.runtime: {absent}"


def test_the_adapters_cuda_bindings_imports_resolve(cudart):
    imports = [node for node in ast.walk(_tree(CUDA_ADAPTER))
               if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cuda")]
    assert imports
    for node in imports:
        module = importlib.import_module(node.module)
        for alias in node.names:
            assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


def test_gpu_count_matches_the_driver_and_never_raises(cudart):
    from trt_matte.cuda import gpu_count
    error, count = cudart.cudaGetDeviceCount()
    assert gpu_count() == (count if error == cudart.cudaError_t.cudaSuccess else 0)
