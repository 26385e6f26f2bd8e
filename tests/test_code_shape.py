"""The shape of the code a newcomer reads (issue 12's bar, kept).

- No function in `keras_gated/` is longer than 60 lines of code (blank
  lines, comments and docstrings not counted; nested functions count with
  the function around them), except the public layers' constructors,
  whose argument lists mirror Keras'.
- The gate order is spelled out in `keras_gated/gates.py` only: no other
  module lists all of a cell's gates in a literal, nor slices weights by
  `k * units` arithmetic.
"""

import ast
import pathlib

import pytest

from keras_gated import gates

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_gated"
MODULES = sorted(PACKAGE.rglob("*.py"))
LIMIT = 60
# Constructors whose argument lists mirror Keras' layers (exempt).
MIRRORS = {
    ("layers.py", "LSTM.__init__"),
    ("layers.py", "GRU.__init__"),
    ("layers.py", "SimpleRNN.__init__"),
}
ORDERS = {gates.LSTM_GATES, gates.GRU_GATES}


def _docstring_lines(tree):
    lines = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def _functions(tree, prefix=""):
    """(qualified name, node) of the outermost functions, in classes too."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def _code_lines(source_lines, node, docstrings):
    return sum(
        1
        for number in range(node.lineno, node.end_lineno + 1)
        if number not in docstrings
        and source_lines[number - 1].strip()
        and not source_lines[number - 1].strip().startswith("#")
    )


def _long_functions(path):
    source = path.read_text()
    tree = ast.parse(source)
    docstrings = _docstring_lines(tree)
    lines = source.splitlines()
    for name, node in _functions(tree):
        count = _code_lines(lines, node, docstrings)
        if count > LIMIT and (path.name, name) not in MIRRORS:
            yield f"{path.parent.name}/{path.name}: {name} ({count})"


def _gate_order_spelled(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List)) and all(
            isinstance(e, ast.Constant) for e in node.elts
        ):
            if tuple(e.value for e in node.elts) in ORDERS:
                yield f"{path.name}:{node.lineno} lists a gate order"
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Mult)
            and {type(node.left), type(node.right)} == {ast.Constant, ast.Name}
        ):
            names = [n.id for n in (node.left, node.right) if hasattr(n, "id")]
            if names == ["units"]:
                yield f"{path.name}:{node.lineno} slices by k * units"


@pytest.mark.parametrize(
    "path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES]
)
def test_functions_are_at_most_60_lines(path):
    assert list(_long_functions(path)) == []


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if p.name != "gates.py"],
    ids=[str(p.relative_to(PACKAGE)) for p in MODULES if p.name != "gates.py"],
)
def test_gate_order_is_spelled_out_in_gates_py_only(path):
    assert list(_gate_order_spelled(path)) == []


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The checks are not vacuous: a long function and a gate order
    written out are found."""
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT + 1))
    long = tmp_path / "long.py"
    long.write_text(f"def f():\n{body}\n")
    spelled = tmp_path / "spelled.py"
    spelled.write_text(
        'ORDER = ("update", "reset", "candidate")\n'
        "def f(k, units):\n    return k[:, : 2 * units]\n"
    )
    found = list(_long_functions(long))
    # The def line and the 61 of the body.
    assert found == [f"{tmp_path.name}/long.py: f ({LIMIT + 2})"]
    assert len(list(_gate_order_spelled(spelled))) == 2
