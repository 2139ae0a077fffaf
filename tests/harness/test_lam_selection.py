"""Choosing MI's lam on held-out training images."""

from __future__ import annotations

import pytest

from varmixup_aug import VarMixupError
from varmixup_aug.harness import select_mi_lam

pytestmark = pytest.mark.usefixtures("one_thread")


class TestSelectMiLam:
    def test_follows_the_rule(self, erm_model) -> None:
        model, (tx, ty), _ = erm_model
        held, pool = (tx[:32], ty[:32]), (tx[256:], ty[256:])
        out = select_mi_lam(model, *held, pool, grid=(0.4, 0.7, 1.0), steps=2, num_samples=3, max_clean_drop=0.1)
        assert out["n_images"] == 32 and "oblivious PGD" in out["rule"] and out["eps_key"] == "2/255"
        for mode in ("pl", "ol"):
            rows = out[mode]["grid"]
            assert [r["lam"] for r in rows] == [0.4, 0.7, 1.0]
            ok = [r for r in rows if r["clean_accuracy"] >= out["base_clean_accuracy"] - 0.1 - 1e-12]
            assert out[mode]["constraint_met"] == bool(ok)
            pick = max(ok, key=lambda r: (r["pgd_accuracy"], r["lam"])) if ok else max(
                rows, key=lambda r: (r["clean_accuracy"], r["lam"]))
            assert out[mode]["lam"] == pick["lam"]
        # lam = 1 is plain inference: MI-PL's accuracies equal the model's.
        assert out["pl"]["grid"][2]["clean_accuracy"] == pytest.approx(out["base_clean_accuracy"])
        assert out["pl"]["grid"][2]["pgd_accuracy"] == pytest.approx(out["base_pgd_accuracy"])

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"grid": (0.0, 0.5)}, "grid must be a non-empty sequence of lam values in \\(0, 1\\]"),
            ({"modes": ("combined",)}, "modes must be a non-empty subset"),
            ({"max_clean_drop": 2}, "max_clean_drop must be a number in \\[0, 1\\]"),
        ],
    )
    def test_errors(self, erm_model, kwargs: dict, match: str) -> None:
        model, (tx, ty), _ = erm_model
        with pytest.raises(VarMixupError, match=match):
            select_mi_lam(model, tx[:4], ty[:4], (tx[4:40], ty[4:40]), **kwargs)

    def test_pool_error(self, erm_model) -> None:
        model, (tx, ty), _ = erm_model
        with pytest.raises(VarMixupError, match="pool must be a pair"):
            select_mi_lam(model, tx[:4], ty[:4], tx[4:40])  # type: ignore[arg-type]
