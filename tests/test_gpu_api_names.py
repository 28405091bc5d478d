"""Every TensorRT and CUDA runtime name the GPU path uses exists in the versions it targets.

No GPU or full TensorRT is needed; the checks read files and import nothing from TensorRT.

* TensorRT 11.4: the real ``tensorrt-cu13-bindings==11.4.0.106`` wheel (the ``test``
  extra) installs ``tensorrt_bindings/tensorrt.so``. The test finds that file with
  ``importlib.util.find_spec`` (which does not import the package) and extracts its
  printable strings as ``strings -n 4`` does. pybind11 registers every class, enum
  member, method and property by a C string literal, so a name the bindings define is in
  that table (``shared/docs/tensorrt.md`` §0 verified names the same way). A name counts
  as present when it is a whole string, when ``tensorrt_bindings/__init__.py`` defines it
  (``nptype``, ``__version__``), or when it is in ``TAIL_MERGED``. ``TAIL_MERGED`` lists
  short literals that GCC merged into the tail of a longer string (``Logger`` lives inside
  ``ILogger``). Each entry names its host string and is checked to still hold.

* Which names does the product use? The test does not keep a hand-written list. It runs a
  small flow-insensitive type inference over the whole ``trt_matte`` package (AST only).
  Values have these kinds:

  - the ``tensorrt`` module: ``import tensorrt``, and through return values
    ``import_tensorrt()`` and ``require_tensorrt_gpu()``;
  - ``cuda.bindings.runtime`` (cudart) and attribute chains on it;
  - TensorRT objects: anything reached from the module by attribute, call or subscript
    (``trt.Builder(logger)``, ``builder.create_network(0)``, ``network, parser =
    _parse(...)``);
  - package functions, classes and instances, whose attributes (``self._engine``,
    ``self._context``) are the union of everything assigned to them;
  - "other": literals, builtins, and anything from other libraries.

  Values flow through assignments, tuple unpacking, for/with targets, returns, and call
  sites into parameters. A parameter annotated ``Any`` (or not at all) takes what its
  callers pass. A concrete annotation (``Path``, ``str``) overrides them. Every attribute
  read or written on a TensorRT value is a TensorRT name the product uses, and
  ``from tensorrt import X`` adds X. ``getattr(obj, "x")`` counts as ``obj.x``. With a
  parameter as the name, the string constants at the function's call sites are used.

  The inference must not miss calls silently. In every module where a TensorRT or
  cudart value occurs, each attribute access whose receiver has no known kind fails the
  test (``test_no_untracked_receivers_in_gpu_modules``). A new helper taking an
  unannotated builder that nothing in the package calls would land there. So would a
  dynamic ``getattr`` whose name the test cannot resolve.

* Removed names: the TensorRT <=10 and cuda-python <=12 names that tensorrt.md §4 lists
  must not appear in any code token under ``trt_matte/``. Comments and docstrings are
  free to mention them. Non-docstring string literals are checked, because
  ``getattr(context, "execute_async_v2")`` would also be a use. As a check on the
  method, each removed name the doc reports absent really is absent from ``tensorrt.so``.

* cuda-python: when ``cuda.bindings.runtime`` imports (it does without a GPU; calls
  return ``cudaErrorInsufficientDriver``), every ``cudart.X[.Y]`` chain the package uses
  must resolve on the real module, including the ``cudaMemcpyKind`` members passed by
  name to ``copy_async``. Every ``cuda.bindings`` import must also resolve, and
  ``gpu_count()`` must return the driver's answer (0 here) without raising.
"""
from __future__ import annotations

import ast
import builtins
import importlib.metadata
import importlib.util
import io
import re
import tokenize
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "trt_matte"

TENSORRT = "tensorrt"
CUDART = "cuda.bindings.runtime"
ROOT_MODULES = (TENSORRT, CUDART)
TARGET_TENSORRT = "11.4"

# Short names that GCC tail-merged into a longer literal in the 11.4.0.106 tensorrt.so,
# so they have no string of their own (tensorrt.md §0). Each maps to the longer string
# that holds it. The pybind11 sources register the short ones as whole names:
# py::class_<...>(m, "Logger"/"Builder"/"Runtime"), TensorIOMode .value("INPUT"/"OUTPUT"),
# OnnxParser def_property_readonly("num_errors"), ITimingCache .def("serialize").
# Keep this list to names the product uses and the binding sources confirm.
TAIL_MERGED = {
    "Logger": "ILogger",
    "Builder": "IExprBuilder",
    "Runtime": "IPluginV3OneRuntime",
    "INPUT": "CONDITIONAL_INPUT",
    "OUTPUT": "CONDITIONAL_OUTPUT",
    "num_errors": "get_num_errors",
    "serialize": "plugins_to_serialize",
}

# Calls the GPU path is known to make (tensorrt.md §1, §3). If one is missing from the
# collected set, the inference lost track of an object.
EXPECTED_TENSORRT_NAMES = {
    "Logger", "WARNING", "Builder", "OnnxParser", "Runtime", "MemoryPoolType", "WORKSPACE",
    "TensorIOMode", "INPUT", "OUTPUT", "uint8",
    "create_network", "parse_from_file", "num_errors", "get_error", "create_builder_config",
    "set_memory_pool_limit", "create_optimization_profile", "set_shape", "add_optimization_profile",
    "create_timing_cache", "set_timing_cache", "build_serialized_network", "serialize",
    "deserialize_cuda_engine", "create_execution_context", "num_io_tensors", "get_tensor_name",
    "get_tensor_mode", "get_tensor_dtype", "set_input_shape", "infer_shapes", "set_tensor_address",
    "execute_async_v3",
}
EXPECTED_CUDART_CHAINS = {
    "cudaError_t.cudaSuccess", "cudaGetErrorName", "cudaGetDeviceCount", "cudaGetDeviceProperties",
    "cudaStreamCreateWithFlags", "cudaStreamNonBlocking", "cudaStreamSynchronize", "cudaStreamDestroy",
    "cudaEventCreateWithFlags", "cudaEventDisableTiming", "cudaEventRecord", "cudaEventSynchronize",
    "cudaMalloc", "cudaFree", "cudaMallocHost", "cudaFreeHost", "cudaMemcpyAsync",
    "cudaMemcpyKind.cudaMemcpyHostToDevice", "cudaMemcpyKind.cudaMemcpyDeviceToHost",
}

# ---------------------------------------------------------------------------------------
# Removed names (tensorrt.md §3.2, §3.3, §4). Matched against code tokens only.

# Identifiers that must not occur as a code token at all (exact token match, so
# device_memory_size_v2 and supports_model_v2 do not match their removed v1 names).
REMOVED_IDENTIFIERS = {
    "EXPLICIT_BATCH", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "STRICT_TYPES",
    "execute_async_v2", "num_bindings", "get_binding_index", "get_binding_name", "get_binding_shape",
    "get_binding_dtype", "get_binding_vectorized_dim", "is_shape_binding", "binding_is_input",
    "set_binding_shape", "all_input_dimensions_specified", "int8_calibrator", "set_int8_calibrator",
    "CalibrationAlgoType", "set_calibration_profile", "quantization_flags", "set_quantization_flag",
    "max_workspace_size", "build_cuda_engine", "platform_has_fast_fp16", "platform_has_fast_int8",
    "platform_has_tf32", "get_profile_shape", "device_memory_size", "get_device_memory_size_for_profile",
    "create_execution_context_without_device_memory", "supports_model", "algorithm_selector",
    "IAlgorithmSelector", "weight_streaming_budget", "minimum_weight_streaming_budget", "IStreamReader",
    "all_shapes_specified", "pycuda",
}
REMOVED_PREFIXES = ("get_binding_", "IInt8")  # IInt8Calibrator, IInt8EntropyCalibrator2, ...
# Generic words, removed only as a call or in one enum: `<x>.execute_async(`, `<x>.build_engine(`
# (trt_matte.build_engine is a package), `BuilderFlag.FP16` (other 11.4 enums have members
# named FP16, INT8, BF16 or INT4).
REMOVED_METHOD_CALLS = {"execute_async", "build_engine"}
REMOVED_BUILDER_FLAGS = {"FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                         "PREFER_PRECISION_CONSTRAINTS", "STRICT_TYPES"}
# cuda-python <= 12 modules, removed in cuda-bindings 13.0.
REMOVED_CUDA_MODULES = {"cuda.cudart", "cuda.cuda", "cuda.nvrtc", "cuda.ccudart"}

# Removed names the doc reports absent from tensorrt.so: neither a whole string nor the
# tail of one (a tail could hide a merged literal). Not listed: `execute_async` (still a
# plugin method name), BuilderFlag members (FP16/INT8/BF16/INT4 are other enums' members too).
REMOVED_ABSENT_FROM_SO = (REMOVED_IDENTIFIERS - {"pycuda"}) | {
    "build_engine", "IInt8Calibrator", "IInt8EntropyCalibrator2", "IInt8EntropyCalibrator",
    "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator"}

# ---------------------------------------------------------------------------------------
# The TensorRT bindings' string table


def _bindings_dir() -> Path:
    spec = importlib.util.find_spec("tensorrt_bindings")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tensorrt-cu13-bindings is not installed (pip install -e '.[test]')")
    for location in spec.submodule_search_locations:
        if (Path(location) / "tensorrt.so").is_file():
            return Path(location)
    pytest.skip(f"tensorrt_bindings at {list(spec.submodule_search_locations)} has no tensorrt.so")


@lru_cache(maxsize=None)
def _so_strings_cached(path: str) -> frozenset[str]:
    data = Path(path).read_bytes()
    return frozenset(match.decode("ascii") for match in re.findall(rb"[\x20-\x7e\t]{4,}", data))


@pytest.fixture(scope="module")
def bindings_dir() -> Path:
    directory = _bindings_dir()
    version = importlib.metadata.version("tensorrt_cu13_bindings")
    if not version.startswith(TARGET_TENSORRT + "."):
        pytest.skip(f"installed tensorrt-cu13-bindings {version}; these checks are for {TARGET_TENSORRT}")
    return directory


@pytest.fixture(scope="module")
def so_strings(bindings_dir) -> frozenset[str]:
    strings = _so_strings_cached(str(bindings_dir / "tensorrt.so"))
    assert len(strings) > 10_000, "tensorrt.so has suspiciously few strings"
    return strings


@pytest.fixture(scope="module")
def init_names(bindings_dir) -> set[str]:
    """Names tensorrt_bindings/__init__.py adds (functions, globals, Class.attr assignments)."""
    tree = ast.parse((bindings_dir / "__init__.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names.add(target.id)
                elif isinstance(target, ast.Attribute):
                    names.add(target.attr)
    return names


# ---------------------------------------------------------------------------------------
# Inference over the trt_matte package

OTHER = ("other",)


def _mod(root):
    return ("mod", root)


def _obj(root):
    """What a call, subscript or attribute of a root value yields. For cudart that is a result
    tuple or a struct, whose fields are not checked, so it is just "other"."""
    return ("obj", root) if root == TENSORRT else OTHER


ROOT_KINDS = ("mod", "obj", "chain")


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool


@dataclass
class Function:
    qual: str
    node: ast.AST
    module: Module
    cls: str | None  # qual of the class for methods
    kind: str = "function"  # function | method | staticmethod | classmethod | property
    returns_value: bool = False
    generator: bool = False


@dataclass
class Class:
    qual: str
    node: ast.ClassDef
    module: Module
    bases: list = field(default_factory=list)  # quals of package base classes
    external_base: bool = False
    methods: dict = field(default_factory=dict)  # name -> function qual


@dataclass
class Scope:
    key: str
    kind: str  # module | class | function
    module: Module
    parent: Scope | None
    local_names: set
    function: Function | None = None
    cls: Class | None = None


@dataclass
class Findings:
    tensorrt_names: dict = field(default_factory=lambda: defaultdict(set))  # name -> {"file:line"}
    cudart_chains: dict = field(default_factory=lambda: defaultdict(set))  # "a.b" -> {"file:line"}
    unknown_receivers: list = field(default_factory=list)  # (module, "file:line: expr")
    unresolved_dynamic: list = field(default_factory=list)  # "file:line: ..."
    root_modules_seen: set = field(default_factory=set)  # package modules holding root values
    cuda_imports: set = field(default_factory=set)  # ("cuda.bindings.utils", "get_cuda_native_handle")


def _open_annotation(node) -> bool:
    """Whether an annotation leaves a parameter's kind to its callers (none, Any, object)."""
    if node is None:
        return True
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return False
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _open_annotation(node.left) or _open_annotation(node.right)
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("Optional", "typing.Optional"):
        return _open_annotation(node.slice)
    return ast.unparse(node) in ("Any", "typing.Any", "object")


def _local_names(body_nodes, args: ast.arguments | None) -> set[str]:
    """Names bound in a function body (not descending into nested scopes), plus its parameters."""
    names = set()
    if args is not None:
        for arg in args.posonlyargs + args.args + args.kwonlyargs:
            names.add(arg.arg)
        for arg in (args.vararg, args.kwarg):
            if arg is not None:
                names.add(arg.arg)
    stack = list(body_nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            stack.extend(node.decorator_list)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        stack.extend(ast.iter_child_nodes(node))
    return names


class Program:
    """The package's modules, functions and classes, and the kinds each name can hold."""

    def __init__(self, package_dir: Path):
        self.modules: dict[str, Module] = {}
        for path in sorted(package_dir.rglob("*.py")):
            relative = path.relative_to(package_dir.parent).with_suffix("")
            parts = list(relative.parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join(parts)
            self.modules[name] = Module(name, path, ast.parse(path.read_text(), str(path)), is_package)
        self.functions: dict[str, Function] = {}
        self.classes: dict[str, Class] = {}
        self.env: dict[tuple[str, str], set] = defaultdict(set)  # (scope key, name) -> kinds
        self.attrs: dict[tuple[str, str], set] = defaultdict(set)  # (class qual, attr) -> kinds
        self.returns: dict[str, set] = defaultdict(set)
        self.call_sites: dict[str, list] = defaultdict(list)  # function qual -> [(module, node, {param: arg})]
        self.changed = False
        for module in self.modules.values():
            self._declare(module, module.tree.body, module.name, None, None)

    # -- declarations ------------------------------------------------------------------
    def _declare(self, module: Module, body, prefix: str, cls: Class | None, outer: str | None):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = f"{prefix}.{node.name}" if outer or cls else f"{prefix}:{node.name}"
                decorators = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", "")
                              for d in node.decorator_list}
                kind = "function"
                if cls is not None:
                    kind = ("property" if "property" in decorators or "cached_property" in decorators
                            else "staticmethod" if "staticmethod" in decorators
                            else "classmethod" if "classmethod" in decorators else "method")
                    cls.methods.setdefault(node.name, qual)
                function = Function(qual, node, module, cls.qual if cls else None, kind)
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Return) and inner.value is not None:
                        function.returns_value = True
                    if isinstance(inner, (ast.Yield, ast.YieldFrom)):
                        function.generator = True
                self.functions[qual] = function
                self._declare(module, node.body, qual, None, qual)
            elif isinstance(node, ast.ClassDef):
                qual = f"{prefix}.{node.name}" if outer or cls else f"{prefix}:{node.name}"
                new_class = Class(qual, node, module)
                self.classes[qual] = new_class
                self._declare(module, node.body, qual, new_class, outer)
            else:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        self._declare(module, [child], prefix, cls, outer)

    # -- helpers -----------------------------------------------------------------------
    def add(self, table, key, kinds) -> None:
        current = table[key]
        new = set(kinds) - current
        if new:
            current |= new
            self.changed = True

    def resolve_relative(self, module: Module, level: int, name: str | None) -> str:
        if level == 0:
            return name or ""
        parts = module.name.split(".")
        if not module.is_package:
            parts = parts[:-1]
        if level > 1:
            parts = parts[: len(parts) - (level - 1)]
        return ".".join(parts + ([name] if name else []))

    def mro(self, class_qual: str) -> list[Class]:
        order, stack = [], [class_qual]
        while stack:
            qual = stack.pop(0)
            if qual in self.classes and self.classes[qual] not in order:
                order.append(self.classes[qual])
                stack.extend(self.classes[qual].bases)
        return order

    def subclasses(self, class_qual: str) -> list[Class]:
        return [c for c in self.classes.values() if c.qual != class_qual and class_qual in
                {base.qual for base in self.mro(c.qual)}]

    # -- running -----------------------------------------------------------------------
    def solve(self) -> Findings:
        for _ in range(100):
            self.changed = False
            self.call_sites.clear()
            Walker(self, None).run()
            if not self.changed:
                break
        else:
            raise AssertionError("the inference did not converge")
        findings = Findings()
        self.call_sites.clear()
        Walker(self, findings).run()
        return findings


class Walker:
    """One pass over every module; with ``findings`` set it also records what it sees."""

    def __init__(self, program: Program, findings: Findings | None):
        self.p = program
        self.findings = findings

    def run(self) -> None:
        for module in self.p.modules.values():
            scope = Scope(module.name, "module", module, None, _local_names(module.tree.body, None))
            self.block(module.tree.body, scope)

    # -- recording ---------------------------------------------------------------------
    def where(self, scope: Scope, node) -> str:
        return f"{scope.module.path.relative_to(PACKAGE_DIR.parent)}:{getattr(node, 'lineno', '?')}"

    def note_root(self, scope: Scope, kinds) -> None:
        if self.findings is not None and any(k[0] in ROOT_KINDS for k in kinds):
            self.findings.root_modules_seen.add(scope.module.name)

    # -- statements --------------------------------------------------------------------
    def block(self, statements, scope: Scope) -> None:
        for statement in statements:
            self.statement(statement, scope)

    def statement(self, node, scope: Scope) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.function_def(node, scope)
        elif isinstance(node, ast.ClassDef):
            self.class_def(node, scope)
        elif isinstance(node, ast.Assign):
            kinds = self.expr(node.value, scope)
            for target in node.targets:
                self.bind(target, kinds, scope)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                kinds = self.expr(node.value, scope)
            else:
                kinds = set()
            if scope.kind == "class" or node.value is None:
                kinds = set(kinds) | self.annotation(node.annotation, scope)
            if node.value is not None or scope.kind == "class":
                self.bind(node.target, kinds, scope)
        elif isinstance(node, ast.AugAssign):
            self.expr(node.value, scope)
            if not isinstance(node.target, ast.Name):
                self.expr(node.target, scope)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.bind(node.target, self.iterate(self.expr(node.iter, scope)), scope)
            self.block(node.body, scope)
            self.block(node.orelse, scope)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                kinds = self.expr(item.context_expr, scope)
                if item.optional_vars is not None:
                    self.bind(item.optional_vars, kinds, scope)
            self.block(node.body, scope)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            self.import_(node, scope)
        elif isinstance(node, ast.Return):
            kinds = self.expr(node.value, scope) if node.value is not None else {OTHER}
            if scope.function is not None:
                self.p.add(self.p.returns, scope.function.qual, kinds)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            self.block(node.body, scope)
            for handler in node.handlers:
                if handler.type is not None:
                    self.expr(handler.type, scope)
                if handler.name:
                    self.p.add(self.p.env, (scope.key, handler.name), {OTHER})
                self.block(handler.body, scope)
            self.block(node.orelse, scope)
            self.block(node.finalbody, scope)
        else:  # If, While, Expr, Raise, Assert, Delete, Match, Global, Pass, ...
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    self.statement(child, scope)
                elif isinstance(child, ast.expr):
                    self.expr(child, scope)
                elif isinstance(child, ast.match_case):
                    if child.guard is not None:
                        self.expr(child.guard, scope)
                    self.block(child.body, scope)

    def function_def(self, node, scope: Scope) -> None:
        qual = self.qual_of(node, scope)
        function = self.p.functions[qual]
        for decorator in node.decorator_list:
            self.expr(decorator, scope)
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.expr(default, scope)
        self.bind_name(node.name, {("func", qual)} if scope.kind != "class" else {("method", qual)}, scope)
        inner = Scope(qual, "function", scope.module, scope, _local_names(node.body, node.args), function=function,
                      cls=scope.cls if scope.kind == "class" else None)
        self.parameters(node.args, function, inner)
        if not function.returns_value or function.generator:
            self.p.add(self.p.returns, qual, {OTHER})
        self.block(node.body, inner)

    def parameters(self, args: ast.arguments, function: Function, scope: Scope) -> None:
        positional = args.posonlyargs + args.args
        defaults = dict(zip([a.arg for a in positional][len(positional) - len(args.defaults):], args.defaults))
        defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
        for index, arg in enumerate(positional + args.kwonlyargs):
            key = (scope.key, arg.arg)
            if index == 0 and function.kind in ("method", "property") and function.cls:
                self.p.add(self.p.env, key, {("inst", function.cls)})
                continue
            if index == 0 and function.kind == "classmethod" and function.cls:
                self.p.add(self.p.env, key, {("class", function.cls)})
                continue
            annotated = self.annotation(arg.annotation, scope.parent) if arg.annotation is not None else set()
            if annotated:
                self.p.add(self.p.env, key, annotated)
            if arg.arg in defaults:
                # a default only widens parameters whose callers decide their kind
                if not annotated:
                    self.p.add(self.p.env, key, self.expr(defaults[arg.arg], scope.parent, record=False))
        for arg in (args.vararg, args.kwarg):
            if arg is not None:
                self.p.add(self.p.env, (scope.key, arg.arg), {OTHER})

    def annotation(self, node, scope: Scope) -> set:
        """Kinds an annotation pins down; empty for Any/none (the call sites decide)."""
        if _open_annotation(node):
            return set()
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                node = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return {OTHER}
        if isinstance(node, ast.Constant) and node.value is None:
            return {OTHER}
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.annotation(node.left, scope) | self.annotation(node.right, scope)
        text = ast.unparse(node)
        if re.search(r"\b(trt|tensorrt)\.", text):
            return {_obj(TENSORRT)}
        if isinstance(node, (ast.Name, ast.Attribute)):
            kinds = self.expr(node, scope, record=False)
            classes = {k for k in kinds if k[0] == "class"}
            if classes:
                return {("inst", k[1]) for k in classes}
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("Optional", "typing.Optional"):
            return self.annotation(node.slice, scope) | {OTHER}
        return {OTHER}

    def class_def(self, node: ast.ClassDef, scope: Scope) -> None:
        qual = self.qual_of(node, scope)
        cls = self.p.classes[qual]
        for decorator in node.decorator_list:
            self.expr(decorator, scope)
        bases, external = [], False
        for base in node.bases:
            kinds = self.expr(base, scope)
            package_bases = [k[1] for k in kinds if k[0] == "class"]
            bases.extend(package_bases)
            if not package_bases:
                external = True
        for keyword in node.keywords:
            self.expr(keyword.value, scope)
        cls.bases, cls.external_base = list(dict.fromkeys(bases)), external
        self.bind_name(node.name, {("class", qual)}, scope)
        inner = Scope(qual, "class", scope.module, scope, _local_names(node.body, None), cls=cls)
        self.block(node.body, inner)

    def qual_of(self, node, scope: Scope) -> str:
        if scope.kind == "module":
            return f"{scope.key}:{node.name}"
        return f"{scope.key}.{node.name}"

    def import_(self, node, scope: Scope) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                kinds = self.module_kinds(alias.name, scope, node)  # also records cuda.bindings imports
                if not alias.asname and "." in alias.name:  # `import a.b.c` binds `a`
                    top = alias.name.split(".")[0]
                    kinds = self.module_kinds(top, scope, node, dotted=True)
                self.bind_name((alias.asname or alias.name).split(".")[0], kinds, scope)
            return
        base = self.p.resolve_relative(scope.module, node.level, node.module)
        for alias in node.names:
            if alias.name == "*":
                continue
            full = f"{base}.{alias.name}"
            if full in ROOT_MODULES or full in self.p.modules:
                kinds = self.module_kinds(full, scope, node)
            elif base in ROOT_MODULES:  # from tensorrt import Builder: the same as trt.Builder
                kinds = self.attribute({_mod(base)}, alias.name, node, scope)
            elif base in self.p.modules:
                kinds = set(self.p.env.get((base, alias.name), set()))
            else:
                kinds = {OTHER}
            if base.startswith("cuda.bindings") and self.findings is not None:
                self.findings.cuda_imports.add((base, alias.name))
            self.bind_name(alias.asname or alias.name, kinds, scope)

    def module_kinds(self, name: str, scope: Scope, node, dotted: bool = False) -> set:
        if name in ROOT_MODULES:
            self.note_root(scope, {_mod(name)})
            return {_mod(name)}
        if name in self.p.modules:
            return {("pkgmod", name)}
        if dotted:
            return {("dotted", name)}
        if name.startswith("cuda.bindings") and self.findings is not None:
            self.findings.cuda_imports.add((name, None))
        return {OTHER}

    # -- binding -----------------------------------------------------------------------
    def bind_name(self, name: str, kinds, scope: Scope) -> None:
        self.p.add(self.p.env, (scope.key, name), kinds)
        if scope.kind == "class":
            self.p.add(self.p.attrs, (scope.key, name), kinds)
        self.note_root(scope, kinds)

    def bind(self, target, kinds, scope: Scope) -> None:
        kinds = set(kinds)
        if isinstance(target, ast.Name):
            self.bind_name(target.id, kinds, scope)
        elif isinstance(target, (ast.Tuple, ast.List)):
            tuples = [k for k in kinds if k[0] == "tuple" and len(k[1]) == len(target.elts)]
            rest = {k for k in kinds if not (k[0] == "tuple" and len(k[1]) == len(target.elts))}
            spread = self.iterate(rest) if rest else set()
            for index, element in enumerate(target.elts):
                if isinstance(element, ast.Starred):
                    self.bind(element.value, {OTHER}, scope)
                    continue
                element_kinds = set(spread)
                for k in tuples:
                    element_kinds |= set(k[1][index])
                self.bind(element, element_kinds, scope)
        elif isinstance(target, ast.Attribute):
            receiver = self.expr(target.value, scope)
            self.attribute(receiver, target.attr, target, scope)
            for k in receiver:
                if k[0] == "inst":
                    self.p.add(self.p.attrs, (k[1], target.attr), kinds)
        elif isinstance(target, ast.Subscript):
            self.expr(target.value, scope)
            self.expr(target.slice, scope)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, {OTHER}, scope)

    def iterate(self, kinds) -> set:
        result = set()
        for k in kinds:
            if k[0] == "tuple":
                for element in k[1]:
                    result |= set(element)
            elif k[0] == "seq":
                result |= set(k[1])
            elif k[0] in ROOT_KINDS:
                result.add(_obj(k[1]))
            else:
                result.add(OTHER)
        return result

    # -- expressions -------------------------------------------------------------------
    def lookup(self, name: str, scope: Scope) -> set:
        current = scope
        while current is not None:
            if current.kind == "class" and current is not scope:
                current = current.parent
                continue
            if name in current.local_names:
                return set(self.p.env.get((current.key, name), set()))
            current = current.parent
        if hasattr(builtins, name):
            return {("builtin", name)}
        return set()

    def expr(self, node, scope: Scope, record: bool = True) -> set:
        if not record:
            saved, self.findings = self.findings, None
            try:
                return self.expr(node, scope)
            finally:
                self.findings = saved
        kinds = self._expr(node, scope)
        self.note_root(scope, kinds)
        return kinds

    def _expr(self, node, scope: Scope) -> set:
        if isinstance(node, ast.Name):
            return self.lookup(node.id, scope)
        if isinstance(node, ast.Attribute):
            return self.attribute(self.expr(node.value, scope), node.attr, node, scope)
        if isinstance(node, ast.Call):
            return self.call(node, scope)
        if isinstance(node, ast.Subscript):
            base = self.expr(node.value, scope)
            self.expr(node.slice, scope)
            result = set()
            for k in base:
                if k[0] in ROOT_KINDS:
                    result.add(_obj(k[1]))
                elif k[0] == "tuple" and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int):
                    if -len(k[1]) <= node.slice.value < len(k[1]):
                        result |= set(k[1][node.slice.value])
                elif k[0] in ("tuple", "seq"):
                    result |= self.iterate({k})
                else:
                    result.add(OTHER)
            return result
        if isinstance(node, ast.Tuple):
            if any(isinstance(e, ast.Starred) for e in node.elts):
                for element in node.elts:
                    self.expr(element, scope)
                return {OTHER}
            return {("tuple", tuple(frozenset(self.expr(e, scope)) for e in node.elts))}
        if isinstance(node, (ast.List, ast.Set)):
            elements = set()
            for element in node.elts:
                elements |= self.expr(element, scope)
            return {("seq", frozenset(elements))}
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for generator in node.generators:
                self.bind(generator.target, self.iterate(self.expr(generator.iter, scope)), scope)
                for condition in generator.ifs:
                    self.expr(condition, scope)
            if isinstance(node, ast.DictComp):
                self.expr(node.key, scope)
                self.expr(node.value, scope)
                return {OTHER}
            return {("seq", frozenset(self.expr(node.elt, scope)))}
        if isinstance(node, ast.IfExp):
            self.expr(node.test, scope)
            return self.expr(node.body, scope) | self.expr(node.orelse, scope)
        if isinstance(node, ast.BoolOp):
            result = set()
            for value in node.values:
                result |= self.expr(value, scope)
            return result
        if isinstance(node, ast.NamedExpr):
            kinds = self.expr(node.value, scope)
            self.bind(node.target, kinds, scope)
            return kinds
        if isinstance(node, ast.Await):
            return self.expr(node.value, scope)
        if isinstance(node, ast.Lambda):
            inner = Scope(f"{scope.key}.<lambda@{node.lineno}:{node.col_offset}>", "function", scope.module, scope,
                          _local_names([], node.args))
            for default in node.args.defaults:
                self.expr(default, scope)
            self.expr(node.body, inner)
            return {OTHER}
        for child in ast.iter_child_nodes(node):  # Constant, JoinedStr, BinOp, Compare, Dict, Starred, ...
            if isinstance(child, ast.expr):
                self.expr(child, scope)
        return {OTHER}

    def attribute(self, receiver, attr: str, node, scope: Scope) -> set:
        result = set()
        if not receiver and self.findings is not None:
            self.findings.unknown_receivers.append(
                (scope.module.name, f"{self.where(scope, node)}: {ast.unparse(node)}"))
        for k in receiver:
            tag = k[0]
            if tag in ROOT_KINDS:
                root = k[1]
                if self.findings is not None:
                    if root == TENSORRT:
                        self.findings.tensorrt_names[attr].add(self.where(scope, node))
                    elif tag in ("mod", "chain"):
                        chain = ".".join((k[2] if tag == "chain" else ()) + (attr,))
                        self.findings.cudart_chains[chain].add(self.where(scope, node))
                if tag == "mod":
                    result.add(("chain", root, (attr,)))
                elif tag == "chain":
                    result.add(("chain", root, k[2] + (attr,)))
                else:
                    result.add(_obj(root))
            elif tag == "inst":
                result |= self.member(k[1], attr)
            elif tag == "class":
                for cls in self.p.mro(k[1]):
                    if attr in cls.methods:
                        result.add(("func", cls.methods[attr]))
                        break
                    if (cls.qual, attr) in self.p.attrs:
                        result |= self.p.attrs[(cls.qual, attr)]
                        break
                else:
                    result.add(OTHER)
            elif tag == "dotted":  # import cuda.bindings.runtime; cuda.bindings.runtime.X
                full = f"{k[1]}.{attr}"
                result.add(_mod(full) if full in ROOT_MODULES else ("dotted", full))
            elif tag == "pkgmod":
                if f"{k[1]}.{attr}" in self.p.modules:
                    result.add(("pkgmod", f"{k[1]}.{attr}"))
                else:
                    result |= set(self.p.env.get((k[1], attr), set()))
            else:  # builtins, literals, other libraries, functions
                result.add(OTHER)
        return result

    def member(self, class_qual: str, attr: str) -> set:
        """``instance.attr`` where the instance may be of ``class_qual`` or any subclass of it."""
        result = set()
        for cls in [self.p.classes[class_qual], *self.p.subclasses(class_qual)]:
            result |= self.member_of_exact(cls.qual, attr)
        return result

    def member_of_exact(self, class_qual: str, attr: str) -> set:
        for cls in self.p.mro(class_qual):
            if attr in cls.methods:
                function = self.p.functions[cls.methods[attr]]
                if function.kind == "property":
                    return set(self.p.returns.get(function.qual, set()))
                if function.kind == "staticmethod":
                    return {("func", function.qual)}
                return {("method", function.qual)}
            if (cls.qual, attr) in self.p.attrs:
                return set(self.p.attrs[(cls.qual, attr)])
        if any(cls.external_base for cls in self.p.mro(class_qual)):
            return {OTHER}  # inherited from a class outside the package
        return set()

    def call(self, node: ast.Call, scope: Scope) -> set:
        func_kinds = self.expr(node.func, scope)
        if ("builtin", "getattr") in func_kinds and len(node.args) >= 2:
            return self.getattr_call(node, scope)
        arg_kinds = [self.expr(a, scope) for a in node.args]
        keyword_kinds = {kw.arg: self.expr(kw.value, scope) for kw in node.keywords}
        result = set()
        for k in func_kinds:
            tag = k[0]
            if tag in ROOT_KINDS:
                result.add(_obj(k[1]))
            elif tag in ("func", "method"):
                self.propagate(k[1], node, arg_kinds, keyword_kinds, scope, bound=(tag == "method"))
                result |= set(self.p.returns.get(k[1], set()))
            elif tag == "class":
                for cls in self.p.mro(k[1]):
                    if "__init__" in cls.methods:
                        self.propagate(cls.methods["__init__"], node, arg_kinds, keyword_kinds, scope, bound=True)
                        break
                result.add(("inst", k[1]))
            else:
                result.add(OTHER)
        return result

    def propagate(self, qual: str, node: ast.Call, arg_kinds, keyword_kinds, scope: Scope, bound: bool) -> None:
        function = self.p.functions[qual]
        args = function.node.args
        positional = [a.arg for a in args.posonlyargs + args.args]
        if bound and function.kind in ("method", "property", "classmethod"):
            positional = positional[1:]
        key = function.qual
        mapping = {}
        for index, (arg_node, kinds) in enumerate(zip(node.args, arg_kinds)):
            if isinstance(arg_node, ast.Starred):
                break
            if index < len(positional):
                mapping[positional[index]] = arg_node
                self.p.add(self.p.env, (key, positional[index]), self.unless_annotated(function, positional[index],
                                                                                       kinds))
        for keyword in node.keywords:
            if keyword.arg is not None:
                mapping[keyword.arg] = keyword.value
                self.p.add(self.p.env, (key, keyword.arg),
                           self.unless_annotated(function, keyword.arg, keyword_kinds[keyword.arg]))
        self.p.call_sites[qual].append((scope, node, mapping))

    def unless_annotated(self, function: Function, name: str, kinds) -> set:
        args = function.node.args
        for arg in args.posonlyargs + args.args + args.kwonlyargs:
            if arg.arg == name and not _open_annotation(arg.annotation):
                return set()  # a concrete annotation decides (see parameters())
        return set(kinds)

    def getattr_call(self, node: ast.Call, scope: Scope) -> set:
        receiver = self.expr(node.args[0], scope)
        for extra in node.args[2:]:
            self.expr(extra, scope)
        name = node.args[1]
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            return self.attribute(receiver, name.value, node, scope) | ({OTHER} if len(node.args) > 2 else set())
        self.expr(name, scope)
        roots = {k for k in receiver if k[0] in ROOT_KINDS}
        if roots and self.findings is not None:
            self.findings.unresolved_dynamic.append(DynamicGetattr(scope, node, roots))
        return {_obj(k[1]) for k in roots} | ({OTHER} if receiver - roots else set())


@dataclass
class DynamicGetattr:
    scope: Scope
    node: ast.Call
    roots: set


def _resolve_dynamic(program: Program, findings: Findings) -> list[str]:
    """Turn getattr(<root value>, param) into names via the string constants at call sites."""
    problems = []

    def constants(scope: Scope, expression, depth: int) -> list | None:
        if isinstance(expression, ast.Constant) and isinstance(expression.value, str):
            return [expression.value]
        function = scope.function
        if (depth < 5 and isinstance(expression, ast.Name) and function is not None
                and expression.id in {a.arg for a in function.node.args.posonlyargs + function.node.args.args
                                      + function.node.args.kwonlyargs}):
            sites = program.call_sites.get(function.qual, [])
            values = []
            for caller_scope, call_node, mapping in sites:
                if expression.id not in mapping:
                    return None
                found = constants(caller_scope, mapping[expression.id], depth + 1)
                if found is None:
                    return None
                values.extend(found)
            return values if sites else None
        return None

    for dynamic in findings.unresolved_dynamic:
        where = f"{dynamic.scope.module.path.relative_to(PACKAGE_DIR.parent)}:{dynamic.node.lineno}"
        names = constants(dynamic.scope, dynamic.node.args[1], 0)
        if names is None:
            problems.append(f"{where}: {ast.unparse(dynamic.node)} (name not a string constant at every call site)")
            continue
        for k in dynamic.roots:
            for name in names:
                if k[1] == TENSORRT:
                    findings.tensorrt_names[name].add(where)
                elif k[0] in ("mod", "chain"):
                    findings.cudart_chains[".".join((k[2] if k[0] == "chain" else ()) + (name,))].add(where)
    return problems


@lru_cache(maxsize=1)
def _analysis() -> tuple[Findings, tuple[str, ...]]:
    program = Program(PACKAGE_DIR)
    findings = program.solve()
    problems = tuple(_resolve_dynamic(program, findings))
    return findings, problems


def _format(locations: dict, names) -> str:
    return "\n".join(f"  {name}  ({', '.join(sorted(locations[name]))})" for name in sorted(names))


# ---------------------------------------------------------------------------------------
# Tests: what the product uses (no wheel needed)


def test_collected_tensorrt_names_are_the_real_api_surface():
    findings, _ = _analysis()
    collected = set(findings.tensorrt_names)
    missing = EXPECTED_TENSORRT_NAMES - collected
    assert not missing, f"the inference lost TensorRT calls the product makes: {sorted(missing)}"
    gpu_modules = findings.root_modules_seen
    assert {"trt_matte.build_engine.tensorrt_build", "trt_matte.engine.tensorrt_backend",
            "trt_matte.engine.cuda"} <= gpu_modules, sorted(gpu_modules)


def test_collected_cudart_names_are_the_real_api_surface():
    findings, problems = _analysis()
    assert not problems
    missing = EXPECTED_CUDART_CHAINS - set(findings.cudart_chains)
    assert not missing, f"the inference lost CUDA runtime names the product uses: {sorted(missing)}"


def test_no_untracked_receivers_in_gpu_modules():
    """In modules that touch TensorRT or cudart, every attribute's receiver has a known kind.

    If this fails, the test cannot tell whether ``x.method(...)`` is a TensorRT call: pass
    the object from code in the package, annotate the parameter with a concrete type, or
    (for a TensorRT object) annotate it as ``"trt.IBuilderConfig"`` or ``Any`` with a caller.
    """
    findings, problems = _analysis()
    unknown = sorted({text for module, text in findings.unknown_receivers if module in findings.root_modules_seen})
    assert not unknown, "attribute access on values of unknown origin:\n  " + "\n  ".join(unknown)
    assert not problems, "dynamic getattr on TensorRT/cudart with an unresolvable name:\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------------------------------
# Tests: TensorRT 11.4 bindings


def test_every_tensorrt_name_used_exists_in_11_4(so_strings, init_names):
    findings, _ = _analysis()
    absent = []
    for name in findings.tensorrt_names:
        if name in so_strings or name in init_names:
            continue
        host = TAIL_MERGED.get(name)
        if host is not None and host in so_strings and host.endswith(name):
            continue
        absent.append(name)
    assert not absent, ("TensorRT names the product uses that the 11.4.0.106 bindings lack:\n"
                        + _format(findings.tensorrt_names, absent))


def test_tail_merge_exceptions_still_hold(so_strings):
    for name, host in TAIL_MERGED.items():
        assert host.endswith(name), (name, host)
        assert host in so_strings, f"{host!r} (which holds {name!r}) is no longer a string in tensorrt.so"
        assert name not in so_strings, f"{name!r} is now a string of its own; drop it from TAIL_MERGED"


def test_removed_names_are_absent_from_the_11_4_bindings(so_strings):
    """Checks the method: names the doc calls removed must not show up in the string table."""
    present = sorted(name for name in REMOVED_ABSENT_FROM_SO
                     if any(s == name or s.endswith(name) for s in so_strings))
    assert not present, f"tensorrt.so still has (or ends a string with) these removed names: {present}"
    for prefix in REMOVED_PREFIXES:
        hits = sorted(s for s in so_strings if s.startswith(prefix))
        assert not hits, f"tensorrt.so has strings starting with {prefix!r}: {hits[:5]}"
    # and the replacements the doc names are there
    for name in ("execute_async_v3", "num_io_tensors", "set_input_shape", "device_memory_size_v2",
                 "supports_model_v2", "build_serialized_network", "set_memory_pool_limit"):
        assert name in so_strings, name


def test_tensorrt_bindings_do_not_provide_the_tensorrt_module():
    """The bindings wheel (the test extra) must not make `import tensorrt` work: the product
    reads a failing import as "TensorRT not installed". The full TensorRT (gpu extra) may."""
    _bindings_dir()
    files = importlib.metadata.files("tensorrt_cu13_bindings") or []
    top_level = {Path(str(f)).parts[0] for f in files}
    assert "tensorrt_bindings" in top_level
    assert not top_level & {"tensorrt", "tensorrt.py"}, sorted(top_level)
    if importlib.util.find_spec("tensorrt") is not None:
        assert importlib.metadata.packages_distributions().get("tensorrt") != ["tensorrt_cu13_bindings"]


# ---------------------------------------------------------------------------------------
# Tests: removed names in the product's code


def _docstring_positions(tree: ast.AST) -> set[tuple[int, int]]:
    """Start positions of every bare string statement (docstrings and string 'comments')."""
    positions = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            positions.add((node.value.lineno, node.value.col_offset))
    return positions


def _removed_uses(path: Path, root: Path | None = None) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source)
    docstrings = _docstring_positions(tree)
    relative = path.relative_to(root or PACKAGE_DIR.parent)
    hits = []
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                tokenize.DEDENT)]
    for index, token in enumerate(tokens):
        before = tokens[index - 1].string if index else ""
        after = tokens[index + 1].string if index + 1 < len(tokens) else ""
        where = f"{relative}:{token.start[0]}"
        if token.type == tokenize.NAME:
            name = token.string
            if name in REMOVED_IDENTIFIERS or name.startswith(REMOVED_PREFIXES):
                hits.append(f"{where}: {name}")
            elif name in REMOVED_METHOD_CALLS and before == "." and after == "(":
                hits.append(f"{where}: .{name}(")
            elif (name in REMOVED_BUILDER_FLAGS and before == "." and index >= 2
                  and tokens[index - 2].string == "BuilderFlag"):
                hits.append(f"{where}: BuilderFlag.{name}")
            elif name == "cuda" and after == "." and index + 2 < len(tokens) and \
                    f"cuda.{tokens[index + 2].string}" in REMOVED_CUDA_MODULES:
                hits.append(f"{where}: cuda.{tokens[index + 2].string}")
        elif token.type == tokenize.STRING and token.start not in docstrings:
            try:
                value = ast.literal_eval(token.string)
            except (ValueError, SyntaxError):  # f-strings: checked by their NAME tokens
                continue
            if isinstance(value, str):
                value = value.strip()
                if (value in REMOVED_IDENTIFIERS | REMOVED_METHOD_CALLS or value.startswith(REMOVED_PREFIXES)
                        or value in REMOVED_CUDA_MODULES or value.startswith("pycuda")):
                    hits.append(f"{where}: {value!r}")
    for node in ast.walk(tree):  # `from cuda import cudart` has no `cuda.cudart` token sequence
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "cuda":
            for alias in node.names:
                if f"cuda.{alias.name}" in REMOVED_CUDA_MODULES:
                    hits.append(f"{relative}:{node.lineno}: from cuda import {alias.name}")
    return hits


def test_no_removed_tensorrt_or_cuda_python_names_in_code():
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(files) > 5
    hits = [hit for path in files for hit in _removed_uses(path)]
    assert not hits, "names removed in TensorRT 11 / cuda-bindings 13 used in code:\n  " + "\n  ".join(hits)


def test_removed_name_scan_finds_what_it_should(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('''"""Docstrings may say execute_async_v2 and BuilderFlag.FP16."""
# comments too: num_bindings
import tensorrt as trt
from cuda import cudart
import pycuda.autoinit
config.set_flag(trt.BuilderFlag.FP16)
context.execute_async_v2(bindings, stream)
engine.get_binding_shape(0)
getattr(context, "set_binding_shape")
builder.build_engine(network, config)
x = engine.device_memory_size
ok = engine.device_memory_size_v2 and parser.supports_model_v2(b"")
''')
    hits = _removed_uses(sample, root=tmp_path)
    found = {hit.split(": ", 1)[1] for hit in hits}
    assert found == {"pycuda", "BuilderFlag.FP16", "execute_async_v2", "get_binding_shape",
                     "'set_binding_shape'", ".build_engine(", "device_memory_size", "from cuda import cudart"}, hits


# ---------------------------------------------------------------------------------------
# Tests: cuda-python (cuda-bindings 13)


@pytest.fixture(scope="module")
def cudart():
    try:
        from cuda.bindings import runtime
    except ImportError:
        pytest.skip("cuda-python (cuda-bindings 13) is not installed")
    return runtime


def test_every_cudart_name_used_exists(cudart):
    findings, problems = _analysis()
    assert not problems
    absent = []
    for chain in findings.cudart_chains:
        value = cudart
        for part in chain.split("."):
            if not hasattr(value, part):
                absent.append(chain)
                break
            value = getattr(value, part)
    assert not absent, ("CUDA runtime names missing from cuda.bindings.runtime:\n"
                        + _format(findings.cudart_chains, absent))


def test_every_cuda_bindings_import_resolves(cudart):
    findings, _ = _analysis()
    assert ("cuda.bindings.utils", "get_cuda_native_handle") in findings.cuda_imports, findings.cuda_imports
    for module_name, name in sorted(findings.cuda_imports, key=str):
        module = importlib.import_module(module_name)
        if name is not None:
            assert hasattr(module, name), f"{module_name}.{name}"


def test_gpu_count_matches_the_driver_and_never_raises(cudart):
    from trt_matte.engine.cuda import gpu_count
    error, count = cudart.cudaGetDeviceCount()
    expected = count if error == cudart.cudaError_t.cudaSuccess else 0
    assert gpu_count() == expected
    if error in (cudart.cudaError_t.cudaErrorInsufficientDriver, cudart.cudaError_t.cudaErrorNoDevice):
        assert gpu_count() == 0
