"""MIPredictor inputs: x is checked like the pool, models returning tuples, dicts or Hugging Face style outputs
give their logits (or a clear error before any mixing), and float64/float16 x is cast to the model's dtype."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from varmixup_aug import MIPredictor, VarMixupError


def _linear(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(12, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, 12, generator=g))
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin).eval()


def _pool() -> tuple[Tensor, Tensor]:
    return torch.rand(9, 3, 2, 2, generator=torch.Generator().manual_seed(1)), torch.arange(9) % 3


def _x(dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(2)).to(dtype)


def _mi(model: nn.Module, **kwargs) -> MIPredictor:
    return MIPredictor(model, _pool(), num_classes=3, num_samples=4, seed=0, deterministic=True, **kwargs)


def test_x_in_0_255_is_refused_like_the_pool() -> None:
    with pytest.raises(VarMixupError, match=r"pool images must lie in pixel space \[0, 1\]"):
        MIPredictor(_linear(), (_pool()[0] * 255, _pool()[1]), num_classes=3)
    with pytest.raises(VarMixupError, match=r"x must lie in pixel space \[0, 1\] like the pool, got values in "
                                            r"\[.*\]; convert 0\.\.255 images with x / 255"):
        _mi(_linear())(_x() * 255)
    with pytest.raises(VarMixupError, match=r"x must lie in pixel space \[0, 1\]"):
        _mi(_linear())(_x() - 0.5)  # normalised input
    with pytest.raises(VarMixupError, match="x contains NaN or Inf"):
        _mi(_linear())(torch.full((2, 3, 2, 2), float("nan")))


class Wrapped(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net, self.kind, self.calls = _linear(), kind, 0
        self.eval()

    def forward(self, x: Tensor):
        self.calls += 1
        logits = self.net(x)
        if self.kind == "tuple":
            return logits, x.flatten(1)
        if self.kind == "dict":
            return {"logits": logits, "hidden": x}
        if self.kind == "hf":
            return SimpleNamespace(logits=logits, loss=None)
        if self.kind == "dict_no_logits":
            return {"out": logits}
        if self.kind == "features_first":
            return x.flatten(1), logits
        return "nothing"


@pytest.mark.parametrize("kind", ["tuple", "dict", "hf"])
def test_structured_outputs_give_their_logits(kind) -> None:
    ref = _mi(_linear())(_x())
    assert torch.allclose(_mi(Wrapped(kind))(_x()), ref, atol=1e-6)


@pytest.mark.parametrize(("kind", "match"), [
    ("dict_no_logits", r"the model returned a dict with keys \['out'\] but no 'logits' tensor"),
    ("features_first", r"the model returned a tuple \(\(2, 12\), \(2, 3\)\) whose first element is not the logits"),
    ("str", r"the model must return logits \(B, num_classes\), .* got str"),
])
def test_unusable_outputs_are_refused_before_mixing(kind, match) -> None:
    model = Wrapped(kind)
    mi = _mi(model)
    with pytest.raises(VarMixupError, match=match):
        mi(_x())
    assert model.calls == 1  # only the plain forward ran, no mixes


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_x_dtype_is_cast_to_the_models(dtype) -> None:
    mi = _mi(_linear())
    out = mi(_x(dtype))
    assert out.dtype == torch.float32
    assert torch.allclose(out, mi(_x(dtype).float()), atol=1e-6)
    x = _x(dtype).requires_grad_()
    mi(x).sum().backward()
    assert x.grad is not None and x.grad.dtype == dtype  # gradients reach x through the cast


def test_float64_model_gets_float64_from_float32_x() -> None:
    mi = _mi(_linear().double())
    assert mi(_x()).dtype == torch.float64
