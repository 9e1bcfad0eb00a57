"""Real torch tensors (skipped where PyTorch is not installed; the package
never imports torch)."""

from __future__ import annotations

import numpy as np
import pytest

import tensor_similarity as ts

torch = pytest.importorskip("torch")


class Bilinear(torch.nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.l = torch.nn.Linear(d, h)
        self.r = torch.nn.Linear(d, h)
        self.d = torch.nn.Linear(h, d)

    def forward(self, x):
        return self.d(self.l(x) * self.r(x))


class Net(torch.nn.Module):
    """The research embed/body/head layout."""

    def __init__(self, d_in=3, d=4, h=6, out=2):
        super().__init__()
        self.embed = torch.nn.Linear(d_in, d)
        self.body = torch.nn.ModuleList([Bilinear(d, h)])
        self.head = torch.nn.Linear(d, out)

    def forward(self, x):
        x = self.embed(x)
        for b in self.body:
            x = b(x)
        return self.head(x)


def test_a_torch_state_dict_is_the_same_model():
    torch.manual_seed(0)
    net = Net().double()
    model = ts.Model.from_state_dict(net.state_dict())
    assert model.layout == "embed_body_head"
    x = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(model.forward(x.numpy()), expected, rtol=1e-12, atol=1e-12)
    numpy_sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    assert ts.similarity(model, ts.Model.from_state_dict(numpy_sd)) == pytest.approx(1.0, abs=1e-12)


def test_parameters_that_require_grad_and_bfloat16():
    torch.manual_seed(1)
    net = Net()
    params = dict(net.named_parameters())  # requires_grad: np.asarray refuses them
    assert all(p.requires_grad for p in params.values())
    f32 = ts.Model.from_state_dict(params)
    assert {t["dtype"] for t in f32.tensors} == {"F32"}
    bf16 = ts.Model.from_state_dict({k: v.to(torch.bfloat16) for k, v in params.items()})
    assert {t["dtype"] for t in bf16.tensors} == {"BF16"}
    assert ts.similarity(f32, bf16) == pytest.approx(1.0, abs=1e-3)
    half = ts.Model.from_state_dict({k: v.half() for k, v in net.state_dict().items()})
    assert {t["dtype"] for t in half.tensors} == {"F16"}


def test_integer_torch_tensors_are_refused():
    sd = Net().state_dict()
    sd["head.bias"] = torch.tensor([1, 2])
    with pytest.raises(ts.TensorSimilarityError, match="head.bias"):
        ts.Model.from_state_dict(sd)


def test_torch_integer_counters_are_i64():
    # A norm's num_batches_tracked, as a BatchNorm1d's state_dict holds it
    # (a 0-dim int64 tensor): passed as I64, its value as float64.
    bn = torch.nn.BatchNorm1d(4)
    counter = bn.state_dict()["num_batches_tracked"]
    assert counter.dtype == torch.int64 and counter.dim() == 0
    stored, array = ts._tensor("embed_norm.bn.num_batches_tracked", counter + 12)
    assert stored == "I64" and array.dtype == np.float64 and array.shape == () and array == 12.0
    from test_norms import config, tok0_batch

    sd = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in tok0_batch(1).items()}
    sd["final_norm.num_batches_tracked"] = torch.tensor(100)
    m = ts.Model.from_state_dict(sd, config=config())
    assert {t["name"]: t["dtype"] for t in m.tensors}["final_norm.num_batches_tracked"] == "I64"
    # A bool tensor is still refused, naming it.
    sd["final_norm.num_batches_tracked"] = torch.tensor(True)
    with pytest.raises(ts.FileError, match="final_norm.num_batches_tracked"):
        ts.Model.from_state_dict(sd, config=config())


def test_float32_and_float64_tensors_are_read_in_place():
    for dtype in (torch.float32, torch.float64):
        t = torch.randn(6, 4, dtype=dtype)
        stored, array = ts._tensor("w", t)
        assert stored == {torch.float32: "F32", torch.float64: "F64"}[dtype]
        assert np.shares_memory(array, t.numpy())  # no copy before the core's one
    grad = torch.randn(6, 4, requires_grad=True)
    assert np.shares_memory(ts._tensor("w", grad)[1], grad.detach().numpy())
