"""The fast CIFAR network, its batch augmentation, method transforms and resumable training."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors import safe_open

from _helpers import tiny_conv_vae
from varmixup_aug import ConvVAE, VarMixupError
from varmixup_aug.harness import FastCifarNet
from varmixup_aug.harness.fast_training import (
    FastTrainConfig,
    batch_crop_flip,
    fgsm_random_start,
    make_batch_transform,
    train_fast_classifier,
)

TINY = (8, 16, 16)


def _images(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n) % 4


class TestFastCifarNet:
    def test_shapes_and_config_round_trip(self) -> None:
        torch.manual_seed(0)
        net = FastCifarNet(num_classes=4, widths=TINY)
        net.init_whitening(torch.rand(8, 3, 32, 32))
        x = torch.rand(3, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        assert net.to(memory_format=torch.channels_last)(x).shape == (3, 4)
        assert FastCifarNet(**net.config()).config() == net.config()

    def test_frozen_parts_do_not_train(self) -> None:
        net = FastCifarNet(widths=TINY)
        assert not net.whiten.weight.requires_grad and net.whiten.bias.requires_grad
        norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms and all(not m.weight.requires_grad and m.bias.requires_grad for m in norms)

    def test_whitening_decorrelates_patches(self) -> None:
        g = torch.Generator().manual_seed(0)
        base = torch.rand(64, 1, 32, 32, generator=g)
        images = (0.6 * base + 0.4 * torch.rand(64, 3, 32, 32, generator=g)).clamp(0, 1)  # correlated channels
        net = FastCifarNet(widths=TINY)
        net.init_whitening(images, eps=1e-8)
        with torch.no_grad():
            out = torch.nn.functional.conv2d(net.normalize(images), net.whiten.weight[:12])
        flat = out.permute(1, 0, 2, 3).reshape(12, -1)
        cov = flat @ flat.T / flat.shape[1]
        assert torch.allclose(cov, torch.eye(12), atol=1e-3)


class TestBatchCropFlip:
    def test_matches_per_image_crops(self) -> None:
        images, _ = _images(10)
        padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
        index = torch.tensor([3, 0, 9, 3])
        flip = torch.tensor([True, False, True, False])
        out = batch_crop_flip(padded, index, size=32, flip=flip, generator=torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        dy, dx = torch.randint(0, 5, (4,), generator=g), torch.randint(0, 5, (4,), generator=g)
        for k in range(4):
            ref = padded[index[k], :, dy[k]:dy[k] + 32, dx[k]:dx[k] + 32]
            assert torch.equal(out[k], ref.flip(-1) if flip[k] else ref)
        assert out.dtype == torch.uint8 and out.shape == (4, 3, 32, 32)

    def test_no_padding_no_flip_is_identity(self) -> None:
        images, _ = _images(6)
        index = torch.tensor([5, 1])
        out = batch_crop_flip(images, index, size=32, flip=torch.zeros(2, dtype=torch.bool),
                              generator=torch.Generator().manual_seed(0))
        assert torch.equal(out, images[index])


class TestMakeBatchTransform:
    @pytest.fixture()
    def vae(self) -> ConvVAE:
        return tiny_conv_vae(image_size=32, latent_dim=8, widths=(8, 16))

    @pytest.mark.parametrize("method", ["erm", "mixup", "varmixup", "varmixup-residual", "vae-recon"])
    def test_targets_are_distributions(self, method: str, vae: ConvVAE) -> None:
        cfg = FastTrainConfig(out="unused", method=method)
        x = torch.rand(8, 3, 32, 32)
        y = torch.arange(8) % 4
        xm, t = make_batch_transform(cfg, 4, vae)(x, y, torch.Generator().manual_seed(0))
        assert xm.shape == x.shape and t.shape == (8, 4)
        assert torch.allclose(t.sum(1), torch.ones(8)) and bool((t >= 0).all())
        assert float(t.min()) >= 0.2 / 4 - 1e-6  # label smoothing 0.2 is kept

    def test_vae_recon_is_the_reconstruction_without_mixing(self, vae: ConvVAE) -> None:
        class SharpPosterior(torch.nn.Module):  # logvar so low that the posterior sample is mu
            def __init__(self, inner: ConvVAE) -> None:
                super().__init__()
                self.inner = inner

            def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                mu, _ = self.inner.encode(x)
                return mu, torch.full_like(mu, -60.0)

            def decode(self, z: torch.Tensor) -> torch.Tensor:
                return self.inner.decode(z)

        cfg = FastTrainConfig(out="unused", method="vae-recon", label_smoothing=0.0, precision="fp32")
        x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
        xm, t = make_batch_transform(cfg, 4, SharpPosterior(vae))(x, y, torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = vae.decode(vae.encode(x)[0])
        assert torch.allclose(xm, ref, atol=1e-5)
        assert torch.equal(t, torch.nn.functional.one_hot(y, 4).float())

    def test_vae_methods_need_a_vae(self) -> None:
        with pytest.raises(VarMixupError, match="needs a VAE"):
            make_batch_transform(FastTrainConfig(out="unused", method="vae-recon"), 4, None)


class TestFastTrainConfig:
    def test_rejects_unknown_method(self) -> None:
        with pytest.raises(VarMixupError, match="method must be one of"):
            FastTrainConfig(out="x", method="cutmix")

    @pytest.mark.parametrize("name", ["epochs", "batch_size", "checkpoint_every"])
    def test_rejects_non_positive_counts(self, name: str) -> None:
        with pytest.raises(VarMixupError, match=f"{name} must be an int >= 1"):
            FastTrainConfig(out="x", **{name: 0})

    def test_rejects_bad_lr(self) -> None:
        with pytest.raises(VarMixupError, match="lr must be a finite number"):
            FastTrainConfig(out="x", lr=float("nan"))

    @pytest.mark.parametrize("value", [-0.1, 1.0, float("nan"), "0.1"])
    def test_rejects_bad_label_smoothing(self, value: object) -> None:
        with pytest.raises(VarMixupError, match=r"label_smoothing must be a number in \[0, 1\)"):
            FastTrainConfig(out="x", label_smoothing=value)  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", ["adv_eps", "adv_step_fraction"])
    def test_rejects_bad_adversarial_settings(self, name: str) -> None:
        with pytest.raises(VarMixupError, match=f"{name} must be a finite number > 0"):
            FastTrainConfig(out="x", **{name: 0.0})
        with pytest.raises(VarMixupError, match=r"adv_attack must be one of \('fgsm-rs', 'n-fgsm'\), got 'pgd'"):
            FastTrainConfig(out="x", adv_attack="pgd")

    def test_the_step_defaults_to_the_attacks_own(self) -> None:
        assert FastTrainConfig(out="x").adv_step_fraction == 1.25
        assert FastTrainConfig(out="x", adv_attack="n-fgsm").adv_step_fraction == 1.0
        assert FastTrainConfig(out="x", adv_attack="n-fgsm", adv_step_fraction=0.5).to_dict()["adv_step_fraction"] == 0.5


class TestLabelSmoothingSetting:
    @pytest.mark.parametrize("method", ["erm", "mixup", "adv-train"])
    def test_zero_gives_one_hot_or_mixed_one_hot_targets(self, method: str) -> None:
        cfg = FastTrainConfig(out="unused", method=method, label_smoothing=0.0)
        y = torch.arange(8) % 4
        _, t = make_batch_transform(cfg, 4, None)(torch.rand(8, 3, 32, 32), y, torch.Generator().manual_seed(0))
        assert torch.allclose(t.sum(1), torch.ones(8))
        if method == "mixup":  # each row holds at most two labels, the own one with weight lam >= 0
            assert bool(((t > 0).sum(1) <= 2).all()) and bool((t[torch.arange(8), y] > 0).all())
        else:
            assert torch.equal(t, torch.nn.functional.one_hot(y, 4).float())


class TestFgsmRandomStart:
    def _model(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))

    def test_stays_in_the_ball_and_in_range(self) -> None:
        x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        t = torch.nn.functional.one_hot(torch.arange(6) % 4, 4).float()
        adv = fgsm_random_start(self._model(), x, t, eps=8 / 255, step_size=10 / 255,
                                generator=torch.Generator().manual_seed(2))
        assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1 and not adv.requires_grad

    def test_raises_the_loss_over_the_random_start(self) -> None:
        # a linear model: the signed-gradient step raises the loss from any start, so the average rises
        model = self._model()
        x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.5 + 0.25
        t = torch.nn.functional.one_hot(torch.arange(64) % 4, 4).float()
        adv = fgsm_random_start(model, x, t, eps=8 / 255, step_size=10 / 255,
                                generator=torch.Generator().manual_seed(4))
        noise = (torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) * 2 - 1) * 8 / 255

        def loss(images: torch.Tensor) -> float:
            with torch.no_grad():
                return float(torch.sum(-t * torch.log_softmax(model(images), 1)))

        assert loss(adv) > loss(x + noise) > 0

    def test_n_fgsm_starts_in_twice_the_ball_and_is_not_clipped_to_it(self) -> None:
        x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(7)) * 0.5 + 0.25  # no [0, 1] clipping
        t = torch.nn.functional.one_hot(torch.arange(16) % 4, 4).float()
        eps = 8 / 255
        adv = fgsm_random_start(self._model(), x, t, eps=eps, step_size=eps, start_radius=2 * eps, project=False,
                                generator=torch.Generator().manual_seed(8))
        noise = (torch.rand(x.shape, generator=torch.Generator().manual_seed(8)) * 2 - 1) * 2 * eps
        step = adv - x - noise  # exactly one signed step of eps on every pixel
        torch.testing.assert_close(step.abs(), torch.full_like(step, eps), atol=1e-6, rtol=0)
        assert float((adv - x).abs().max()) > eps and float((adv - x).abs().max()) <= 3 * eps + 1e-6

    def test_the_same_generator_seed_gives_the_same_images(self) -> None:
        x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(5))
        t = torch.full((4, 4), 0.25)
        a, b = (fgsm_random_start(self._model(), x, t, eps=0.03, step_size=0.04,
                                  generator=torch.Generator().manual_seed(6)) for _ in range(2))
        assert torch.equal(a, b)


class TestTrainFastClassifier:
    def _cfg(self, out: str, **kw: object) -> FastTrainConfig:
        return FastTrainConfig(out=out, widths=TINY, batch_size=16, epochs=2, checkpoint_every=1, **kw)

    def test_resume_equals_uninterrupted_run(self, tmp_path) -> None:
        x, y = _images(48)
        full = train_fast_classifier(self._cfg(str(tmp_path / "a")), x, y, num_classes=4, progress=False)
        train_fast_classifier(self._cfg(str(tmp_path / "b"), max_steps=4), x, y, num_classes=4, progress=False)
        resumed = train_fast_classifier(self._cfg(str(tmp_path / "b")), x, y, num_classes=4, resume=True,
                                        progress=False)
        assert full["steps"] == resumed["steps"] == 6

        def weights(run: str) -> dict[str, torch.Tensor]:
            with safe_open(str(tmp_path / run / "checkpoint.safetensors"), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}

        a, b = weights("a"), weights("b")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert all(v.dtype == torch.float16 for k, v in a.items() if v.is_floating_point())

    def test_resume_refuses_changed_settings(self, tmp_path) -> None:
        x, y = _images(48)
        train_fast_classifier(self._cfg(str(tmp_path), max_steps=2), x, y, num_classes=4, progress=False)
        with pytest.raises(VarMixupError, match=r"other settings \(lr\)"):
            train_fast_classifier(self._cfg(str(tmp_path), lr=3.0), x, y, num_classes=4, resume=True,
                                  progress=False)

    def test_report_and_checkpoint_header(self, tmp_path) -> None:
        x, y = _images(48)
        report = train_fast_classifier(self._cfg(str(tmp_path)), x, y, num_classes=4, test_images=x[:20],
                                       test_labels=y[:20], data_info={"holdout": {"indices": [1]}},
                                       progress=False)
        saved = json.loads((tmp_path / "train_report.json").read_text())
        assert saved["test_accuracy"] == report["test_accuracy"] and 0 <= report["test_accuracy"] <= 1
        with safe_open(str(tmp_path / "checkpoint.safetensors"), framework="pt") as f:
            header = json.loads(f.metadata()["varmixup_aug_classifier"])
        assert header["architecture"] == "FastCifarNet" and header["holdout"] == {"indices": [1]}
        assert header["method"] == "erm" and header["finished"]

    def test_adv_train_trains_on_perturbed_images_and_resumes_exactly(self, tmp_path) -> None:
        x, y = _images(48)
        cfg = dict(method="adv-train", label_smoothing=0.0)
        full = train_fast_classifier(self._cfg(str(tmp_path / "a"), **cfg), x, y, num_classes=4, progress=False)
        erm = train_fast_classifier(self._cfg(str(tmp_path / "e"), label_smoothing=0.0), x, y, num_classes=4,
                                    progress=False)
        train_fast_classifier(self._cfg(str(tmp_path / "b"), max_steps=3, **cfg), x, y, num_classes=4,
                              progress=False)
        resumed = train_fast_classifier(self._cfg(str(tmp_path / "b"), **cfg), x, y, num_classes=4, resume=True,
                                        progress=False)
        assert full["args"]["method"] == "adv-train" and full["args"]["adv_eps"] == pytest.approx(8 / 255)
        assert [h["mean_loss"] for h in resumed["history"]] == [h["mean_loss"] for h in full["history"]]
        assert full["history"][0]["mean_loss"] != erm["history"][0]["mean_loss"]  # other inputs than ERM's
        noisy = train_fast_classifier(self._cfg(str(tmp_path / "n"), adv_attack="n-fgsm", **cfg), x, y, num_classes=4,
                                      progress=False)
        assert noisy["args"]["adv_attack"] == "n-fgsm" and noisy["args"]["adv_step_fraction"] == 1.0
        assert noisy["history"][0]["mean_loss"] != full["history"][0]["mean_loss"]

    def test_learns_a_separable_task(self, tmp_path) -> None:
        g = torch.Generator().manual_seed(0)
        y = torch.arange(64) % 2
        x = torch.randint(0, 100, (64, 3, 32, 32), generator=g, dtype=torch.uint8)
        x[y == 1] += 120  # bright images are class 1
        cfg = FastTrainConfig(out=str(tmp_path), widths=TINY, batch_size=16, epochs=8)
        report = train_fast_classifier(cfg, x, y, num_classes=2, test_images=x, test_labels=y, progress=False)
        assert report["test_accuracy"] >= 0.95
        assert report["history"][-1]["mean_loss"] < report["history"][0]["mean_loss"]


class TestLookahead:
    def test_a_finished_run_ends_on_the_average(self, tmp_path) -> None:
        from varmixup_aug.harness.fast_training import _Run, finish_run

        x, y = _images(48)
        cfg = FastTrainConfig(out=str(tmp_path), widths=TINY, batch_size=16, epochs=2, lookahead_every=4)  # last pull at step 4 of 6
        run = _Run(cfg, x, y, 4, None)
        for _ in range(run.total):
            run.step()
        expected = {k: getattr(run.state.lookahead, f"avg{i}").clone()
                    for i, k in enumerate(run.state.lookahead.names)}
        finish_run(run, 4, None, None, None)
        state = run.net.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items())


class TestResumeWithChangedSettings:
    def test_allowed_with_a_warning(self, tmp_path) -> None:
        x, y = _images(48)
        cfg = FastTrainConfig(out=str(tmp_path), widths=TINY, batch_size=16, epochs=2, max_steps=2)
        train_fast_classifier(cfg, x, y, num_classes=4, progress=False)
        changed = FastTrainConfig(out=str(tmp_path), widths=TINY, batch_size=16, epochs=2, lr=3.0)
        with pytest.warns(UserWarning, match=r"changed settings: lr"):
            report = train_fast_classifier(changed, x, y, num_classes=4, resume=True, allow_changed_settings=True,
                                           progress=False)
        assert report["steps"] == 6


class TestPrecision:
    def test_auto_follows_the_cpu_and_is_recorded(self, tmp_path, monkeypatch) -> None:
        from varmixup_aug.harness import cpu_bf16_units, fast_training

        expected = "bf16" if cpu_bf16_units() else "fp32"
        assert FastTrainConfig(out=str(tmp_path)).precision == expected
        monkeypatch.setattr(fast_training, "cpu_bf16_units", lambda: ())
        assert FastTrainConfig(out=str(tmp_path)).precision == "fp32"
        monkeypatch.setattr(fast_training, "cpu_bf16_units", lambda: ("avx512_bf16",))
        cfg = FastTrainConfig(out=str(tmp_path), widths=TINY, batch_size=16, epochs=1)
        assert cfg.precision == "bf16" and cfg.autocast_dtype is torch.bfloat16
        x, y = _images(32)
        report = train_fast_classifier(cfg, x, y, num_classes=4, progress=False)
        assert report["precision"] == "bf16" and report["args"]["precision"] == "bf16"
        assert all(p.dtype == torch.float32 for p in FastCifarNet(widths=TINY).parameters())

    def test_bf16_without_bf16_units_warns(self, tmp_path, monkeypatch) -> None:
        from varmixup_aug.harness import EvidenceConfig, fast_training

        monkeypatch.setattr(fast_training, "cpu_bf16_units", lambda: ())
        with pytest.warns(RuntimeWarning, match=r"precision='bf16' on a CPU without bf16 units: bf16 is emulated"):
            FastTrainConfig(out=str(tmp_path), precision="bf16")
        with pytest.warns(RuntimeWarning, match=r"attack_precision='bf16' on a CPU without bf16 units"):
            EvidenceConfig(attack_precision="bf16")
        monkeypatch.setattr(fast_training, "cpu_bf16_units", lambda: ("amx_bf16",))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert FastTrainConfig(out=str(tmp_path), precision="bf16").precision == "bf16"

    def test_bf16_step_is_close_to_fp32(self, tmp_path) -> None:
        from varmixup_aug.harness.fast_training import _Run

        x, y = _images(32)
        losses = {}
        for precision in ("fp32", "bf16"):
            cfg = FastTrainConfig(out=str(tmp_path), widths=TINY, batch_size=16, epochs=1, precision=precision)
            run = _Run(cfg, x, y, 4, None)
            losses[precision] = run.step()
            assert all(p.dtype == torch.float32 for p in run.net.parameters())  # fp32 weights under autocast
        assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)

    def test_rejects_unknown_precision_and_resume_across_precisions(self, tmp_path) -> None:
        with pytest.raises(VarMixupError, match=r"precision must be one of \('auto', 'fp32', 'bf16'\), got 'fp16'"):
            FastTrainConfig(out=str(tmp_path), precision="fp16")
        x, y = _images(48)
        cfg = dict(out=str(tmp_path), widths=TINY, batch_size=16, epochs=2)
        train_fast_classifier(FastTrainConfig(**cfg, max_steps=2, precision="fp32"), x, y, num_classes=4,
                              progress=False)
        with pytest.raises(VarMixupError, match=r"other settings \(precision\)"):
            train_fast_classifier(FastTrainConfig(**cfg, precision="bf16"), x, y, num_classes=4, resume=True,
                                  progress=False)

    def test_states_saved_before_the_setting_resume_as_fp32(self) -> None:
        from varmixup_aug.harness.fast_training import _changed_settings

        assert _changed_settings({"lr": 1.0}, {"lr": 1.0, "precision": "fp32"}) == []
        assert _changed_settings({"lr": 1.0}, {"lr": 1.0, "precision": "bf16"}) == ["precision"]
