"""Labels and options: soft labels must be probabilities, class labels whole numbers, numbers may be numpy or
0-d torch scalars, and bools and strings are never taken for numbers or numbers for bools."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from varmixup_aug import MIPredictor, VarMixup, VarMixupCollate, VarMixupError, varmixup
from varmixup_aug._collate import collate_images
from varmixup_aug._options import MixupOptions


def _x(b: int = 4) -> torch.Tensor:
    return torch.rand(b, 3, 4, 4, generator=torch.Generator().manual_seed(0))


def _mix(labels, **kwargs):
    return varmixup(_x(), labels, None, num_classes=3, space="input",
                    generator=torch.Generator().manual_seed(0), **kwargs)


@pytest.mark.parametrize(("labels", "match"), [
    (torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
     r"every row must sum to 1 .*row 0 summing to 2; multi-hot rows"),
    (torch.tensor([[1.5, -0.5, 0.0]] + [[1.0, 0.0, 0.0]] * 3), r"soft labels must be >= 0, got a minimum of -0\.5"),
    (torch.tensor([[0.5, 0.4, 0.0]] + [[1.0, 0.0, 0.0]] * 3), r"row 0 summing to 0\.9"),
    (torch.tensor([[float("nan"), 1.0, 0.0]] + [[1.0, 0.0, 0.0]] * 3), r"labels contain NaN or Inf"),
    (torch.tensor([2.7, 1.0, 0.0, 1.0]), r"got \(4,\); class indices must be an integer tensor"),
])
def test_soft_labels_must_be_probabilities(labels, match) -> None:
    with pytest.raises(VarMixupError, match=match):
        _mix(labels)


def test_soft_labels_within_tolerance_pass() -> None:
    labels = torch.tensor([[0.3, 0.3, 0.4], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    _, t = _mix(labels)
    assert torch.allclose(t.sum(1), torch.ones(4))


def test_numpy_labels_in_the_op() -> None:
    _, t_np = _mix(np.array([0, 1, 2, 1]))
    _, t_torch = _mix(torch.tensor([0, 1, 2, 1]))
    assert torch.equal(t_np, t_torch)
    _, t_soft = _mix(np.eye(3, dtype=np.float64)[[0, 1, 2, 1]])
    assert torch.allclose(t_soft, t_torch)


@pytest.mark.parametrize(("label", "match"), [
    (torch.tensor(2.7), r"labels must be integer class indices, got 2\.7.*not truncated"),
    (2.7, r"labels must be integer class indices, got 2\.7"),
    (np.float32(0.5), r"labels must be integer class indices, got 0\.5"),
    ("2", r"labels must be integer class indices, got str '2'; map class names to indices"),
    (True, r"labels must be integer class indices, got bool True"),
])
def test_class_labels_must_be_whole_numbers(label, match) -> None:
    with pytest.raises(VarMixupError, match=match):
        collate_images([(torch.rand(3, 2, 2), label), (torch.rand(3, 2, 2), 1)])


def test_whole_number_labels_of_any_kind() -> None:
    _, y = collate_images([(torch.rand(3, 2, 2), v) for v in (np.int64(2), torch.tensor(1), 0, 2.0, np.uint8(1))])
    assert y.dtype == torch.long and y.tolist() == [2, 1, 0, 2, 1]


def test_numpy_one_hot_rows_are_soft_labels() -> None:
    items = [(torch.rand(3, 4, 4), np.eye(3, dtype=np.int64)[i % 3]) for i in range(4)]
    _, y = collate_images(items)
    assert y.dtype == torch.float32 and y.shape == (4, 3)
    loader = DataLoader(items, batch_size=4, collate_fn=VarMixupCollate(None, num_classes=3, space="input", seed=0))
    _, t = next(iter(loader))
    assert torch.allclose(t.sum(1), torch.ones(4))
    multi_hot = [(torch.rand(3, 4, 4), np.array([1.0, 1.0, 0.0]))] * 4
    with pytest.raises(VarMixupError, match="every row must sum to 1"):
        VarMixupCollate(None, num_classes=3, space="input")(multi_hot)


@pytest.mark.parametrize("value", [np.float64(0.4), np.float32(0.4), torch.tensor(0.4), np.array(0.4)])
def test_numpy_and_torch_scalars_as_numbers(value) -> None:
    opts = MixupOptions(num_classes=np.int64(3), alpha=value, prob=value, label_smoothing=value)
    assert type(opts.num_classes) is int and opts.num_classes == 3
    assert type(opts.alpha) is float and abs(opts.alpha - 0.4) < 1e-6
    mixer = VarMixup(None, num_classes=torch.tensor(3), alpha=value, space="input", seed=np.int64(0))
    assert mixer.num_classes == 3 and mixer(_x(), torch.tensor([0, 1, 2, 1]))[1].shape == (4, 3)


def test_mi_num_classes_from_numpy_and_torch() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3)).eval()
    pool = (torch.rand(6, 3, 4, 4), torch.arange(6) % 3)
    for k in (np.int64(3), torch.tensor(3)):
        mi = MIPredictor(model, pool, num_classes=k, num_samples=np.int32(2), lam=np.float64(0.5), seed=0)
        assert type(mi.num_classes) is int and mi(torch.rand(2, 3, 4, 4)).shape == (2, 3)
    with pytest.raises(VarMixupError, match=r"num_classes must be an int >= 2, got 3\.0"):
        MIPredictor(model, pool, num_classes=np.float64(3.0))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lam_per_sample": "False"}, r"lam_per_sample must be True or False, got 'False'"),
    ({"lam_per_sample": 0}, r"lam_per_sample must be True or False, got 0"),
    ({"residual": "yes"}, r"residual must be True or False, got 'yes'"),
    ({"alpha": True}, r"alpha must be a finite number > 0, got True"),
    ({"alpha": "1.0"}, r"alpha must be a finite number > 0, got '1\.0'"),
    ({"num_classes": True}, r"num_classes must be a positive int, got True"),
    ({"num_classes": 3.0}, r"num_classes must be a positive int, got 3\.0"),
    ({"num_classes": np.bool_(True)}, r"num_classes must be a positive int, got True"),
    ({"prob": torch.tensor([0.5, 0.5])}, r"prob must lie in \[0, 1\]"),
    ({"autocast_dtype": "int8"}, r"autocast_dtype must be torch\.bfloat16, torch\.float16"),
    ({"autocast_dtype": torch.float32}, r"autocast_dtype must be torch\.bfloat16, torch\.float16"),
    ({"space": ["input"]}, r"space must be 'latent' or 'input'"),
])
def test_bools_and_strings_refused(kwargs, match) -> None:
    with pytest.raises(VarMixupError, match=match):
        MixupOptions(**{"num_classes": 3, **kwargs})


def test_autocast_dtype_strings_are_mapped() -> None:
    for name in ("bfloat16", "torch.bfloat16", "bf16"):
        assert MixupOptions(num_classes=3, autocast_dtype=name).autocast_dtype is torch.bfloat16
    assert MixupOptions(num_classes=3, autocast_dtype="float16").autocast_dtype is torch.float16
    assert MixupOptions(num_classes=3, lam_per_sample=np.bool_(False)).lam_per_sample is False


def test_draw_params_refuses_a_string_lam_per_sample() -> None:
    from varmixup_aug import draw_mixup_params

    with pytest.raises(VarMixupError, match="lam_per_sample must be True or False"):
        draw_mixup_params(4, lam_per_sample="False")


def test_loader_with_numpy_scalar_options() -> None:
    ds = TensorDataset(_x(8), torch.arange(8) % 3)
    collate = VarMixupCollate(None, num_classes=np.int64(3), alpha=np.float32(0.5), space="input", seed=0)
    _, t = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert t.shape == (4, 3)
