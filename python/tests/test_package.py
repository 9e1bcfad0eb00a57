"""The package as installed: its public names are documented, the stubs
of the compiled core name what it exports, the docstring example runs."""

from __future__ import annotations

import ast
import doctest
import inspect
import os

import tensor_similarity as ts
from tensor_similarity import _native


def test_every_public_name_is_documented():
    for name in ts.__all__:
        obj = getattr(ts, name)
        if name != "__version__":
            assert inspect.getdoc(obj), name
    for name in dir(ts.Model):
        if not name.startswith("_"):
            assert inspect.getdoc(getattr(ts.Model, name)), name


def test_the_stubs_name_every_export_of_the_core():
    path = os.path.join(os.path.dirname(ts.__file__), "_native.pyi")
    tree = ast.parse(open(path, encoding="utf-8").read())
    stubbed = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    exported = {n for n in dir(_native) if not n.startswith("_")}
    assert exported <= stubbed | {"TensorSimilarityError"}, exported - stubbed
    assert os.path.exists(os.path.join(os.path.dirname(ts.__file__), "py.typed"))


def test_the_module_docstring_example_runs():
    result = doctest.testmod(ts, verbose=False)
    assert result.attempted >= 3 and result.failed == 0
