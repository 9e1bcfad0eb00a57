"""The similarity matrix on a Dask cluster: two worker processes read the
checkpoints from (here: local, in production: shared) storage, tiles are
assembled into the full matrix, equal to the local one."""

from __future__ import annotations

import numpy as np
import pytest

import tensor_similarity as ts
from conftest import attention_model, embed_body_head, perturbed

distributed = pytest.importorskip("dask.distributed")
tsd = pytest.importorskip("tensor_similarity.dask")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    base = embed_body_head(200, h=6, blocks=2)
    out = []
    for i in range(7):
        p = d / f"step_{i}.safetensors"
        ts.Model.from_state_dict(perturbed(base, 201 + i, 0.05 * i), residual_scale=0.5).save(p)
        out.append(p)
    return out


def test_tiles_cover_the_upper_triangle():
    t = tsd.tiles(7, 3)
    assert [(r.start, r.stop, c.start, c.stop) for r, c in t] == [
        (0, 3, 0, 3), (0, 3, 3, 6), (0, 3, 6, 7), (3, 6, 3, 6), (3, 6, 6, 7), (6, 7, 6, 7)]
    with pytest.raises(ValueError):
        tsd.tiles(3, 0)


@pytest.mark.parametrize("metric,tile", [("tensor", 3), ("gaussian", 2), ("weight", 4)])
def test_the_dask_matrix_is_the_local_matrix(client, paths, metric, tile):
    local = ts.matrix(paths, metric, progress=False)
    remote = tsd.matrix(paths, client=client, tile=tile, metric=metric)
    assert remote.shape == (7, 7)
    np.testing.assert_allclose(remote, local, rtol=0, atol=1e-12)
    # In fact bit for bit: the same pairs in the same order, norms once.
    np.testing.assert_array_equal(remote, local)


def test_a_metric_object_goes_to_the_workers(client, paths):
    metric = ts.TensorMetric(outputs=-1, input_mean=np.full(3, 0.1))
    remote = tsd.matrix(paths, client=client, tile=3, metric=metric)
    np.testing.assert_array_equal(remote, metric.matrix(paths, progress=False))
    with pytest.raises(TypeError, match="context"):
        tsd.matrix(paths, client=client, metric=metric, context=2)


def test_the_default_client_and_options(client, tmp_path):
    _, blocks = attention_model(210)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"lm_{i}.safetensors")
        ts.Model.from_state_dict(attention_model(210 + i)[0], layout=blocks).save(paths[-1])
    remote = tsd.matrix(paths, tile=2, context=2, positions=[-1])  # the current client
    np.testing.assert_allclose(remote, ts.matrix(paths, context=2, positions=[-1], progress=False),
                               rtol=0, atol=1e-12)


def test_errors_come_back_from_the_workers(client, paths, tmp_path):
    with pytest.raises(ts.TensorSimilarityError, match="context"):
        tsd.matrix(paths[:2], client=client, metric="weight", context=2)
    with pytest.raises(TypeError):
        tsd.matrix(paths[:2], client=client, contxt=2)
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ts.TensorSimilarityError, match="missing.safetensors"):
        tsd.matrix([paths[0], missing], client=client)


def test_the_dask_path_refuses_what_ts_matrix_refuses(client, paths):
    # Issue 27, Python and the command line: an empty list (a glob that
    # matched no file), a single path and context= on vector models are
    # errors here too, as in ts.matrix and on the command line.
    with pytest.raises(ts.OptionError, match="no models given"):
        tsd.matrix([], client=client)
    with pytest.raises(TypeError, match="pass a list of paths"):
        tsd.matrix(str(paths[0]), client=client)
    with pytest.raises(TypeError, match="pass a list of paths"):
        tsd.matrix(paths[0], client=client)
    with pytest.raises(ts.OptionError, match="context=2: none of the models is a sequence model"):
        tsd.matrix(paths[:3], client=client, tile=2, context=2)
    with pytest.raises(ts.OptionError, match="context=2: none of the models is a sequence model"):
        tsd.matrix(paths[:3], client=client, tile=2, metric=ts.GaussianMetric(context=2))
