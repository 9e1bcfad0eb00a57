"""matrix, squared_norms and tile: the matrix equals the pairwise
similarities, tiles assemble into it bit for bit, progress is shown."""

from __future__ import annotations

import builtins
import glob
import os
import sys

import numpy as np
import pytest

import tensor_similarity as ts
from conftest import attention_model, embed_body_head, perturbed


@pytest.fixture
def models():
    base = embed_body_head(80, h=6)
    out = [ts.Model.from_state_dict(perturbed(base, 81 + i, 0.1 * i)) for i in range(5)]
    return out + [ts.Model.from_state_dict(embed_body_head(90, h=6))]


@pytest.mark.parametrize("metric", ["tensor", "gaussian", "weight"])
def test_the_matrix_is_the_pairwise_similarities(models, metric):
    m = ts.matrix(models, metric, progress=False)
    assert m.shape == (6, 6) and m.dtype == np.float64
    np.testing.assert_array_equal(np.diag(m), 1.0)
    np.testing.assert_array_equal(m, m.T)
    for i in range(6):
        for j in range(i + 1, 6):
            assert m[i, j] == pytest.approx(ts.similarity(models[i], models[j], metric), abs=1e-12)


def test_options_reach_the_matrix(models):
    m = ts.matrix(models[:3], outputs=[1], progress=False)
    assert m[0, 2] == pytest.approx(ts.similarity(models[0], models[2], outputs=[1]), abs=1e-12)
    assert m[0, 2] != pytest.approx(ts.similarity(models[0], models[2]), abs=1e-6)


def test_paths_and_models_mix(tmp_path, models):
    paths = []
    for i, m in enumerate(models[:3]):
        paths.append(tmp_path / f"m{i}.safetensors")
        m.save(paths[-1])
    mixed = [paths[0], models[1], str(paths[2])]
    np.testing.assert_array_equal(ts.matrix(mixed, progress=False), ts.matrix(models[:3], progress=False))


@pytest.mark.parametrize("metric", ["tensor", "gaussian", "weight"])
def test_tiles_assemble_into_the_matrix_bit_for_bit(models, metric):
    full = ts.matrix(models, metric, progress=False)
    norms = None if metric == "weight" else ts.squared_norms(models, metric)
    groups = [range(0, 2), range(2, 5), range(5, 6)]
    out = np.full((6, 6), np.nan)
    for gi, rows in enumerate(groups):
        for cols in groups[gi:]:
            r = [models[i] for i in rows]
            c = None if cols == rows else [models[j] for j in cols]
            kw = {}
            if norms is not None:
                kw["row_norms"] = norms[rows.start:rows.stop]
                if c is not None:
                    kw["col_norms"] = norms[cols.start:cols.stop]
            block = ts.tile(r, c, metric=metric, **kw)
            assert block.shape == (len(rows), len(cols))
            out[rows.start:rows.stop, cols.start:cols.stop] = block
            out[cols.start:cols.stop, rows.start:rows.stop] = block.T
    np.testing.assert_array_equal(out, full)
    # Without norms, a tile computes them itself: the same values.
    np.testing.assert_array_equal(ts.tile(models[:2], models[3:], metric=metric), full[:2, 3:])
    np.testing.assert_array_equal(ts.tile(models[1:4], metric=metric), full[1:4, 1:4])


def test_squared_norms_are_log_scaled_inner_products(models):
    norms = ts.squared_norms(models)
    assert norms.shape == (6, 2)
    for (sign, ln), m in zip(norms, models):
        assert sign == 1.0
        assert np.exp(ln) == pytest.approx(ts.inner_product(m, m), rel=1e-12)
    with pytest.raises(ts.TensorSimilarityError, match="weight"):
        ts.squared_norms(models, "weight")


def test_tile_errors(models):
    norms = ts.squared_norms(models)
    with pytest.raises(ts.TensorSimilarityError, match="row_norms"):
        ts.tile(models[:2], models[2:], row_norms=norms[:3])
    with pytest.raises(ts.TensorSimilarityError, match="col_norms"):
        ts.tile(models[:2], col_norms=norms[:2])
    with pytest.raises(ts.TensorSimilarityError, match="norms"):
        ts.tile(models[:2], metric="weight", row_norms=norms[:2])
    zero = np.array([[0.0, -np.inf], [1.0, 0.0]])
    with pytest.raises(ts.TensorSimilarityError, match="zero norm"):
        ts.tile(models[:2], models[2:3], row_norms=zero)


def test_sequence_models_in_a_matrix():
    sd, blocks = attention_model(95)
    ms = [ts.Model.from_state_dict(attention_model(95 + i)[0], layout=blocks) for i in range(3)]
    with pytest.raises(ts.TensorSimilarityError, match="context"):
        ts.matrix(ms, progress=False)
    m = ts.matrix(ms, context=2, progress=False)
    assert m[0, 1] == pytest.approx(ts.similarity(ms[0], ms[1], context=2), abs=1e-12)


def test_empty_and_single():
    # Issue 27: an empty list (a glob that matched no file) is an error, as
    # on the command line, not a (0, 0) array.
    with pytest.raises(ts.OptionError, match="no models given"):
        ts.matrix([], progress=False)
    one = ts.matrix([ts.Model.from_state_dict(embed_body_head(96))])
    np.testing.assert_array_equal(one, [[1.0]])


def test_an_empty_glob_is_an_error_naming_it(tmp_path):
    # Issue 27, Python and the command line: the notebook's glob that
    # matches nothing, through every function that takes a list of models.
    paths = sorted(glob.glob(str(tmp_path / "step_*.safetensors")))
    assert paths == []
    for call in (
        lambda: ts.matrix(paths, progress=False),
        lambda: ts.TensorMetric().matrix(paths, progress=False),
        lambda: ts.WeightMetric().matrix(paths),
        lambda: ts.squared_norms(paths),
        lambda: ts.tile(paths),
    ):
        with pytest.raises(ts.OptionError, match="no models given") as e:
            call()
        assert isinstance(e.value, ValueError)


def test_a_single_path_where_a_list_is_expected_is_refused(tmp_path, models):
    # Issue 27: a path string was iterated character by character
    # ("/: not a regular file"); a single path or model is refused, saying
    # to pass a list.
    path = tmp_path / "m.safetensors"
    models[0].save(path)
    for single in (str(path), path, os.fsencode(path)):
        with pytest.raises(TypeError, match="pass a list of paths"):
            ts.matrix(single, progress=False)
        with pytest.raises(TypeError, match="pass a list of paths"):
            ts.squared_norms(single)
        with pytest.raises(TypeError, match="pass a list of paths"):
            ts.tile(single)
        with pytest.raises(TypeError, match="pass a list of paths"):
            ts.tile([path], single)
    with pytest.raises(TypeError, match=r"pass a list \(\[model\]\)"):
        ts.matrix(models[0], progress=False)
    with pytest.raises(TypeError, match="not int"):
        ts.matrix(3, progress=False)
    # A glob pattern is not expanded: the message says what it matches.
    with pytest.raises(TypeError, match="pass a list of paths.*matches 1 file"):
        ts.matrix(str(tmp_path / "*.safetensors"), progress=False)
    with pytest.raises(TypeError, match=r"pass a list of paths.*the pattern .*step_\*\.pt' matched no file"):
        ts.matrix(str(tmp_path / "step_*.pt"), progress=False)
    # The list itself works, as before.
    np.testing.assert_array_equal(ts.matrix([path, str(path)], progress=False), np.ones((2, 2)))


def test_progress_without_tqdm_is_a_counter_on_stderr(models, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    ts.matrix(models[:4])
    err = capsys.readouterr().err
    assert "6/6 pairs" in err
    ts.matrix(models[:4], progress=False)
    assert capsys.readouterr().err == ""


def test_progress_callbacks_that_fail_do_not_stop_the_matrix(models, monkeypatch):
    class Broken:
        def __init__(self, *a, **k):
            pass

        def update(self, n=1):
            raise RuntimeError("a broken progress bar")

        def close(self):
            pass

    monkeypatch.setattr(ts, "_progress", lambda enabled, *a, **k: Broken() if enabled else None)
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    m = ts.matrix(models[:3])
    assert len(seen) == 3 and all("broken progress bar" in str(e) for e in seen)
    np.testing.assert_array_equal(m, ts.matrix(models[:3], progress=False))
