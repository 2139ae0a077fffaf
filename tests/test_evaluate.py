"""Tests of the robustness evaluation (ECE, corruptions, attacks, MI lam selection) and of train-classifier."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import Tensor

from varmixup_aug import ConvVAE, MIPredictor, VAEConfig, VarMixupError, save_vae
from varmixup_aug.harness import (
    CORRUPTIONS,
    SEVERITIES,
    EvalConfig,
    PreActResNet,
    TrainClassifierConfig,
    adversarial_examples,
    calibration_bins,
    corrupt,
    evaluate_robustness,
    expected_calibration_error,
    load_classifier,
    markdown_table,
    predict_logits,
    read_classifier_metadata,
    reliability_diagram,
    select_mi_lam,
    split_holdout,
    train_classifier,
)
from varmixup_aug.harness.corruptions import corruption_transform
from varmixup_aug.harness.scoring import eps_key
from varmixup_aug.harness.train_classifier import AugmentedImages
from varmixup_aug.harness.cli import main

RANDOM_CORRUPTIONS = {"gaussian_noise", "shot_noise", "iso_noise", "motion_blur", "fog", "elastic_transform"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids the cost of thread hand-offs on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def easy_task(n: int, seed: int, k: int = 4, size: int = 16) -> tuple[Tensor, Tensor]:
    """Class c is a fixed +-1 pattern of amplitude 0.03 around grey, plus N(0, 0.03^2) noise.

    Easy to learn (the pattern is spread over every pixel) but an L-inf change of 8/255 ~ 0.031 per
    pixel can erase it, so an undefended model must lose accuracy under PGD at 8/255.
    """
    g = torch.Generator().manual_seed(seed)
    protos = torch.randint(0, 2, (k, 3, size, size), generator=torch.Generator().manual_seed(123)).float() * 2 - 1
    y = torch.arange(n) % k
    x = 0.5 + 0.03 * protos[y] + 0.03 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def erm_model() -> tuple[PreActResNet, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """A tiny PreActResNet trained with ERM for a few seconds; (model, train set, test set)."""
    train, test = easy_task(512, 0), easy_task(64, 1)
    torch.manual_seed(0)
    model = PreActResNet(num_classes=4, widths=(8, 16), blocks_per_stage=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        idx = torch.randint(0, 512, (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(train[0][idx]), train[1][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), train, test


def accuracy(model: torch.nn.Module, x: Tensor, y: Tensor) -> float:
    return float((predict_logits(model, x).argmax(1) == y).float().mean())


# ---- calibration ------------------------------------------------------------------------------


class TestExpectedCalibrationError:
    def test_calibrated_predictor_is_about_zero(self) -> None:
        g = torch.Generator().manual_seed(0)
        conf = 0.1 + 0.9 * torch.rand(20000, generator=g)
        correct = torch.rand(20000, generator=g) < conf  # right with probability = confidence
        assert expected_calibration_error(conf, correct) < 0.02

    def test_overconfident_predictor_is_large(self) -> None:
        g = torch.Generator().manual_seed(1)
        conf = 0.7 + 0.3 * torch.rand(20000, generator=g)
        correct = torch.rand(20000, generator=g) < conf - 0.4  # 40 points less accurate than confident
        assert abs(expected_calibration_error(conf, correct) - 0.4) < 0.02

    def test_hand_computed(self) -> None:
        conf = torch.tensor([0.95, 0.95, 0.55, 0.55])
        correct = torch.tensor([True, True, True, False])
        # bins: {0.95, 0.95}: |1 - 0.95| = 0.05; {0.55, 0.55}: |0.5 - 0.55| = 0.05
        assert expected_calibration_error(conf, correct) == pytest.approx(0.05)
        assert expected_calibration_error(conf, correct, n_bins=1) == pytest.approx(abs(0.75 - 0.75))

    @pytest.mark.parametrize(
        ("conf", "correct", "kwargs", "match"),
        [
            (torch.tensor([0.5, 1.2]), torch.tensor([1, 0]), {}, "confidences must lie in \\[0, 1\\]"),
            (torch.tensor([0.5, 0.6]), torch.tensor([1, 0, 1]), {}, "correct must be a tensor of the same shape"),
            (torch.zeros(2, 2), torch.zeros(2, 2), {}, "confidences must be a non-empty 1-D tensor"),
            (torch.tensor([0.5]), torch.tensor([1]), {"n_bins": 0}, "n_bins must be an int >= 1"),
        ],
    )
    def test_errors(self, conf: Tensor, correct: Tensor, kwargs: dict, match: str) -> None:
        with pytest.raises(VarMixupError, match=match):
            expected_calibration_error(conf, correct, **kwargs)


class TestCalibrationBins:
    def test_bins_and_edges(self) -> None:
        conf = torch.tensor([0.0, 0.25, 0.25 + 1e-6, 1.0])
        bins = calibration_bins(conf, torch.tensor([1, 1, 0, 1]), n_bins=4)
        assert bins["edges"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0] and bins["count"].sum() == 4
        assert bins["count"].tolist() == [2, 1, 0, 1]  # right-closed bins, 0 in the first
        assert bins["accuracy"].tolist() == [1, 0, 0, 1]
        assert bins["confidence"][0] == pytest.approx(0.125)


class TestReliabilityDiagram:
    def test_writes_png_headless(self, tmp_path: Path) -> None:
        import matplotlib

        backend = matplotlib.get_backend()
        g = torch.Generator().manual_seed(0)
        conf = torch.rand(500, generator=g)
        path = reliability_diagram(conf, torch.rand(500, generator=g) < conf, tmp_path / "sub" / "rel.png", title="t")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
        assert matplotlib.get_backend() == backend  # the global backend is left alone


# ---- corruptions ------------------------------------------------------------------------------


def smooth_images(n: int = 4, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


class TestCorrupt:
    def test_issue_list_and_three_severities(self) -> None:
        assert SEVERITIES == (1, 2, 3) and len(CORRUPTIONS) >= 10
        for name in ("gaussian_noise", "gaussian_blur", "motion_blur", "jpeg_compression", "brightness",
                     "contrast", "fog", "pixelate", "elastic_transform"):
            assert name in CORRUPTIONS
        assert {"iso_noise", "shot_noise"} <= set(CORRUPTIONS)

    @pytest.mark.parametrize("name", CORRUPTIONS)
    def test_shape_dtype_range_and_seeding(self, name: str) -> None:
        x = smooth_images()
        for severity in SEVERITIES:
            a = corrupt(x, name, severity, seed=0)
            assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
            assert float(a.min()) >= 0 and float(a.max()) <= 1
            assert torch.equal(a, corrupt(x, name, severity, seed=0)), "repeats under a seed"
            assert not torch.equal(a, x), "changes the images"
            assert torch.equal(corrupt(x[:2], name, severity, seed=0), a[:2]), "per-image seeds"
            other = corrupt(x, name, severity, seed=1)
            if name in RANDOM_CORRUPTIONS:
                assert not torch.equal(a, other), "random corruptions differ across seeds"
            else:
                assert torch.equal(a, other), "deterministic corruptions ignore the seed"

    def test_keeps_float64_and_scales_uint8(self) -> None:
        x = smooth_images(2)
        assert corrupt(x.double(), "fog", 2, seed=0).dtype == torch.float64
        u8 = (x * 255).round().byte()
        torch.testing.assert_close(corrupt(u8, "brightness", 1), corrupt(u8.float() / 255, "brightness", 1))

    def test_seed_none_follows_torch_seed(self) -> None:
        x = smooth_images(2)
        torch.manual_seed(5)
        a = corrupt(x, "gaussian_noise", 1, seed=None)
        torch.manual_seed(5)
        assert torch.equal(a, corrupt(x, "gaussian_noise", 1, seed=None))

    @pytest.mark.parametrize(
        ("args", "kwargs", "match"),
        [
            ((smooth_images(1), "snow", 1), {}, "corruption must be one of"),
            ((smooth_images(1), "fog", 4), {}, "severity must be one of \\(1, 2, 3\\)"),
            ((smooth_images(1)[:, :1], "fog", 1), {}, "images must be RGB"),
            ((smooth_images(1) * 3, "fog", 1), {}, "images must lie in pixel space \\[0, 1\\]"),
            ((smooth_images(1), "fog", 1), {"seed": 1.5}, "seed must be an int or None"),
        ],
    )
    def test_errors(self, args: tuple, kwargs: dict, match: str) -> None:
        with pytest.raises(VarMixupError, match=match):
            corrupt(*args, **kwargs)


class TestCorruptionTransform:
    def test_returns_albumentations_transform_always_applied(self) -> None:
        t = corruption_transform("jpeg_compression", 3)
        assert type(t).__name__ == "ImageCompression" and t.p == 1.0


# ---- attacks ----------------------------------------------------------------------------------


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


# ---- MI lam selection -------------------------------------------------------------------------


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


# ---- the whole evaluation ---------------------------------------------------------------------


class TestEvalConfig:
    def test_defaults_are_the_issue_protocol(self) -> None:
        cfg = EvalConfig()
        assert [eps_key(e) for e in cfg.eps] == ["2/255", "4/255", "8/255"]
        assert cfg.pgd_steps == 10 and cfg.eot_iter == 5 and cfg.ece_bins == 15
        assert cfg.severities == (1, 2, 3) and cfg.corruptions == CORRUPTIONS
        assert cfg.to_dict()["step_size_rule"] == "eps / 4"

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"eps": (8,)}, "eps must be a non-empty list of radii in \\[0, 1\\]"),
            ({"corruptions": ("snow",)}, "corruptions \\['snow'\\] are unknown"),
            ({"severities": (4,)}, "severities must be a non-empty subset"),
            ({"mi_lam_pl": 0.0}, "mi_lam_pl must be a number in \\(0, 1\\]"),
            ({"pgd_steps": 0}, "pgd_steps must be an int >= 1"),
            ({"adaptive_limit": 0}, "adaptive_limit must be an int >= 1"),
            ({"adaptive_modes": ("ol", "ol")}, "adaptive_modes must be a non-empty subset of \\('pl', 'ol'\\)"),
            ({"adaptive_modes": ()}, "adaptive_modes must be a non-empty subset"),
        ],
    )
    def test_errors(self, kwargs: dict, match: str) -> None:
        with pytest.raises(VarMixupError, match=match):
            EvalConfig(**kwargs)


def _tiny_config(**kw) -> EvalConfig:
    base = dict(pgd_steps=2, eot_iter=2, mi_samples=3, severities=(1,), batch_size=64, mi_batch_size=16,
                adaptive_batch_size=8, adaptive_limit=8)
    return EvalConfig(**{**base, **kw})


class TestEvaluateRobustness:
    def test_end_to_end_tiny(self, erm_model, tmp_path: Path) -> None:
        model, (tx, ty), (x, y) = erm_model
        # The corruptions are defined on RGB images of any size; these are 16x16.
        start = time.perf_counter()
        res = evaluate_robustness(model, x[:24], y[:24], (tx[:128], ty[:128]), config=_tiny_config(),
                                  out_dir=tmp_path, name="erm", progress=False)
        assert time.perf_counter() - start < 60
        json.dumps(res)  # JSON-serialisable
        assert res["n_test"] == 24 and (tmp_path / "reliability.png").is_file()
        clean = res["clean"]
        assert 0 <= clean["ece"] <= 1 and clean["accuracy"] == accuracy(model, x[:24], y[:24])
        assert set(res["corruptions"]["accuracy"]) == set(CORRUPTIONS)
        assert all(set(v) == {"1", "mean"} for v in res["corruptions"]["accuracy"].values())
        for part in ("fgsm", "pgd_oblivious"):
            assert list(res[part]) == ["2/255", "4/255", "8/255"]
            assert all(set(v) == {"none", "mi_pl", "mi_ol", "none_on_adaptive_subset"} for v in res[part].values())
        assert res["pgd_oblivious"]["8/255"]["none"] < clean["accuracy"]
        for part in ("fgsm_adaptive", "pgd_adaptive"):
            assert list(res[part]) == ["2/255", "4/255", "8/255"]
            assert all(set(v) == {"mi_pl", "mi_ol", "none_on_mi_pl_adv", "none_on_mi_ol_adv"}
                       for v in res[part].values())
        assert res["adaptive_n"] == 8 and 0 <= res["adaptive_clean"]["none"] <= 1
        # The oblivious attacks also score the plain model on the adaptive subset (8 of 24 images).
        for part in ("fgsm", "pgd_oblivious"):
            on_subset = res[part]["8/255"]["none_on_adaptive_subset"]
            assert 0 <= on_subset <= 1 and round(on_subset * 8) == on_subset * 8
        for value in (res["fgsm"]["2/255"]["mi_ol"], res["pgd_adaptive"]["4/255"]["mi_pl"]):
            assert 0 <= value <= 1
        assert set(res["timing_s"]) == {"clean", "corruptions", "fgsm", "pgd_oblivious", "fgsm_adaptive",
                                        "pgd_adaptive"}

    def test_adaptive_modes_ol_only(self, erm_model) -> None:
        model, (tx, ty), (x, y) = erm_model
        cfg = _tiny_config(run_corruptions=False, run_fgsm=False, eps=(8 / 255,), adaptive_modes=("ol",))
        res = evaluate_robustness(model, x[:12], y[:12], (tx[:64], ty[:64]), config=cfg, progress=False)
        assert set(res["pgd_adaptive"]["8/255"]) == {"mi_ol", "none_on_mi_ol_adv"}
        assert list(res["settings"]["adaptive_modes"]) == ["ol"]
        assert "| - / " in markdown_table({"erm": res})

    def test_without_pool_skips_mi(self, erm_model) -> None:
        model, _, (x, y) = erm_model
        cfg = _tiny_config(run_corruptions=False, run_fgsm=False, eps=(0.0,))
        res = evaluate_robustness(model, x[:8], y[:8], None, config=cfg, progress=False)
        assert res["pgd_oblivious"]["0/255"] == {"none": res["clean"]["accuracy"]}
        assert "pgd_adaptive" not in res and res["clean"]["mi_pl_accuracy"] is None

    def test_errors(self, erm_model) -> None:
        model, _, (x, y) = erm_model
        with pytest.raises(VarMixupError, match="images must lie in pixel space"):
            evaluate_robustness(model, x[:4] * 4 - 2, y[:4], None, progress=False)
        with pytest.raises(VarMixupError, match="labels must be an integer tensor"):
            evaluate_robustness(model, x[:4], y[:4].float(), None, progress=False)


class TestMarkdownTable:
    def test_row_per_result(self) -> None:
        res = {"settings": {"eps_keys": ["2/255"]}, "clean": {"accuracy": 0.9, "ece": 0.05, "mi_pl_accuracy": 0.8,
                                                              "mi_ol_accuracy": 0.85},
               "corruptions": {"mean": 0.7}, "fgsm": {"2/255": {"none": 0.5, "mi_pl": 0.6, "mi_ol": 0.65}},
               "pgd_oblivious": {"2/255": {"none": 0.3, "mi_pl": 0.4, "mi_ol": 0.45}},
               "pgd_adaptive": {"2/255": {"mi_pl": 0.2, "mi_ol": 0.25}}}
        lines = markdown_table({"erm": res, "mixup": {**res, "pgd_adaptive": {}}}).strip().splitlines()
        assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
        assert lines[2] == ("| erm | 90.0 | 5.0 | 70.0 | 80.0 / 85.0 | 50.0 / 60.0 / 65.0 | 30.0 / 40.0 / 45.0 "
                            "| - / - | 20.0 / 25.0 |")
        assert lines[3].endswith("| - / - | - / - |")
        subset = markdown_table({"erm": {**res, "n_test": 100, "adaptive_n": 10}})
        assert "| 20.0 / 25.0 (n=10) |" in subset

    def test_error(self) -> None:
        with pytest.raises(VarMixupError, match="results must be a non-empty mapping"):
            markdown_table({})


# ---- model, split, dataset ---------------------------------------------------------------------


class TestPreActResNet:
    def test_pixel_space_model(self) -> None:
        torch.manual_seed(0)
        model = PreActResNet(num_classes=10, widths=(8, 16, 32))
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert "normalize.mean" in model.state_dict() and "normalize.std" in model.state_dict()
        assert PreActResNet(**model.config()).config() == model.config()  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [({"widths": ()}, "widths must be a non-empty"), ({"blocks_per_stage": 0}, "blocks_per_stage must be"),
         ({"num_classes": 1}, "num_classes must be an int >= 2"), ({"std": (0.0,)}, "std > 0")],
    )
    def test_errors(self, kwargs: dict, match: str) -> None:
        with pytest.raises(VarMixupError, match=match):
            PreActResNet(**kwargs)


class TestSplitHoldout:
    def test_fixed_disjoint_and_independent_of_limit(self) -> None:
        train, held = split_holdout(100, 20, seed=0)
        assert len(held) == 20 and not set(train) & set(held) and len(train) == 80
        small, held2 = split_holdout(100, 20, seed=0, limit_train=10)
        assert held2 == held and set(small) <= set(train) and len(small) == 10
        assert split_holdout(100, 20, seed=1)[1] != held

    @pytest.mark.parametrize(("args", "kwargs", "match"), [
        ((10, 10), {}, "holdout must be an int in \\[0, 9\\]"),
        ((10, 2), {"limit_train": 0}, "limit_train must be an int >= 1"),
        ((1, 0), {}, "at least 2 images"),
    ])
    def test_errors(self, args: tuple, kwargs: dict, match: str) -> None:
        with pytest.raises(VarMixupError, match=match):
            split_holdout(*args, **kwargs)


class TestAugmentedImages:
    def test_seeded_per_epoch_and_index(self) -> None:
        images = (smooth_images(6) * 255).round().byte()
        ds = AugmentedImages(images, torch.arange(6), padding=4, seed=0)
        a, label = ds[3]
        assert a.shape == (32, 32, 3) and a.dtype.name == "uint8" and label == 3
        assert (a == ds[3][0]).all()
        outs = []
        for epoch in range(4):
            ds.set_epoch(epoch)
            outs.append(ds[3][0])
        assert any((outs[0] != o).any() for o in outs[1:])
        plain = AugmentedImages(images, torch.arange(6), padding=0, flip=False)
        assert (plain[2][0] == images[2].permute(1, 2, 0).numpy()).all()

    def test_errors(self) -> None:
        with pytest.raises(VarMixupError, match="images must be a uint8 tensor"):
            AugmentedImages(torch.rand(2, 3, 8, 8), torch.arange(2))
        with pytest.raises(VarMixupError, match="labels must have shape \\(N,\\) = \\(2,\\)"):
            AugmentedImages(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.arange(3))


# ---- train-classifier and evaluate commands ---------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ImageFolder (train/ and test/, 10 classes of coloured noise, 32x32 PNG) and a tiny VAE."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    g = torch.Generator().manual_seed(0)
    colours = torch.rand(10, 3, 1, 1, generator=g)
    for split, n in (("train", 10), ("test", 4)):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                x = (0.2 + 0.6 * colours[c] + 0.08 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1)
                Image.fromarray((x * 255).round().byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    torch.manual_seed(0)
    save_vae(ConvVAE(VAEConfig(image_size=32, latent_dim=4, widths=(4, 8))).eval(), root / "vae.safetensors")
    return root


def train_args(root: Path, out: Path, method: str, *extra: str) -> list[str]:
    vae = ["--vae", str(root / "vae.safetensors")] if method.startswith("varmixup") else []
    return ["train-classifier", "--method", method, "--data-dir", str(root), "--out", str(out), *vae,
            "--holdout", "20", "--batch-size", "16", "--widths", "4,8", "--epochs", "2", "--checkpoint-every", "2",
            "--no-progress", *extra]


class TestTrainClassifierCommand:
    @pytest.mark.parametrize("method", ["erm", "mixup", "varmixup", "varmixup-residual"])
    def test_each_method_trains_a_few_steps_and_loads(self, image_folder: Path, tmp_path: Path, method: str) -> None:
        out = tmp_path / method
        assert main(train_args(image_folder, out, method, "--max-steps", "3")) == 0
        model = load_classifier(out)
        meta = model.checkpoint_metadata
        assert meta["method"] == method and meta["global_step"] == 3 and not meta["finished"]
        assert meta["holdout"]["count"] == 20 and meta["holdout"]["train_size"] == 100
        assert meta["args"]["lr"] == 0.1 and meta["args"]["nesterov"] and meta["data"]["train_images"] == 80
        assert isinstance(model, PreActResNet) and not model.training
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        report = json.loads((out / "train_report.json").read_text())
        assert report["steps"] == 3 and 0 <= report["holdout_accuracy"] <= 1 and report["s_per_step"] > 0
        assert json.loads((out / "holdout.json").read_text())["indices"] == meta["holdout"]["indices"]
        assert any(k.startswith("optim.") for k in _tensor_names(out / "checkpoint.safetensors"))

    def test_resume_equals_uninterrupted(self, image_folder: Path, tmp_path: Path) -> None:
        a, b = tmp_path / "a", tmp_path / "b"
        assert main(train_args(image_folder, a, "varmixup", "--max-steps", "7")) == 0  # crosses an epoch (5 steps)
        assert main(train_args(image_folder, b, "varmixup", "--max-steps", "3")) == 0
        assert main(train_args(image_folder, b, "varmixup", "--max-steps", "7", "--resume")) == 0
        ma, mb = load_classifier(a), load_classifier(b)
        meta_a, meta_b = read_classifier_metadata(a), read_classifier_metadata(b)
        assert meta_b["global_step"] == 7 and meta_b["epoch"] == 1 and meta_b["history"] == meta_a["history"]
        for (k, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items()):
            assert torch.equal(x, y), k

    def test_library_train_classifier_errors(self, tmp_path: Path) -> None:
        with pytest.raises(VarMixupError, match="method must be one of"):
            TrainClassifierConfig(out=str(tmp_path), method="cutmix")
        cfg = TrainClassifierConfig(out=str(tmp_path), method="varmixup", batch_size=4, max_steps=1)
        images = torch.zeros(8, 3, 8, 8, dtype=torch.uint8)
        with pytest.raises(VarMixupError, match="method 'varmixup' needs a VAE"):
            train_classifier(cfg, images, torch.arange(8) % 2, num_classes=2, progress=False)
        with pytest.raises(VarMixupError, match="batch_size 128 is larger than the 8 training images"):
            train_classifier(TrainClassifierConfig(out=str(tmp_path)), images, torch.arange(8) % 2, num_classes=2)

    def test_command_errors(self, image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        out = tmp_path / "run"
        assert main(train_args(image_folder, out, "erm", "--resume")) == 2
        assert "--resume given but there is no checkpoint" in capsys.readouterr().err
        assert main(train_args(image_folder, out, "erm", "--vae", "x.safetensors")) == 2
        assert "--vae is only used by --method varmixup" in capsys.readouterr().err
        assert main(train_args(image_folder, out, "erm", "--max-steps", "1")) == 0
        assert main(train_args(image_folder, out, "mixup", "--resume")) == 2
        assert "was trained with --method erm, not mixup" in capsys.readouterr().err
        with pytest.raises(VarMixupError, match="no 'varmixup_aug_classifier' metadata"):
            read_classifier_metadata(image_folder / "vae.safetensors")

    def test_evaluate_command_loads_checkpoint(self, image_folder: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
        run = tmp_path / "erm"
        assert main(train_args(image_folder, run, "erm", "--max-steps", "2")) == 0
        results = tmp_path / "results"
        args = ["evaluate", "--checkpoint", str(run), "--data-dir", str(image_folder), "--out", str(tmp_path / "ev"),
                "--limit-test", "12", "--seed", "0", "--pgd-steps", "1", "--eot-iter", "1", "--mi-samples", "2",
                "--severities", "1", "--corruptions", "gaussian_noise,fog", "--pool-size", "60", "--select-lam",
                "--lam-grid", "0.5,0.9", "--select-limit", "10", "--adaptive-limit", "4", "--eps", "8/255",
                "--results-json", str(results / "robustness.json"), "--results-md", str(results / "robustness.md"),
                "--no-progress"]
        assert main(args) == 0
        res = json.loads((tmp_path / "ev" / "eval.json").read_text())
        assert res["n_test"] == 12 and res["checkpoint"]["method"] == "erm" and res["data"]["pool_size"] == 60
        assert res["lam_selection"]["n_images"] == 10
        assert res["settings"]["mi_lam_pl"] == res["lam_selection"]["pl"]["lam"]
        assert set(res["corruptions"]["accuracy"]) == {"gaussian_noise", "fog"}
        assert json.loads((results / "robustness.json").read_text())["erm"]["n_test"] == 12
        assert "| erm |" in (results / "robustness.md").read_text()
        assert (tmp_path / "ev" / "reliability.png").is_file() and "lam selection on 10" in capsys.readouterr().out
        assert main([*args[:-5], "--results-md", "x.md", "--no-progress"]) == 2
        assert "--results-md needs --results-json" in capsys.readouterr().err
        assert main([*args, "--adaptive-modes", "ol,xx"]) == 2
        assert "adaptive_modes must be a non-empty subset of ('pl', 'ol')" in capsys.readouterr().err


def _merge_one(path: str, name: str) -> None:
    from varmixup_aug.harness.cli.evaluate import _merge_row

    row = {"name": name, "settings": {"eps_keys": ["2/255"]}, "clean": {"accuracy": 0.5, "ece": 0.1}}
    for _ in range(5):  # several rounds so that the writes overlap
        _merge_row(Path(path), name, row, Path(path).with_suffix(".md"))


class TestResultsMerge:
    def test_side_by_side_evaluations_keep_every_row(self, tmp_path: Path) -> None:
        import multiprocessing as mp

        path = tmp_path / "robustness.json"
        names = ["varmixup-residual", "erm", "mixup", "varmixup", "other"]
        procs = [mp.get_context("spawn").Process(target=_merge_one, args=(str(path), n)) for n in names]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        rows = json.loads(path.read_text())
        assert list(rows) == ["erm", "mixup", "varmixup", "varmixup-residual", "other"]
        assert path.with_suffix(".md").read_text().count("| 50.0 | 10.0 |") == 5


def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


class TestCommittedResults:
    def test_readme_tables_are_the_summary_of_the_committed_json(self) -> None:
        import subprocess
        import sys

        repo = Path(__file__).resolve().parents[1]
        results = repo / "results" / "robustness.json"
        rows = json.loads(results.read_text())
        assert list(rows) == ["erm", "mixup", "varmixup", "varmixup-residual"]
        assert {r["n_test"] for r in rows.values()} == {1000}
        assert {r["settings"]["seed"] for r in rows.values()} == {0}
        assert all(r["lam_selection"]["n_images"] == 500 for r in rows.values())
        subset = repo / "results" / "pgd_adaptive_subset.json"
        # The plain model's PGD-10 on the adaptive subset: the same attack as the main run, so "none" repeats.
        for name, r in json.loads(subset.read_text()).items():
            assert r["pgd_oblivious"].keys() == rows[name]["pgd_oblivious"].keys()
            for k, entry in r["pgd_oblivious"].items():
                assert entry["none"] == rows[name]["pgd_oblivious"][k]["none"]
        out = subprocess.run([sys.executable, str(repo / "examples" / "robustness_summary.py"), str(results),
                              "--subset-json", str(subset)], capture_output=True, text=True, check=True).stdout
        readme = (repo / "README.md").read_text()
        for table in out.strip().split("\n\n"):
            assert table in readme


class TestCommittedCheckpoints:
    @pytest.mark.parametrize("method", ["erm", "mixup", "varmixup", "varmixup-residual"])
    def test_load_classifier_reads_every_committed_classifier(self, method: str) -> None:
        run = Path(__file__).resolve().parents[1] / "results" / "classifiers" / method
        model = load_classifier(run)
        assert isinstance(model, PreActResNet) and not model.training
        assert model.checkpoint_metadata == read_classifier_metadata(run)
        assert model.checkpoint_metadata["method"] == method
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
