"""Every ABI constant is defined once (hvfs/_sys/abi.py), and the decoders spell no flag,
size or limit as a bare number: checked on the source."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "hvfs"
ABI = PACKAGE / "_sys" / "abi.py"
DECODERS = PACKAGE / "intercept" / "decoders"
# Families of kernel constants: a literal value under one of these names belongs in abi.py.
ABI_PREFIXES = (
    "AT_",
    "O_",
    "RESOLVE_",
    "STATX_",
    "STX_",
    "XATTR_",
    "CLONE_",
    "CAP_",
    "AF_",
    "SOCK_",
    "SOL_",
    "SO_",
    "SCM_",
    "MSG_",
    "SOCKADDR_",
    "UIO_",
    "S_I",
    "PATH_MAX",
    "R_OK",
    "W_OK",
    "X_OK",
)


def _assigned(tree: ast.AST) -> Iterator[tuple[str, ast.expr, int]]:
    """(name, value, line) of every assignment to a plain name, at any depth; a tuple
    assignment ``A, B = 1, 2`` gives each name its own value."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                yield target.id, value, node.lineno
            elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                for name, item in zip(target.elts, value.elts, strict=False):
                    if isinstance(name, ast.Name):
                        yield name.id, item, node.lineno


def _is_literal_int(value: ast.expr) -> bool:
    """A number written out: 0x200, -100, 1 << 18, 0o20000000 | 0o200000."""
    if isinstance(value, ast.Constant):
        return isinstance(value.value, int) and not isinstance(value.value, bool)
    if isinstance(value, ast.UnaryOp):
        return _is_literal_int(value.operand)
    if isinstance(value, ast.BinOp):
        return _is_literal_int(value.left) and _is_literal_int(value.right)
    return False


def _abi_names() -> set[str]:
    return {name for name, _, _ in _assigned(ast.parse(ABI.read_text())) if name.isupper()}


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path != ABI)


def test_the_abi_module_is_a_leaf() -> None:
    """Importable from every layer (the manager, the driver, _sys) because it imports
    nothing of HVFS."""
    for node in ast.walk(ast.parse(ABI.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("hvfs"), node.module
        elif isinstance(node, ast.Import):
            assert not any(alias.name.startswith("hvfs") for alias in node.names)


def test_abi_constants_are_defined_once() -> None:
    names = _abi_names()
    assert {"AT_EMPTY_PATH", "AT_FDCWD", "O_PATH", "RESOLVE_IN_ROOT", "XATTR_SIZE_MAX", "SCM_RIGHTS"} <= names
    again = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in _modules()
        for name, _, line in _assigned(ast.parse(path.read_text()))
        if name in names
    ]
    assert not again, "defined in hvfs/_sys/abi.py; import it from there:\n" + "\n".join(again)


def test_kernel_constants_live_in_the_abi_module() -> None:
    """A new AT_*, O_*, RESOLVE_*, socket... constant given a value outside abi.py."""
    stray = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in _modules()
        for name, value, line in _assigned(ast.parse(path.read_text()))
        if name.lstrip("_").startswith(ABI_PREFIXES) and _is_literal_int(value)
    ]
    assert not stray, "define kernel constants in hvfs/_sys/abi.py:\n" + "\n".join(stray)


def _bare_numbers(tree: ast.Module) -> Iterator[tuple[int, int]]:
    """(line, value) of every integer literal other than 0 and 1 outside a subscript
    (``a[3]``: an argument's index) and outside a named module-level constant."""
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            allowed.update(id(inner) for inner in ast.walk(node.slice))
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and all(
            isinstance(t, ast.Name) and t.id.isupper()
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        ):
            allowed.update(id(inner) for inner in ast.walk(node))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int)
            and not isinstance(node.value, bool)
            and node.value not in (0, 1)
            and id(node) not in allowed
        ):
            yield node.lineno, node.value


def test_decoders_spell_no_flag_as_a_number() -> None:
    modules = sorted(DECODERS.glob("*.py"))
    assert len(modules) >= 7
    bare = [
        f"{path.relative_to(REPO)}:{line}: {value}"
        for path in modules
        for line, value in _bare_numbers(ast.parse(path.read_text()))
    ]
    assert not bare, "name these in hvfs/_sys/abi.py (or as a named limit):\n" + "\n".join(bare)


def test_the_number_check_sees_a_bare_flag() -> None:
    """The check above is no vacuous pass: the old decoder's spellings are caught."""
    old = ast.parse("def f(c, a):\n    flags = check(a[3], NOFOLLOW | 0x800)\n    return a[1] & 0o7777, -100\n")
    assert sorted(value for _, value in _bare_numbers(old)) == [100, 0x800, 0o7777]
    assert _is_literal_int(ast.parse("X = 0o20000000 | 0o200000").body[0].value)  # type: ignore[attr-defined]
