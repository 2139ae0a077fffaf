"""Lightning: a LightningModule holding ``self.mi = MIPredictor(self.net, ...)`` saves the network once and loads with
``load_from_checkpoint``; torchmetrics on the soft targets' argmax. Real ``Trainer.fit``, save and load."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from _docs import run_snippet
from varmixup_aug import MIPredictor, VarMixupCollate

L = pytest.importorskip("lightning")
pytest.importorskip("torchmetrics")

K, SIZE = 10, 4


def make_net(num_classes: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, 16), torch.nn.BatchNorm1d(16),
                               torch.nn.ReLU(), torch.nn.Linear(16, num_classes))


def data() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 3, SIZE, SIZE, generator=g), torch.arange(24) % K
    collate = VarMixupCollate(None, num_classes=K, space="input", seed=0)
    return dict(make_net=make_net, pool=(x, y), torch=torch,
                train_loader=DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8, collate_fn=collate),
                val_loader=DataLoader(TensorDataset(x[16:], y[16:]), batch_size=8))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(0)
    ns = data()
    ns["path"] = str(tmp_path_factory.mktemp("ckpt") / "last.ckpt")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run_snippet("lightning", ns)
    ns["warnings"] = [str(w.message) for w in seen]
    return ns


def test_snippet_trains_saves_and_reloads(trained: dict[str, Any]) -> None:
    model = trained["trainer"].lightning_module
    assert isinstance(model.mi, MIPredictor) and model.mi.model is model.net
    assert not [w for w in trained["warnings"] if "eval mode" in w], trained["warnings"]
    restored = trained["restored"]
    for (name, a), b in zip(model.net.state_dict().items(), restored.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert restored.net.training  # a fresh module, ready to train


def test_the_network_is_stored_once(trained: dict[str, Any]) -> None:
    state = torch.load(trained["path"], weights_only=True, map_location="cpu")["state_dict"]
    net_keys = {f"net.{k}" for k in trained["restored"].net.state_dict()}
    assert set(state) == net_keys  # no "mi.model." copies
    assert state._metadata["mi"]["model_stored_at"] == "net."


def test_a_module_building_the_predictor_in_init_loads_the_checkpoint(trained: dict[str, Any]) -> None:
    base = type(trained["restored"])

    class WithPredictor(base):  # type: ignore[misc, valid-type]
        def __init__(self, num_classes: int = 10) -> None:
            super().__init__(num_classes)
            with pytest.warns(UserWarning, match="train mode; switching it to eval"):
                self.mi = MIPredictor(self.net, trained["pool"], num_classes=num_classes, seed=0)

    loaded = WithPredictor.load_from_checkpoint(trained["path"])
    assert loaded.mi.model is loaded.net
    for a, b in zip(trained["restored"].net.parameters(), loaded.mi.model.parameters(), strict=True):
        assert torch.equal(a, b)
    x, trained_mi = trained["pool"][0][:4], trained["trainer"].lightning_module.mi.eval()
    draws = loaded.mi.draw(trained_mi.model(x).argmax(1), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.mi(x, draws=draws), trained_mi(x, draws=draws))


def test_torchmetrics_on_soft_targets_takes_their_argmax() -> None:
    import torchmetrics

    acc = torchmetrics.classification.MulticlassAccuracy(K, average="micro")
    soft = torch.tensor([[0.7, 0.3] + [0.0] * 8, [0.2, 0.8] + [0.0] * 8])
    logits = torch.tensor([[2.0, 0.0] + [-1.0] * 8, [2.0, 0.0] + [-1.0] * 8])
    assert float(acc(logits, soft.argmax(1))) == pytest.approx(0.5)
