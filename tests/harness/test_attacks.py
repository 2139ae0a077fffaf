"""FGSM, PGD and their EOT forms from torchattacks: radius, seeding, and attacks through MI."""

from __future__ import annotations

import pytest
import torch

from varmixup_aug import MIPredictor, VarMixupError
from varmixup_aug.harness import adversarial_examples, predict_logits

from _helpers import accuracy

pytestmark = pytest.mark.usefixtures("one_thread")


class TestAdversarialExamples:
    def test_pgd_eps_zero_leaves_accuracy_unchanged(self, erm_model) -> None:
        model, _, (x, y) = erm_model
        adv = adversarial_examples(model, x, y, attack="pgd", eps=0.0, steps=3)
        assert torch.equal(adv, x) and accuracy(model, adv, y) == accuracy(model, x, y)

    def test_pgd_8_255_lowers_accuracy_of_erm_model(self, erm_model) -> None:
        model, _, (x, y) = erm_model
        clean = accuracy(model, x, y)
        assert clean >= 0.9
        adv = adversarial_examples(model, x, y, attack="pgd", eps=8 / 255, steps=5)
        assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and 0 <= adv.min() and adv.max() <= 1
        assert accuracy(model, adv, y) < clean - 0.3

    def test_seeded_and_leaves_global_rng_alone(self, erm_model) -> None:
        model, _, (x, y) = erm_model
        state = torch.get_rng_state()
        a = adversarial_examples(model, x[:16], y[:16], eps=4 / 255, steps=2, seed=3, batch_size=8)
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.equal(a, adversarial_examples(model, x[:16], y[:16], eps=4 / 255, steps=2, seed=3, batch_size=8))
        assert not torch.equal(a, adversarial_examples(model, x[:16], y[:16], eps=4 / 255, steps=2, seed=4,
                                                       batch_size=8))

    def test_fgsm_and_eot_attacks_through_mi(self, erm_model) -> None:
        model, (tx, ty), (x, y) = erm_model
        fgsm = adversarial_examples(model, x[:8], y[:8], attack="fgsm", eps=2 / 255)
        assert ((fgsm - x[:8]).abs().max() - 2 / 255).abs() < 1e-6
        mi = MIPredictor(model, (tx[:64], ty[:64]), num_classes=4, mode="ol", num_samples=3, seed=0)
        adv = adversarial_examples(mi, x[:8], y[:8], attack="eotpgd", eps=8 / 255, steps=2, eot_iter=2)
        assert adv.shape == (8, 3, 16, 16) and (adv - x[:8]).abs().max() <= 8 / 255 + 1e-6
        # EOT-FGSM: one signed step of eps (pixels at 0 or 1 can move less after clipping).
        step = (adversarial_examples(mi, x[:8], y[:8], attack="eotfgsm", eps=4 / 255, eot_iter=2) - x[:8]).abs()
        inside = (x[:8] > 4 / 255) & (x[:8] < 1 - 4 / 255)
        torch.testing.assert_close(step[inside].max(), torch.tensor(4 / 255), atol=1e-6, rtol=0)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"attack": "cw", "eps": 0.1}, "attack must be one of"),
            ({"eps": -0.1}, "eps must be a finite number >= 0"),
            ({"eps": 8}, "did you mean 8/255"),
            ({"eps": 0.1, "steps": 0}, "steps must be an int >= 1"),
            ({"eps": 0.1, "step_size": -1.0}, "step_size must be a finite number >= 0"),
        ],
    )
    def test_errors(self, erm_model, kwargs: dict, match: str) -> None:
        model, _, (x, y) = erm_model
        with pytest.raises(VarMixupError, match=match):
            adversarial_examples(model, x[:2], y[:2], **kwargs)

    def test_label_errors(self, erm_model) -> None:
        model, _, (x, y) = erm_model
        with pytest.raises(VarMixupError, match="labels must be an integer tensor of shape \\(N,\\) = \\(2,\\)"):
            adversarial_examples(model, x[:2], y[:3], eps=0.1)
