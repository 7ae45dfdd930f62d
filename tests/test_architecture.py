"""Import direction (STYLE 3.2) and the single owner of 1-D reshapes (CONVENTIONS section 1).

The scanners work on source text, so the self-checks at the bottom feed them planted violations
to prove they would notice.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "service"

ENGINE_FORBIDDEN = (
    "service.codec",
    "service.api",
    "service.config",
    "service.main",
    "fastapi",
    "pydantic",
    "pydantic_settings",
    "starlette",
)
CODEC_FORBIDDEN = ("fastapi", "starlette", "service.api", "service.main")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module ``source`` imports, relative imports resolved against ``module``.

    ``from a import b`` yields both ``a`` and ``a.b`` (``b`` may be a submodule);
    ``importlib.import_module("x")`` and ``__import__("x")`` with a literal name count too.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                keep = len(base_parts) - (node.level - 1)
                if keep < 1:
                    raise ValueError(f"relative import beyond the top package in {module}")
                base = ".".join(base_parts[:keep])
                target = ".".join(p for p in (base, node.module or "") if p)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
                found.append((node.lineno, str(first.value)))
    return found


def import_violations(
    source: str, module: str, forbidden: tuple[str, ...], is_package: bool = False
) -> list[str]:
    hits = []
    for line, name in imported_modules(source, module, is_package):
        for bad in forbidden:
            if name == bad or name.startswith(bad + "."):
                hits.append(f"{module}:{line} imports {name}")
    return sorted(set(hits))


def _is_minus_one(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and node.operand.value == 1
    ) or (isinstance(node, ast.Constant) and node.value == -1)


def _is_1d_minus_one(node: ast.AST) -> bool:
    """``-1``, ``(-1,)`` or ``[-1]``: a target shape that flattens to 1-D."""
    if isinstance(node, ast.Tuple | ast.List):
        return len(node.elts) == 1 and _is_minus_one(node.elts[0])
    return _is_minus_one(node)


def flatten_violations(source: str, filename: str = "<source>") -> list[str]:
    """Calls that turn a tensor into a vector: ``ravel``, ``flatten``, ``reshape`` to ``-1``.

    Method form ``x.reshape(-1, ...)`` is refused whenever the first target entry is ``-1``;
    function form ``np.reshape(x, -1)`` / ``np.reshape(x, (-1,))`` (also via ``shape=`` or
    ``newshape=``) whenever the target is 1-D.
    """
    hits = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        where = f"{filename}:{node.lineno}"
        if name in ("ravel", "flatten"):
            hits.append(f"{where} {name}")
        elif name == "reshape":
            targets = [kw.value for kw in node.keywords if kw.arg in ("shape", "newshape")]
            is_method = isinstance(func, ast.Attribute) and not (
                isinstance(func.value, ast.Name) and func.value.id in ("np", "numpy")
            )
            if is_method and node.args:
                first = node.args[0]
                if _is_minus_one(first) or _is_1d_minus_one(first):
                    hits.append(f"{where} reshape(-1)")
                    continue
                if (
                    isinstance(first, ast.Tuple | ast.List)
                    and first.elts
                    and _is_minus_one(first.elts[0])
                ):
                    hits.append(f"{where} reshape((-1, ...))")
                    continue
            else:
                targets.extend(node.args[1:2])
            if any(_is_1d_minus_one(t) for t in targets):
                hits.append(f"{where} reshape(..., -1)")
    return hits


def python_files(package: str) -> list[Path]:
    files = sorted((SERVICE / package).rglob("*.py"))
    assert files, f"no modules found under service/{package}"
    return files


ENGINE_FILES = python_files("engine")
CODEC_FILES = python_files("codec")
PICTURES_FILES = python_files("pictures")


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", ENGINE_FILES, ids=_id)
def test_engine_imports_no_outer_layer(path: Path) -> None:
    found = import_violations(
        path.read_text(), module_name(path), ENGINE_FORBIDDEN, path.name == "__init__.py"
    )
    assert found == []


@pytest.mark.parametrize("path", CODEC_FILES, ids=_id)
def test_codec_imports_no_http_layer(path: Path) -> None:
    found = import_violations(
        path.read_text(), module_name(path), CODEC_FORBIDDEN, path.name == "__init__.py"
    )
    assert found == []


@pytest.mark.parametrize("path", PICTURES_FILES, ids=_id)
def test_pictures_import_no_http_layer(path: Path) -> None:
    # Pictures draw engine results; like the engine they know nothing of HTTP, codec or settings.
    found = import_violations(
        path.read_text(), module_name(path), ENGINE_FORBIDDEN, path.name == "__init__.py"
    )
    assert found == []


@pytest.mark.parametrize("path", [p for p in ENGINE_FILES if p.name != "layout.py"], ids=_id)
def test_only_layout_flattens(path: Path) -> None:
    assert flatten_violations(path.read_text(), _id(path)) == []


def test_the_scanned_sets_include_the_known_modules() -> None:
    names = {p.name for p in ENGINE_FILES}
    assert {"layout.py", "sparse.py", "errors.py"} <= names
    assert "tensors.py" in {p.name for p in CODEC_FILES}


# -- self-checks: the scanners catch planted violations ------------------------------------------

PLANTED_IMPORTS = [
    ("from ..codec import Tensor", "service.codec"),
    ("from ..codec.tensors import Tensor", "service.codec.tensors"),
    ("from .. import config", "service.config"),
    ("from ..api.problems import Problem", "service.api.problems"),
    ("from ... import service", None),  # beyond the top package: refused loudly
    ("import service.main", "service.main"),
    ("import fastapi", "fastapi"),
    ("from fastapi.responses import JSONResponse", "fastapi.responses"),
    ("from pydantic import BaseModel", "pydantic"),
    ("import pydantic_settings", "pydantic_settings"),
    ("from starlette.requests import Request", "starlette.requests"),
    ("import importlib\nimportlib.import_module('service.api.deps')", "service.api.deps"),
    ("def f():\n    from ..config import Settings\n    return Settings", "service.config"),
]


@pytest.mark.parametrize(("source", "target"), PLANTED_IMPORTS, ids=[s for s, _ in PLANTED_IMPORTS])
def test_import_scanner_catches_planted_violation(source: str, target: str | None) -> None:
    if target is None:
        with pytest.raises(ValueError, match="beyond the top package"):
            import_violations(source, "service.engine.planted", ENGINE_FORBIDDEN)
        return
    found = import_violations(source, "service.engine.planted", ENGINE_FORBIDDEN)
    assert any(f"imports {target}" in hit for hit in found), found


def test_import_scanner_resolves_relative_imports_from_a_package_init() -> None:
    # In service/engine/__init__.py, "from ..api" is service.api; "from .layout" stays inside.
    assert import_violations("from ..api import x", "service.engine", ENGINE_FORBIDDEN, True)
    assert not import_violations(
        "from .layout import vec", "service.engine", ENGINE_FORBIDDEN, True
    )


@pytest.mark.parametrize(
    "source",
    [
        "from .errors import ShapeError",
        "from . import layout",
        "import numpy as np\nimport scipy.sparse as sp",
        "from .types import FloatArray",
        "import pydantic_core_lookalike",  # not pydantic: prefix match is per dotted segment
    ],
)
def test_import_scanner_accepts_allowed_imports(source: str) -> None:
    assert import_violations(source, "service.engine.planted", ENGINE_FORBIDDEN) == []


def test_codec_rules_catch_http_imports() -> None:
    assert import_violations("from fastapi import Request", "service.codec.x", CODEC_FORBIDDEN)
    assert import_violations("from ..api import deps", "service.codec.x", CODEC_FORBIDDEN)
    assert not import_violations(
        "from ..engine.errors import E", "service.codec.x", CODEC_FORBIDDEN
    )
    assert not import_violations(
        "from pydantic import BaseModel", "service.codec.x", CODEC_FORBIDDEN
    )


PLANTED_FLATTENS = [
    "v = x.ravel()",
    "v = x.ravel(order='F')",
    "v = np.ravel(x)",
    "v = x.flatten()",
    "v = x.reshape(-1)",
    "v = x.reshape(-1, order='F')",
    "v = x.reshape((-1,))",
    "v = x.reshape([-1])",
    "v = x.reshape(-1, 3)",
    "v = np.reshape(x, -1)",
    "v = np.reshape(x, (-1,))",
    "v = np.reshape(x, -1, order='F')",
    "v = numpy.reshape(x, [-1])",
    "v = np.reshape(x, shape=-1)",
    "v = np.reshape(x, newshape=(-1,))",
    "v = f(g(x).T.ravel())",
]


@pytest.mark.parametrize("source", PLANTED_FLATTENS)
def test_flatten_scanner_catches_planted_violation(source: str) -> None:
    assert flatten_violations(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "v = x.reshape(2, 3)",
        "v = x.reshape((2, 3))",
        "v = np.reshape(x, (-1, 3))",
        "v = np.reshape(x, (n, -1))",
        "v = layout.vec(x, order)",
        "v = x.reshape(n, -1)",
        "s = 'x.ravel()'  # only text",
    ],
)
def test_flatten_scanner_accepts_other_reshapes(source: str) -> None:
    assert flatten_violations(source) == []


def test_layout_itself_is_where_vectors_are_made() -> None:
    # The exemption is real: layout.py does flatten, so the scanner has something to exempt.
    assert flatten_violations((SERVICE / "engine" / "layout.py").read_text()) != []
