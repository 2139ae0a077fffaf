"""foolbox through ``MIPredictor``: with ``deterministic=True`` the attack's success flags agree with a re-evaluation
of the adversarial images; a randomised predictor answers differently on every call."""

from __future__ import annotations

import pytest
import torch

from _docs import run_snippet
from varmixup_aug import MIPredictor

foolbox = pytest.importorskip("foolbox")

K, SIZE = 3, 4


def predictor(deterministic: bool) -> MIPredictor:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, K)).eval()
    g = torch.Generator().manual_seed(1)
    pool = (torch.rand(30, 3, SIZE, SIZE, generator=g), torch.arange(30) % K)
    return MIPredictor(model, pool, num_classes=K, num_samples=4, seed=0, deterministic=deterministic)


def test_attack_success_agrees_with_reevaluation_when_deterministic() -> None:
    mi = predictor(deterministic=True)
    x = torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    y = mi(x).argmax(1)  # the clean predictions: every image starts classified "correctly"
    fmodel = foolbox.PyTorchModel(mi, bounds=(0, 1))
    _, adv, success = foolbox.attacks.LinfPGD(steps=5, rel_stepsize=0.25, random_start=False)(
        fmodel, x, y, epsilons=0.1)
    again = mi(adv).argmax(1) != y
    assert 0 < int(success.sum()) < 16  # a mix of successes and failures, so agreement is not trivial
    assert torch.equal(success, again)


def test_a_randomised_predictor_answers_differently_each_call() -> None:
    mi = predictor(deterministic=False)
    x = torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(mi(x), mi(x))  # why an attack's own bookkeeping needs deterministic=True


def test_doc_snippet() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, 10)).eval()
    pool = (torch.rand(40, 3, SIZE, SIZE), torch.arange(40) % 10)
    x = torch.rand(8, 3, SIZE, SIZE)
    y = model(x).argmax(1)
    run_snippet("foolbox", dict(MIPredictor=MIPredictor, model=model, pool=pool, x=x, y=y, torch=torch,
                                foolbox=foolbox))
