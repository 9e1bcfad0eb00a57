"""similarity, inner_product, difference_similarity: values against NumPy
references (the dense end-to-end tensor, closed forms for affine models),
invariances, options and their errors, sequence models."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import tensor_similarity as ts
from conftest import (affine, attention_model, embed_body_head, end_to_end, linear_chain,
                      perturbed, tensor_cosine)


def test_a_model_is_itself_and_similarity_is_symmetric(ebh_models):
    a, b, c, d = ebh_models
    assert ts.similarity(a, a) == pytest.approx(1.0, abs=1e-12)
    for x, y in [(a, b), (a, c), (b, d)]:
        s = ts.similarity(x, y)
        assert -1.0 <= s <= 1.0
        assert ts.similarity(y, x) == pytest.approx(s, abs=1e-13)
    assert ts.similarity(a, b) > 0.9  # 10 % noise


def test_the_tensor_similarity_is_the_cosine_of_the_dense_end_to_end_tensors():
    base = embed_body_head(30, d=2, m=3, h=4, out=2)
    for other in (perturbed(base, 31, 0.3), embed_body_head(32, d=2, m=3, h=4, out=2),
                  embed_body_head(33, d=2, m=3, h=6, out=2, bias=False)):
        got = ts.similarity(ts.Model.from_state_dict(base), ts.Model.from_state_dict(other))
        assert got == pytest.approx(tensor_cosine(base, other), abs=1e-12)


def test_hidden_permutations_and_rescalings_leave_it_at_one_but_not_the_weight_cosine():
    sd = embed_body_head(34, h=6)
    twin = dict(sd)
    perm = np.random.default_rng(0).permutation(6)
    alpha = np.linspace(0.5, 2.0, 6)
    twin["body.0.l.weight"] = sd["body.0.r.weight"][perm] * alpha[:, None]   # swap L and R too
    twin["body.0.l.bias"] = sd["body.0.r.bias"][perm] * alpha
    twin["body.0.r.weight"] = sd["body.0.l.weight"][perm]
    twin["body.0.r.bias"] = sd["body.0.l.bias"][perm]
    twin["body.0.d.weight"] = sd["body.0.d.weight"][:, perm] / alpha
    a, b = ts.Model.from_state_dict(sd), ts.Model.from_state_dict(twin)
    x = np.random.default_rng(1).normal(size=(5, 3))
    np.testing.assert_allclose(a.forward(x), b.forward(x), rtol=1e-10, atol=1e-10)
    assert ts.similarity(a, b) == pytest.approx(1.0, abs=1e-12)
    assert ts.similarity(a, b, metric="gaussian") == pytest.approx(1.0, abs=1e-12)
    assert ts.similarity(a, b, metric="weight") < 0.9


def test_the_weight_cosine_is_the_cosine_of_the_concatenated_parameters(ebh_models):
    sa, sb = embed_body_head(35), embed_body_head(36)
    va = np.concatenate([v.ravel() for v in sa.values()])
    vb = np.concatenate([sb[k].ravel() for k in sa])
    expected = va @ vb / np.sqrt((va @ va) * (vb @ vb))
    got = ts.similarity(ts.Model.from_state_dict(sa), ts.Model.from_state_dict(sb), metric="weight")
    assert got == pytest.approx(expected, abs=1e-13)


def test_affine_models_have_closed_form_inner_products():
    # For f(x) = Wx + b, g(x) = Vx + c under x ~ N(μ, Σ):
    # E[f·g] = tr(W Σ Vᵀ) + (Wμ + b)·(Vμ + c); both metrics compute exactly that.
    sa, blocks = linear_chain(37, widths=(3, 5, 2))
    sb, _ = linear_chain(38, widths=(3, 5, 2))
    a = ts.Model.from_state_dict(sa, layout=blocks)
    b = ts.Model.from_state_dict(sb, layout=blocks)
    (W, bw), (V, cv) = affine(sa, 2), affine(sb, 2)
    rng = np.random.default_rng(2)
    mu = rng.normal(size=3)
    F = rng.normal(size=(3, 3))
    sigma = F @ F.T + np.eye(3)

    def e(P, p, Q, q, mu, sigma):
        return np.trace(P @ sigma @ Q.T) + (P @ mu + p) @ (Q @ mu + q)

    zero, eye = np.zeros(3), np.eye(3)
    expected = e(W, bw, V, cv, zero, eye) / np.sqrt(e(W, bw, W, bw, zero, eye) * e(V, cv, V, cv, zero, eye))
    assert ts.similarity(a, b) == pytest.approx(expected, abs=1e-12)
    assert ts.similarity(a, b, "gaussian") == pytest.approx(expected, abs=1e-12)
    assert ts.inner_product(a, b) == pytest.approx(e(W, bw, V, cv, zero, eye), rel=1e-12)

    shifted = e(W, bw, V, cv, mu, sigma) / np.sqrt(e(W, bw, W, bw, mu, sigma) * e(V, cv, V, cv, mu, sigma))
    for metric in ("tensor", "gaussian"):
        got = ts.similarity(a, b, metric, input_mean=mu, input_covariance=sigma)
        assert got == pytest.approx(shifted, abs=1e-12)
    # The same Gaussian as an explicit input metric M = E[x̃x̃ᵀ].
    M = np.block([[np.ones((1, 1)), mu[None, :]], [mu[:, None], sigma + np.outer(mu, mu)]])
    assert ts.similarity(a, b, input_metric=M) == pytest.approx(shifted, abs=1e-12)
    sign, ln = ts.inner_product(a, b, "gaussian", log=True, input_mean=mu, input_covariance=sigma)
    assert sign * np.exp(ln) == pytest.approx(e(W, bw, V, cv, mu, sigma), rel=1e-12)

    # Output selection: one output is the cosine of one row's affine maps.
    for outputs in ([1], 1, -1, slice(1, 2), range(1, 2)):
        one = ts.similarity(a, b, outputs=outputs)
        r = lambda P, p: (P[1:2], p[1:2])  # noqa: E731
        want = e(*r(W, bw), *r(V, cv), zero, eye) / np.sqrt(
            e(*r(W, bw), *r(W, bw), zero, eye) * e(*r(V, cv), *r(V, cv), zero, eye))
        assert one == pytest.approx(want, abs=1e-12)
    # Output weights Q = diag(0, 1) select the same output.
    assert ts.similarity(a, b, output_weights=np.diag([0.0, 1.0])) == pytest.approx(want, abs=1e-12)


def test_difference_similarity_is_the_similarity_of_the_differences():
    # For affine models the difference of two is an affine model itself.
    s = [linear_chain(40 + i, widths=(3, 2))[0] for i in range(4)]
    _, blocks = linear_chain(40, widths=(3, 2))
    a0, a1, b0, b1 = (ts.Model.from_state_dict(x, layout=blocks) for x in s)
    da = ts.Model.from_state_dict({k: s[1][k] - s[0][k] for k in s[0]}, layout=blocks)
    db = ts.Model.from_state_dict({k: s[3][k] - s[2][k] for k in s[0]}, layout=blocks)
    want = ts.similarity(da, db)
    assert ts.difference_similarity(a0, a1, b0, b1) == pytest.approx(want, abs=1e-12)
    assert ts.difference_similarity(a0, a1, b0, b1, "gaussian") == pytest.approx(want, abs=1e-12)
    with pytest.raises(ts.TensorSimilarityError, match="weight"):
        ts.difference_similarity(a0, a1, b0, b1, metric="weight")


def test_one_class_of_ten_by_outputs():
    # Issue 24: similarity, matrix and difference_similarity with outputs=[9]
    # on a ten-class model, against the dense end-to-end tensor (NumPy): the
    # slice of output o is the padded tensor's row o + 1.
    sds = [embed_body_head(240 + i, out=10) for i in range(4)]
    models = [ts.Model.from_state_dict(sd) for sd in sds]
    t = [end_to_end(sd)[1:] for sd in sds]

    def cos(x, y):
        return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))

    for outputs in ([9], [3, 9]):
        sliced = [ti[outputs] for ti in t]
        assert ts.similarity(models[0], models[1], outputs=outputs) == pytest.approx(
            cos(sliced[0], sliced[1]), abs=1e-12)
        got = ts.matrix(models, outputs=outputs, progress=False)
        want = np.array([[cos(x, y) for y in sliced] for x in sliced])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert np.all(np.diag(got) == 1.0)
        # Python's order is a0, a1, b0, b1: the directions a1 − a0, b1 − b0.
        a0, a1, b0, b1 = models
        want = cos(sliced[1] - sliced[0], sliced[3] - sliced[2])
        assert ts.difference_similarity(a0, a1, b0, b1, outputs=outputs) == pytest.approx(want, abs=1e-12)
        assert ts.difference_similarity(a1, a0, b0, b1, outputs=outputs) == pytest.approx(-want, abs=1e-12)
    # Every output listed is every output; an output the models lack is an error.
    assert ts.similarity(models[0], models[1], outputs=range(10)) == pytest.approx(
        tensor_cosine(sds[0], sds[1]), abs=1e-12)
    with pytest.raises(ts.TensorSimilarityError, match="output 10"):
        ts.difference_similarity(*models, outputs=[10])


def test_the_gaussian_metric_says_when_it_is_exact(ebh_models):
    a, b = ebh_models[:2]
    assert ts.is_gaussian_exact(a, b)
    # Two bilinear blocks (degree 4): the exact sum over the trees' legs.
    two = ts.Model.from_state_dict(embed_body_head(41, blocks=2))
    assert ts.is_gaussian_exact(two, two)
    assert not ts.GaussianClosureMetric().is_exact(two, two)
    # Four (degree 16): beyond it, the closure.
    deep = ts.Model.from_state_dict(embed_body_head(41, blocks=4))
    assert not ts.is_gaussian_exact(deep, deep)


def test_sequence_models_need_a_context_length():
    sd, blocks = attention_model(50)
    a = ts.Model.from_state_dict(sd, layout=blocks)
    b = ts.Model.from_state_dict(attention_model(51)[0], layout=blocks)
    with pytest.raises(ts.TensorSimilarityError, match="context"):
        ts.similarity(a, b)
    with pytest.raises(ts.TensorSimilarityError, match="context"):
        ts.similarity(a, b, context=0)
    assert ts.similarity(a, a, context=3) == pytest.approx(1.0, abs=1e-12)
    s3 = ts.similarity(a, b, context=3)
    assert ts.similarity(b, a, context=3) == pytest.approx(s3, abs=1e-13)
    assert s3 != pytest.approx(ts.similarity(a, b, context=2), abs=1e-6)
    # Heads permuted: the same function, similarity 1.
    twin = ts.Model.from_state_dict(attention_model(50, permute_heads=True)[0], layout=blocks)
    seq = np.eye(5)[[2, 0, 4]]
    np.testing.assert_allclose(twin.forward(seq), a.forward(seq), rtol=1e-12, atol=1e-12)
    assert ts.similarity(a, twin, context=3) == pytest.approx(1.0, abs=1e-12)
    # The last position's logits only; a slice of positions needs the context.
    last = ts.similarity(a, b, context=3, positions=[2])
    assert ts.similarity(a, b, context=3, positions=-1) == last
    assert ts.similarity(a, b, context=3, positions=slice(2, None)) == last
    assert ts.similarity(a, twin, context=3, positions=[2], outputs=[0, 1]) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ts.TensorSimilarityError, match="context"):
        ts.similarity(a, b, positions=slice(0, 1))
    # The Gaussian metric on sequences: i.i.d. N(0, I) rows, exact for one
    # attention block, invariant under the head permutation.
    with pytest.raises(ts.TensorSimilarityError, match="context"):
        ts.similarity(a, b, metric="gaussian")
    g = ts.similarity(a, b, metric="gaussian", context=3)
    assert -1.0 <= g <= 1.0 and g != pytest.approx(s3, abs=1e-6)
    assert ts.similarity(b, a, metric="gaussian", context=3) == pytest.approx(g, abs=1e-12)
    assert ts.similarity(a, twin, metric="gaussian", context=3) == pytest.approx(1.0, abs=1e-12)
    assert ts.is_gaussian_exact(a, b, context=3)


def test_options_a_metric_does_not_take_are_errors(ebh_models):
    a, b = ebh_models[:2]
    with pytest.raises(ts.TensorSimilarityError, match="positions"):
        ts.similarity(a, b, metric="gaussian", positions=[0])
    with pytest.raises(ts.TensorSimilarityError, match="outputs"):
        ts.similarity(a, b, metric="weight", outputs=[0])
    with pytest.raises(ts.TensorSimilarityError, match="cosine"):
        ts.similarity(a, b, metric="cosine")
    with pytest.raises(TypeError):
        ts.similarity(a, b, metric=None)
    with pytest.raises(TypeError):
        ts.similarity(a, b, contxt=3)
    with pytest.raises(TypeError):
        ts.similarity(a, b, context="3")
    with pytest.raises(ts.TensorSimilarityError, match="input_metric"):
        ts.similarity(a, b, input_metric=np.eye(4), input_mean=np.zeros(3))
    with pytest.raises(ts.TensorSimilarityError, match="input metric"):
        ts.similarity(a, b, input_metric=np.eye(7))
    with pytest.raises(ts.TensorSimilarityError, match="symmetric"):
        ts.similarity(a, b, input_metric=np.triu(np.ones((4, 4))))
    with pytest.raises(ts.TensorSimilarityError):
        ts.similarity(a, b, outputs=[5])


def test_incomparable_models_say_why():
    a = ts.Model.from_state_dict(embed_body_head(60, out=2))
    b = ts.Model.from_state_dict(embed_body_head(61, out=3))
    with pytest.raises(ts.TensorSimilarityError, match="output"):
        ts.similarity(a, b)
    c = ts.Model.from_state_dict(embed_body_head(62, h=7))
    with pytest.raises(ts.TensorSimilarityError, match="shape"):
        ts.similarity(a, c, metric="weight")
    assert -1 <= ts.similarity(a, c) <= 1  # hidden widths may differ for the tensor metric


def test_paths_work_where_models_do(tmp_path, ebh_models):
    a, b = ebh_models[:2]
    a.save(tmp_path / "a.safetensors")
    b.save(tmp_path / "b.safetensors")
    assert ts.similarity(tmp_path / "a.safetensors", str(tmp_path / "b.safetensors")) == ts.similarity(a, b)


def test_the_gil_is_released_while_it_computes():
    # Another Python thread keeps running during one long native call. With
    # the GIL held it could not run at all inside the call (a tick or two at
    # its edges at most); released, it ticks every ~5 ms.
    big = [ts.Model.from_state_dict(embed_body_head(70 + i, d=16, m=128, h=512, blocks=4, scale=0.3))
           for i in range(3)]
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.005)

    t = threading.Thread(target=tick)
    t.start()
    try:
        spans = []
        for call in (lambda: ts.similarity(big[0], big[1]),
                     lambda: ts.matrix(big, progress=False)):
            time.sleep(0.02)
            begin = time.perf_counter()
            call()
            spans.append((begin, time.perf_counter()))
    finally:
        stop.set()
        t.join()
    for begin, end in spans:
        inside = sum(begin < x < end for x in ticks)
        assert inside >= max(4, 0.2 * (end - begin) / 0.005), (inside, end - begin)
