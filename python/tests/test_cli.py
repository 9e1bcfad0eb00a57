"""The Python package against the command-line binary on the same files:
the same numbers, bit for bit. `.ci/run` sets TENSOR_SIMILARITY_CLI to the
binary its Rust tests built; without it these tests are skipped."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess

import numpy as np
import pytest

import tensor_similarity as ts
from conftest import attention_model, embed_body_head, perturbed

CLI = os.environ.get("TENSOR_SIMILARITY_CLI")
pytestmark = pytest.mark.skipif(
    not CLI or not os.path.exists(CLI), reason="TENSOR_SIMILARITY_CLI names no binary"
)


def run(*args: str) -> str:
    out = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def files(tmp_path):
    base = embed_body_head(100, blocks=2, h=6)
    paths = []
    for i in range(4):
        model = ts.Model.from_state_dict(perturbed(base, 101 + i, 0.2 * i), residual_scale=0.5)
        paths.append(tmp_path / f"m{i}.safetensors")
        model.save(paths[-1], layout=["described", "embed_body_head"][i % 2], dtype=["F64", "F32"][i % 2])
    return paths


@pytest.mark.parametrize("metric", ["tensor", "gaussian", "weight"])
def test_compare_prints_what_similarity_returns(files, metric):
    a, b = files[0], files[3]
    # The CLI prints the shortest string that parses back to the same f64.
    assert float(run("compare", a, b, "--metric", metric)) == ts.similarity(a, b, metric)


def test_gaussian_exactness_agrees(files):
    v = json.loads(run("compare", files[0], files[1], "--metric", "gaussian", "--json"))
    assert v["exact"] == ts.is_gaussian_exact(files[0], files[1])


@pytest.mark.parametrize("metric", ["tensor", "weight"])
def test_the_matrix_is_the_cli_matrix(files, metric):
    rows = list(csv.reader(io.StringIO(run("matrix", *files, "--metric", metric))))
    cli = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    np.testing.assert_array_equal(cli, ts.matrix(files, metric, progress=False))


def test_output_slices_and_differences_are_the_cli_s(files, tmp_path):
    # Issue 24: --outputs and difference against outputs= and
    # difference_similarity (whose order is a0, a1, b0, b1), bit for bit.
    a, b, c, d = files
    assert float(run("compare", a, b, "--outputs", "1")) == ts.similarity(a, b, outputs=[1])
    v = json.loads(run("compare", a, c, "--outputs", "0,1", "--json"))
    assert v["outputs"] == [0, 1] and v["similarity"] == ts.similarity(a, c, outputs=[0, 1])
    assert float(run("difference", b, a, d, c)) == ts.difference_similarity(a, b, c, d)
    assert float(run("difference", b, a, d, c, "--outputs", "1")) == ts.difference_similarity(
        a, b, c, d, outputs=[1])
    assert float(run("difference", b, a, d, c, "--metric", "gaussian")) == ts.difference_similarity(
        a, b, c, d, "gaussian")
    rows = list(csv.reader(io.StringIO(run("matrix", *files, "--outputs", "1"))))
    assert rows[0][0] == "model (outputs 1)"
    cli = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    np.testing.assert_array_equal(cli, ts.matrix(files, outputs=[1], progress=False))
    run("matrix", *files, "--outputs-each", "-o", tmp_path / "sims.csv")
    for i in range(2):
        with open(tmp_path / f"sims_{i}.csv", newline="") as f:
            rows = list(csv.reader(f))
        cli = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
        np.testing.assert_array_equal(cli, ts.matrix(files, outputs=[i], progress=False))


def test_sequence_models_at_a_context_length(tmp_path):
    _, blocks = attention_model(110)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"lm{i}.safetensors")
        ts.Model.from_state_dict(attention_model(110 + i)[0], layout=blocks).save(paths[-1])
    assert float(run("compare", *paths, "--context", "3")) == ts.similarity(*paths, context=3)


def test_a_file_without_metadata_with_a_residual_scale(tmp_path):
    path = tmp_path / "research.safetensors"
    other = tmp_path / "other.safetensors"
    ts.Model.from_state_dict(embed_body_head(120)).save(path, layout="embed_body_head")
    ts.Model.from_state_dict(embed_body_head(121)).save(other, layout="embed_body_head")
    assert float(run("compare", path, other)) == ts.similarity(path, other)


def test_pytorch_checkpoints_of_a_run():
    from pathlib import Path

    lm = Path(__file__).resolve().parents[2] / "tests" / "files" / "torch" / "runs" / "tiny_lm"
    if not lm.is_dir():
        pytest.skip("not in a checkout of the repository")
    a, b = lm / "checkpoints" / "step_20.pt", lm / "checkpoints" / "step_100.pt"
    assert float(run("compare", a, b, "--context", "3")) == ts.similarity(a, b, context=3)


def test_parameter_count_is_inspects_count(tmp_path):
    # Issue 27: parameter_count counted the absent biases (13 482 against
    # inspect's 13 162). A model without biases: Python, inspect and a
    # count by hand agree.
    sd = embed_body_head(130, d=3, m=4, h=5, out=2, blocks=2, bias=False)
    by_hand = 4 * 3 + 2 * (5 * 4 + 5 * 4 + 4 * 5) + 2 * 4
    assert by_hand == sum(v.size for v in sd.values())
    model = ts.Model.from_state_dict(sd, skip=1)
    path = tmp_path / "no_bias.safetensors"
    model.save(path, layout="embed_body_head", dtype="F32")
    v = json.loads(run("inspect", path, "--json"))
    assert v["parameters"] == by_hand
    assert [b["parameters"] for b in v["blocks"]] == [12, 60, 60, 8]
    assert model.parameter_count == by_hand
    assert ts.load(path).parameter_count == by_hand
    assert [b["parameters"] for b in model.blocks] == [12, 60, 60, 8]
    assert f"{by_hand} parameters" in run("inspect", path)


def test_parameter_count_of_a_pytorch_run_is_inspects():
    # A run PyTorch wrote: its final norm's energy is a stored value too.
    from pathlib import Path

    lm = Path(__file__).resolve().parents[2] / "tests" / "files" / "torch" / "runs" / "tiny_lm"
    if not lm.is_dir():
        pytest.skip("not in a checkout of the repository")
    path = lm / "checkpoints" / "step_100.pt"
    v = json.loads(run("inspect", path, "--json"))
    model = ts.load(path)
    assert model.parameter_count == v["parameters"] == sum(b["parameters"] for b in v["blocks"])
    assert [b["parameters"] for b in model.blocks] == [b["parameters"] for b in v["blocks"]]


def refused(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True)
    assert out.returncode != 0 and out.stdout == ""
    return out


def test_context_on_vector_models_is_refused_in_both(files):
    # Issue 27: the command line refused --context on vector models; Python
    # now refuses context= too, in the same words.
    out = refused("compare", files[0], files[1], "--context", "3")
    assert "--context 3: none of the models is a sequence model" in out.stderr
    with pytest.raises(ts.OptionError, match="context=3: none of the models is a sequence model"):
        ts.similarity(files[0], files[1], context=3)
    out = refused("matrix", *files, "--context", "3")
    assert "none of the models is a sequence model" in out.stderr
    with pytest.raises(ts.OptionError, match="none of the models is a sequence model"):
        ts.matrix(files, context=3, progress=False)


def test_no_models_and_unmatched_patterns_are_refused_in_both(files, tmp_path):
    # Issue 27: an empty list and a glob that matched no file. The shell
    # passes an unmatched pattern on as it is (or nothing, under nullglob).
    pattern = tmp_path / "step_*.pt"
    out = refused("matrix", pattern)
    assert out.returncode == 1
    assert f"{pattern}: the pattern matched no file" in out.stderr
    out = refused("matrix")
    assert out.returncode == 2 and "no models given" in out.stderr
    with pytest.raises(ts.OptionError, match="no models given"):
        ts.matrix(sorted(tmp_path.glob("step_*.pt")), progress=False)
    with pytest.raises(TypeError, match="pass a list of paths.*matched no file"):
        ts.matrix(str(pattern), progress=False)


def test_heads_and_paths_are_the_command_lines():
    from pathlib import Path

    lm = Path(__file__).resolve().parents[2] / "tests" / "files" / "torch" / "runs" / "tiny_lm"
    if not lm.is_dir():
        pytest.skip("not in a checkout of the repository")
    a, b = lm / "checkpoints" / "step_20.pt", lm / "checkpoints" / "step_100.pt"
    layers = json.loads(run("heads", a, b, "--context", "4", "--json"))["layers"]
    found = ts.head_paths(a, b, context=4)
    assert [layer["block"] for layer in layers] == [p.block for p in found]
    for layer, p in zip(layers, found):
        assert np.array(layer["cosine"]).tolist() == p.cosine.tolist()
        assert np.array(layer["inner"]).tolist() == p.inner.tolist()
    v = json.loads(run("paths", a, b, "--context", "4", "--json"))
    found = ts.paths(a, b, context=4)
    assert [tuple(f) for f in v["families"]] == found.families
    assert np.array(v["cosine"]).tolist() == found.cosine.tolist()
    assert v["total"] == found.total and v["similarity"] == found.similarity
