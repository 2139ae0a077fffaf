"""Hugging Face ``transformers.Trainer`` with VarMixup: the real Trainer and a tiny ViT built from a config.

Checks that the training loss is soft-target cross-entropy on the batch the collate made, that evaluation sees the
unmixed images with integer labels, that gradient accumulation gives the loss and step of one big batch, and that
the wrong wirings are refused.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset

from _docs import run_snippet
from varmixup_aug import VarMixupCollate, VarMixupError

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
hf = pytest.importorskip("varmixup_aug.integrations.hf")

K, SIZE = 10, 8


class DictImages(Dataset):
    """Items as HF's image datasets give them after a transform: ``{"pixel_values": (3, 8, 8), "label": int}``."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, SIZE, SIZE, generator=g)
        self.labels = torch.arange(n) % K

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"pixel_values": self.images[i], "label": int(self.labels[i])}


def tiny_vit() -> Any:
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=SIZE, patch_size=4, num_channels=3, hidden_size=16,
                                    num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=K)
    return transformers.ViTForImageClassification(config)


def train_args(tmp_path: Any, **kw: Any) -> Any:
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=8, max_steps=2,
                learning_rate=0.1, optim="sgd", lr_scheduler_type="constant", report_to=[], save_strategy="no",
                logging_steps=1, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0, weight_decay=0.0,
                warmup_steps=0)
    return transformers.TrainingArguments(**{**base, **kw})


def soft_ce(logits: Tensor, targets: Tensor) -> Tensor:
    return -(targets * torch.log_softmax(logits, 1)).sum(1).mean()


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread: None) -> None:
    return None


def test_doc_snippet_trains_then_evaluates_unmixed(tmp_path: Any, tiny_vae: Any) -> None:
    seen: list[Tensor] = []
    model = tiny_vit()
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["pixel_values"].clone()) if not m.training
                                    else None, with_kwargs=True)
    test_set = DictImages(8, seed=1)
    ns = run_snippet("hf-trainer", dict(model=model, args=train_args(tmp_path), train_set=DictImages(16),
                                        test_set=test_set, vae=tiny_vae))
    assert ns["trainer"].state.global_step == 2
    assert torch.isfinite(torch.tensor(ns["metrics"]["eval_loss"]))
    assert model.config.problem_type is None  # never switched to multi-label BCE
    torch.testing.assert_close(torch.cat(seen), test_set.images)  # the evaluation images, unmixed


def _trainer(tmp_path: Any, model: Any = None, **kw: Any) -> Any:
    collate = kw.pop("collate", None) or VarMixupCollate(None, num_classes=K, space="input", seed=0)
    return hf.VarMixupTrainer(model or tiny_vit(), train_args(tmp_path, **kw), train_dataset=DictImages(16),
                              eval_dataset=DictImages(8, seed=1), data_collator=collate)


def test_training_loss_is_soft_target_cross_entropy(tmp_path: Any) -> None:
    trainer = _trainer(tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"pixel_values", "labels"}  # "label" renamed, as DefaultDataCollator does
    assert batch["labels"].shape == (4, K) and batch["labels"].is_floating_point()
    assert not torch.equal(batch["labels"], batch["labels"].round())  # really mixed
    model = trainer.model.eval()
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        expected = soft_ce(model(pixel_values=batch["pixel_values"]).logits, batch["labels"])
        bce = torch.nn.functional.binary_cross_entropy_with_logits(model(pixel_values=batch["pixel_values"]).logits,
                                                                   batch["labels"])
    torch.testing.assert_close(loss.detach(), expected)
    assert abs(float(loss.detach()) - float(bce)) > 0.5  # what HF's own loss would have used on float labels
    assert model.config.problem_type is None


def test_evaluation_has_integer_labels_and_plain_cross_entropy(tmp_path: Any) -> None:
    got: dict[str, Any] = {}

    def metrics(pred: Any) -> dict[str, float]:
        got["label_ids"], got["logits"] = pred.label_ids, pred.predictions
        return {"n": float(len(pred.label_ids))}

    trainer = _trainer(tmp_path)
    trainer.compute_metrics = metrics
    out = trainer.evaluate()
    eval_set = trainer.eval_dataset
    assert got["label_ids"].dtype.kind == "i" and got["label_ids"].tolist() == eval_set.labels.tolist()
    expected = torch.nn.functional.cross_entropy(torch.as_tensor(got["logits"]), eval_set.labels)
    assert out["eval_loss"] == pytest.approx(float(expected), rel=1e-5)
    batch = next(iter(trainer.get_eval_dataloader()))
    assert batch["labels"].dtype == torch.int64 and torch.equal(batch["pixel_values"], eval_set.images)
    assert next(iter(trainer.get_train_dataloader()))["labels"].is_floating_point()  # training still mixes


def test_gradient_accumulation_gives_one_big_batch(tmp_path: Any) -> None:
    # prob=0 and label smoothing: float soft targets (what num_items_in_batch miscounts) with the same draws
    # for one batch of 8 and for two of 4, so the two runs see the same samples and targets.
    model = tiny_vit()
    runs = []
    for batch, steps in ((8, 1), (4, 2)):
        collate = VarMixupCollate(None, num_classes=K, space="input", prob=0.0, label_smoothing=0.2, seed=0)
        trainer = _trainer(tmp_path / str(batch), copy.deepcopy(model), collate=collate, max_steps=1,
                           per_device_train_batch_size=batch, gradient_accumulation_steps=steps)
        first = next(iter(trainer.get_train_dataloader()))
        trainer.train()
        runs.append((trainer.state.log_history[0]["loss"], trainer.model, first))
    (loss_big, after_big, first), (loss_acc, after_acc, _) = runs
    with torch.no_grad():
        expected = soft_ce(model.eval()(pixel_values=first["pixel_values"]).logits, first["labels"])
    assert loss_big == pytest.approx(float(expected), rel=1e-4)
    assert loss_acc == pytest.approx(loss_big, rel=1e-4)
    for (name, a), b in zip(after_big.named_parameters(), after_acc.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_soft_target_loss_counts_samples_not_label_entries() -> None:
    logits, targets = torch.randn(4, K), torch.softmax(torch.randn(4, K), 1)
    per_sample = -(targets * torch.log_softmax(logits, 1)).sum(1)
    torch.testing.assert_close(hf.soft_target_loss(logits, targets), per_sample.mean())
    # HF counts the label entries of a 3x bigger accumulated batch: 12 samples of K entries.
    torch.testing.assert_close(hf.soft_target_loss(logits, targets, num_items_in_batch=torch.tensor(12 * K)),
                               per_sample.sum() / 12)
    y = torch.tensor([1, -100, 3, 0])
    torch.testing.assert_close(hf.soft_target_loss({"logits": logits}, y),
                               torch.nn.functional.cross_entropy(logits, y, ignore_index=-100))


@pytest.mark.parametrize(("labels", "match"), [
    (None, r"soft_target_loss needs labels, got NoneType"),
    (torch.rand(4, K + 1), r"soft labels must have the logits' shape \(4, 10\), got \(4, 11\); check num_classes"),
    (torch.zeros(4, 1, dtype=torch.long), r"integer labels must have shape \(B,\) = \(4,\)"),
])
def test_soft_target_loss_refusals(labels: Any, match: str) -> None:
    with pytest.raises(VarMixupError, match=match):
        hf.soft_target_loss(torch.randn(4, K), labels)


def test_wrong_wirings_are_refused(tmp_path: Any) -> None:
    collate = VarMixupCollate(None, num_classes=K, space="input")
    with pytest.raises(VarMixupError, match=r"label_smoothing_factor=0\.1 is not supported.*"
                                            r"VarMixupCollate\(\.\.\., label_smoothing=0\.1\)"):
        _trainer(tmp_path, collate=collate, label_smoothing_factor=0.1)
    with pytest.raises(VarMixupError, match=r"needs data_collator=VarMixupCollate.*got DefaultDataCollator"):
        hf.VarMixupTrainer(tiny_vit(), train_args(tmp_path), data_collator=transformers.DefaultDataCollator())
    model = tiny_vit()
    model.config.problem_type = "multi_label_classification"  # what HF's loss leaves after float labels
    with pytest.raises(VarMixupError, match=r"problem_type='multi_label_classification'.*single_label_classification"):
        _trainer(tmp_path, model, collate=collate)
    with pytest.raises(VarMixupError, match=r"num_classes=4 differs from the model's config.num_labels=10"):
        _trainer(tmp_path, collate=VarMixupCollate(None, num_classes=4, space="input"))


def test_pair_items_become_hf_batches() -> None:
    batches = hf._HFBatches(VarMixupCollate(None, num_classes=K, space="input", seed=0), None)
    out = batches([(torch.rand(3, SIZE, SIZE), i) for i in range(4)])
    assert set(out) == {"pixel_values", "labels"} and out["labels"].shape == (4, K)
