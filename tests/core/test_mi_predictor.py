"""Tests of Mixup Inference (MIPredictor): the average, the draws, batching, gradients, attacks, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from varmixup_aug._errors import VarMixupError
from varmixup_aug._mi import MIPredictor

SHAPE = (1, 3, 3)
D = 9


def linear_model(k: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Flatten + Linear with weights from a seeded generator (no global RNG), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(D, k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, D, generator=g))
        lin.bias.copy_(torch.randn(k, generator=g))
    return nn.Sequential(nn.Flatten(), lin).to(dtype).eval()


def random_pool(k: int, per_class: int = 4, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Random [0, 1] images; labels interleaved (0, 1, .., k-1, 0, ..) so the pool has to be sorted."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(k * per_class, *SHAPE, generator=g), torch.arange(k).repeat(per_class)


def class_value(c: Tensor | int, k: int) -> Tensor:
    return 0.1 + 0.8 * torch.as_tensor(c, dtype=torch.float32) / (k - 1)


def constant_pool(k: int, per_class: int = 3) -> tuple[Tensor, Tensor]:
    """Every image of class c is the constant image class_value(c)."""
    labels = torch.arange(k).repeat(per_class)
    return class_value(labels, k).view(-1, 1, 1, 1).expand(-1, *SHAPE).clone(), labels


def inputs(b: int, seed: int = 2) -> Tensor:
    return torch.rand(b, *SHAPE, generator=torch.Generator().manual_seed(seed))


class Recorder(nn.Module):
    """A linear classifier that keeps every batch it is called on."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.net = linear_model(k)
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return self.net(x)


class PairDataset(Dataset):
    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])


def reference(mi: MIPredictor, x: Tensor, draws: dict[str, Tensor]) -> Tensor:
    """Naive MI: one model call per input and round, then the combined rule per input."""
    def prep(img: Tensor) -> Tensor:
        if mi.norm_mean is None:
            return img
        return (img - mi.norm_mean) / mi.norm_std

    rows = []
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        avg = {}
        for key, lam in (("pl", mi.lam), ("ol", mi.lam_ol)):
            if key in draws:
                probs = [
                    mi.model(prep(lam * xb + (1 - lam) * mi.pool_images[i : i + 1])).softmax(1)
                    for i in draws[key][b].tolist()
                ]
                avg[key] = torch.cat(probs).mean(0)
        if mi.mode == "combined":
            conf = mi.model(prep(xb)).softmax(1).max()
            rows.append(avg["pl"] if conf - avg["pl"].max() < mi.threshold else avg["ol"])
        else:
            rows.append(avg[mi.mode])
    return torch.stack(rows)


def y_hat_of(mi: MIPredictor, x: Tensor) -> Tensor:
    with torch.no_grad():
        logits = mi.model(x if mi.norm_mean is None else (x - mi.norm_mean) / mi.norm_std)
    return logits.argmax(1)


class TestMIPredictor:
    # ---- the MI average ----------------------------------------------------------------------

    def test_pl_equals_analytic_value(self) -> None:
        # Pool images of a class are all the same constant image, so every PL round sees the same mix.
        k, lam = 3, 0.6
        model = linear_model(k)
        mi = MIPredictor(model, constant_pool(k), num_classes=k, mode="pl", num_samples=5, lam=lam, seed=0)
        x = inputs(6)
        y = model(x).argmax(1)
        xs = class_value(y, k).view(-1, 1, 1, 1)
        expected = model(lam * x + (1 - lam) * xs).softmax(1)
        torch.testing.assert_close(mi(x).exp(), expected, rtol=1e-5, atol=1e-6)

    def test_ol_equals_analytic_value(self) -> None:
        # Two classes: MI-OL always mixes with the one other class.
        k, lam = 2, 0.5
        model = linear_model(k, seed=3)
        mi = MIPredictor(model, constant_pool(k), num_classes=k, mode="ol", num_samples=4, lam=lam, seed=0)
        x = inputs(6)
        y = model(x).argmax(1)
        xs = class_value(1 - y, k).view(-1, 1, 1, 1)
        expected = model(lam * x + (1 - lam) * xs).softmax(1)
        torch.testing.assert_close(mi(x).exp(), expected, rtol=1e-5, atol=1e-6)

    def test_ol_equals_class_weighted_average(self) -> None:
        # Three classes: the average is sum_c (n_c / N) softmax(mix with class c), n_c from the draws.
        k, lam, n = 3, 0.5, 7
        model = linear_model(k)
        mi = MIPredictor(model, constant_pool(k), num_classes=k, mode="ol", num_samples=n, lam=lam)
        x = inputs(5)
        draws = mi.draw(model(x).argmax(1), generator=torch.Generator().manual_seed(4))
        counts = nn.functional.one_hot(mi.pool_labels[draws["ol"]], k).sum(1).float()  # (B, K)
        per_class = torch.stack(
            [model(lam * x + (1 - lam) * class_value(c, k)).softmax(1) for c in range(k)], 1
        )  # (B, K classes mixed, K outputs)
        expected = (counts[:, :, None] / n * per_class).sum(1)
        torch.testing.assert_close(mi(x, draws=draws).exp(), expected, rtol=1e-5, atol=1e-6)

    def test_lam_one_is_plain_softmax(self) -> None:
        model = linear_model(3)
        mi = MIPredictor(model, random_pool(3), num_classes=3, mode="combined", lam=1.0, num_samples=3, seed=0)
        x = inputs(4)
        torch.testing.assert_close(mi(x), model(x).log_softmax(1), rtol=1e-5, atol=1e-6)

    # ---- the draws ---------------------------------------------------------------------------

    @pytest.mark.parametrize("mode", ["pl", "ol"])
    def test_model_sees_only_allowed_classes(self, mode: str) -> None:
        # Pool images encode their class in their (constant) pixels; decode what each mix held.
        k, lam, n, b = 4, 0.5, 6, 8
        rec = Recorder(k).eval()
        mi = MIPredictor(rec, constant_pool(k), num_classes=k, mode=mode, num_samples=n, lam=lam, seed=0,
                         chunk_size=None)
        x = inputs(b)
        mi(x)
        plain, mixes = rec.seen
        assert torch.equal(plain, x)
        y = rec.net(x).argmax(1)
        xs = (mixes.view(b, n, *SHAPE) - lam * x[:, None]) / (1 - lam)
        assert xs.flatten(2).std(2).max() < 1e-5  # each mix held one constant pool image
        drawn = torch.round((xs.flatten(2).mean(2) - 0.1) / 0.8 * (k - 1)).long()  # (B, N)
        if mode == "pl":
            assert torch.equal(drawn, y[:, None].expand(b, n))
        else:
            assert not (drawn == y[:, None]).any()

    def test_draw_distribution(self) -> None:
        k, n = 4, 400
        mi = MIPredictor(linear_model(k), random_pool(k, per_class=3), num_classes=k, mode="combined",
                         num_samples=n, num_samples_ol=n)
        y = torch.tensor([0, 1, 2, 3])
        d = mi.draw(y, generator=torch.Generator().manual_seed(0))
        assert d["pl"].shape == d["ol"].shape == (4, n)
        pl_labels, ol_labels = mi.pool_labels[d["pl"]], mi.pool_labels[d["ol"]]
        assert torch.equal(pl_labels, y[:, None].expand(4, n))
        assert not (ol_labels == y[:, None]).any()
        for b in range(4):
            # PL reaches all 3 images of the class; OL reaches every other class, roughly uniformly.
            assert d["pl"][b].unique().numel() == 3
            freq = torch.bincount(ol_labels[b], minlength=k).float() / n
            others = [c for c in range(k) if c != b]
            assert (freq[others] - 1 / 3).abs().max() < 0.1
        # pool_order maps sorted positions back to the given pool.
        images, labels = random_pool(k, per_class=3)
        assert torch.equal(images[mi.pool_order], mi.pool_images)
        assert torch.equal(labels[mi.pool_order], mi.pool_labels)

    def test_ol_with_empty_class_warns_and_skips_it(self) -> None:
        images, labels = random_pool(3)
        keep = labels != 2
        with pytest.warns(UserWarning, match=r"no images of classes \[2\]"):
            mi = MIPredictor(linear_model(3), (images[keep], labels[keep]), num_classes=3, mode="ol",
                             num_samples=50)
        y = torch.tensor([0, 1, 2])
        drawn = mi.pool_labels[mi.draw(y, generator=torch.Generator().manual_seed(0))["ol"]]
        assert torch.equal(drawn[0], torch.ones(50, dtype=torch.long))
        assert torch.equal(drawn[1], torch.zeros(50, dtype=torch.long))
        assert set(drawn[2].tolist()) == {0, 1}  # y_hat=2 has no images: both other classes

    # ---- batching, chunking, reproducibility -------------------------------------------------

    @pytest.mark.parametrize("mode", ["pl", "ol", "combined"])
    def test_batched_equals_naive_loop(self, mode: str) -> None:
        k = 3
        mi = MIPredictor(linear_model(k), random_pool(k), num_classes=k, mode=mode, num_samples=4,
                         num_samples_ol=3, lam=0.6, lam_ol=0.4, chunk_size=5, threshold=0.05,
                         normalize=((0.4,), (0.2,)), seed=7, deterministic=True)
        x = inputs(5)
        draws = mi.draw(y_hat_of(mi, x), generator=torch.Generator().manual_seed(7))
        expected = reference(mi, x, draws)
        torch.testing.assert_close(mi(x, draws=draws).exp(), expected, rtol=1e-5, atol=1e-6)
        # deterministic=True re-creates the seed-7 generator each call: the same draws as above.
        torch.testing.assert_close(mi(x).exp(), expected, rtol=1e-5, atol=1e-6)

    def test_combined_rule(self) -> None:
        k = 3
        model = linear_model(k, seed=5)
        pool = random_pool(k)
        kw = dict(num_classes=k, num_samples=4, num_samples_ol=6, lam=0.5, lam_ol=0.4)
        x = inputs(16)
        comb = MIPredictor(model, pool, mode="combined", **kw)
        draws = comb.draw(model(x).argmax(1), generator=torch.Generator().manual_seed(0))
        pl = MIPredictor(model, pool, mode="pl", **kw)(x, draws=draws)
        ol = MIPredictor(model, pool, mode="ol", **{**kw, "lam": 0.4, "num_samples": 6})(x, draws=draws)
        with torch.no_grad():
            gap = model(x).softmax(1).amax(1) - pl.exp().amax(1)
        sorted_gap = gap.sort().values
        threshold = float(sorted_gap[7:9].mean())  # halfway between two gaps, far from both
        comb.threshold = threshold
        use_pl = gap < threshold
        assert 0 < int(use_pl.sum()) < len(x)  # both branches taken
        out = comb(x, draws=draws)
        torch.testing.assert_close(out[use_pl], pl[use_pl])
        torch.testing.assert_close(out[~use_pl], ol[~use_pl])
        comb.threshold = 2.0  # gap <= 1 always: all PL
        torch.testing.assert_close(comb(x, draws=draws), pl)
        comb.threshold = -2.0  # all OL
        torch.testing.assert_close(comb(x, draws=draws), ol)

    @pytest.mark.parametrize("mode", ["ol", "combined"])
    def test_chunked_equals_unchunked(self, mode: str) -> None:
        kw = dict(num_classes=3, mode=mode, num_samples=5, seed=3, deterministic=True)
        model, pool, x = linear_model(3), random_pool(3), inputs(7)
        whole = MIPredictor(model, pool, chunk_size=None, **kw)(x)
        for chunk in (1, 4, 13, 1000):
            torch.testing.assert_close(MIPredictor(model, pool, chunk_size=chunk, **kw)(x), whole,
                                       rtol=1e-6, atol=1e-7)

    def test_deterministic_and_fresh_draws(self) -> None:
        model, pool, x = linear_model(3), random_pool(3), inputs(4)
        det = MIPredictor(model, pool, num_classes=3, num_samples=3, seed=0, deterministic=True)
        assert torch.equal(det(x), det(x))
        assert torch.equal(det.predict_proba(x), det.predict_proba(x))
        gen = MIPredictor(model, pool, num_classes=3, num_samples=3, generator=torch.Generator().manual_seed(0),
                          deterministic=True)
        assert torch.equal(gen(x), gen(x))
        for fresh in (MIPredictor(model, pool, num_classes=3, num_samples=3, seed=0),
                      MIPredictor(model, pool, num_classes=3, num_samples=3)):
            assert not torch.equal(fresh(x), fresh(x))
        # A seed makes the stream of fresh draws reproducible.
        a = MIPredictor(model, pool, num_classes=3, num_samples=3, seed=5)
        b = MIPredictor(model, pool, num_classes=3, num_samples=3, seed=5)
        assert torch.equal(torch.stack([a(x), a(x)]), torch.stack([b(x), b(x)]))

    # ---- outputs, gradients, devices, pool forms ---------------------------------------------

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_output_is_log_probs(self, dtype: torch.dtype) -> None:
        mi = MIPredictor(linear_model(3, dtype=dtype), random_pool(3), num_classes=3, mode="combined",
                         num_samples=3, seed=0)
        assert mi.pool_images.dtype == dtype  # pool follows the model's dtype
        x = inputs(4).to(dtype)
        out = mi(x)
        assert out.shape == (4, 3) and out.dtype == dtype and out.device == x.device
        torch.testing.assert_close(out.exp().sum(1), torch.ones(4, dtype=dtype))
        torch.testing.assert_close(out.softmax(1), out.exp())
        proba = mi.predict_proba(x)
        assert proba.dtype == dtype and not proba.requires_grad
        torch.testing.assert_close(proba.sum(1), torch.ones(4, dtype=dtype))
        pred = mi.predict(x)
        assert pred.shape == (4,) and pred.dtype == torch.long

    @pytest.mark.parametrize("mode", ["pl", "ol", "combined"])
    def test_gradients_reach_input(self, mode: str) -> None:
        mi = MIPredictor(linear_model(3), random_pool(3), num_classes=3, mode=mode, num_samples=3, seed=0,
                         chunk_size=4, normalize=((0.5, ), (0.25, )))
        x = inputs(4).requires_grad_()
        nn.functional.cross_entropy(mi(x), torch.tensor([0, 1, 2, 0])).backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert all(p.grad is not None for p in mi.model.parameters())

    def test_normalize_applied_after_mixing(self) -> None:
        mean, std = (0.3,), (0.5,)
        model = linear_model(3)

        class Normalized(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, x: Tensor) -> Tensor:
                return self.model((x - mean[0]) / std[0])

        kw = dict(num_classes=3, num_samples=4, seed=1, deterministic=True)
        pool, x = random_pool(3), inputs(5)
        a = MIPredictor(model, pool, normalize=(mean, std), **kw)(x)
        b = MIPredictor(Normalized().eval(), pool, **kw)(x)
        torch.testing.assert_close(a, b)

    def test_module_registration_and_buffers(self) -> None:
        model = linear_model(3)
        mi = MIPredictor(model, random_pool(3), num_classes=3, normalize=((0.5,), (0.5,)))
        assert mi.model is model
        assert {n for n, _ in mi.named_parameters()} == {"model.1.weight", "model.1.bias"}
        assert set(mi.state_dict()) == {"model.1.weight", "model.1.bias"}  # pool buffers are not persistent
        assert {"pool_images", "pool_labels", "class_counts", "class_offsets", "norm_mean"} <= {
            n for n, _ in mi.named_buffers()}
        assert mi.class_counts.tolist() == [4, 4, 4] and mi.class_offsets.tolist() == [0, 4, 8]
        mi.double()
        assert mi.pool_images.dtype == torch.float64 and mi.norm_mean.dtype == torch.float64
        assert mi(inputs(2).double()).dtype == torch.float64

    def test_dataset_pool_equals_tensor_pool(self) -> None:
        images, labels = random_pool(3)
        kw = dict(num_classes=3, mode="combined", num_samples=4, seed=2, deterministic=True)
        from_pair = MIPredictor(linear_model(3), (images, labels), **kw)
        from_data = MIPredictor(linear_model(3), PairDataset(images, labels), pool_batch_size=5, **kw)
        assert torch.equal(from_pair.pool_images, from_data.pool_images)
        assert torch.equal(from_pair.pool_labels, from_data.pool_labels)
        x = inputs(4)
        assert torch.equal(from_pair(x), from_data(x))

    def test_train_mode_switched_to_eval_with_warning(self) -> None:
        model = linear_model(3).train()
        with pytest.warns(UserWarning, match="train mode; switching it to eval"):
            mi = MIPredictor(model, random_pool(3), num_classes=3, num_samples=2)
        assert not model.training and not mi.training
        mi.train()
        with pytest.warns(UserWarning, match="train mode; switching it to eval"):
            mi(inputs(2))
        assert not model.training
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mi(inputs(2))  # no warning once in eval mode

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cuda_matches_cpu(self) -> None:
        kw = dict(num_classes=3, mode="combined", num_samples=5, seed=4, deterministic=True, chunk_size=6)
        mi = MIPredictor(linear_model(3), random_pool(3), **kw)
        x = inputs(6)
        y = y_hat_of(mi, x)
        cpu_draws = mi.draw(y, generator=torch.Generator().manual_seed(9))
        cpu_out = mi(x)
        mi.to("cuda")
        assert mi.pool_images.is_cuda and mi.class_counts.is_cuda
        cuda_draws = mi.draw(y.cuda(), generator=torch.Generator().manual_seed(9))
        for key in ("pl", "ol"):
            assert cuda_draws[key].is_cuda
            assert torch.equal(cuda_draws[key].cpu(), cpu_draws[key])
        out = mi(x.cuda())
        assert out.is_cuda
        torch.testing.assert_close(out.cpu(), cpu_out, rtol=1e-4, atol=1e-5)
        # Built straight on CUDA (pool follows the model's device).
        on_cuda = MIPredictor(linear_model(3).cuda(), random_pool(3), **kw)
        assert on_cuda.pool_images.is_cuda
        torch.testing.assert_close(on_cuda(x.cuda()).cpu(), cpu_out, rtol=1e-4, atol=1e-5)

    # ---- attacks -----------------------------------------------------------------------------

    def test_torchattacks_lower_accuracy(self) -> None:
        torchattacks = pytest.importorskip("torchattacks")
        g = torch.Generator().manual_seed(0)
        pattern = torch.ones(1, 4, 4)
        pattern[..., 2:] = -1  # class 0: bright left half, class 1: bright right half

        def make(n: int) -> tuple[Tensor, Tensor]:
            y = torch.randint(0, 2, (n,), generator=g)
            sign = (1 - 2 * y).float().view(-1, 1, 1, 1)
            x = 0.5 + 0.2 * sign * pattern + 0.05 * torch.randn(n, 1, 4, 4, generator=g)
            return x.clamp(0, 1), y

        train_x, train_y = make(200)
        test_x, test_y = make(32)
        lin = nn.Linear(16, 2)
        with torch.no_grad():
            lin.weight.copy_(0.1 * torch.randn(2, 16, generator=g))
            lin.bias.zero_()
        model = nn.Sequential(nn.Flatten(), lin)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(train_x), train_y).backward()
            opt.step()
        model.eval()
        mi = MIPredictor(model, make(40), num_classes=2, mode="ol", num_samples=8, lam=0.7, seed=0)
        clean = (mi.predict(test_x) == test_y).float().mean().item()
        assert clean >= 0.9
        with torch.random.fork_rng():
            torch.manual_seed(0)  # torchattacks' random start uses the global RNG
            attacks = [
                torchattacks.PGD(mi, eps=0.3, alpha=0.05, steps=10),
                torchattacks.EOTPGD(mi, eps=0.3, alpha=0.05, steps=10, eot_iter=2),
            ]
            for attack in attacks:
                adv = attack(test_x, test_y)
                assert adv.shape == test_x.shape and (adv - test_x).abs().max() <= 0.3 + 1e-6
                attacked = (mi.predict(adv) == test_y).float().mean().item()
                assert attacked < clean, type(attack).__name__
        assert not mi.training and not model.training

    # ---- errors ------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"num_samples": 0}, r"num_samples must be an int >= 1"),
            ({"num_samples": 2.0}, r"num_samples must be an int >= 1"),
            ({"num_samples_ol": 0, "mode": "combined"}, r"num_samples_ol must be an int >= 1"),
            ({"lam": 0.0}, r"lam must be a number in \(0, 1\]"),
            ({"lam": 1.5}, r"lam must be a number in \(0, 1\].*got 1.5"),
            ({"lam_ol": float("nan"), "mode": "combined"}, r"lam_ol must be a number in \(0, 1\]"),
            ({"mode": "mixed"}, r"mode must be one of .*got 'mixed'"),
            ({"num_classes": 1}, r"num_classes must be an int >= 2"),
            ({"chunk_size": 0}, r"chunk_size must be an int >= 1 or None"),
            ({"threshold": float("inf")}, r"threshold must be a finite number"),
            ({"seed": 1, "generator": torch.Generator()}, r"pass seed or generator, not both"),
            ({"generator": 3}, r"generator must be a CPU torch.Generator"),
            ({"deterministic": 1}, r"deterministic must be True or False"),
            ({"normalize": ((0.5, 0.5), (0.5, 0.5))}, r"normalize mean needs 1 value \(one per channel\), got 2"),
            ({"normalize": ((0.5,), (0.0,))}, r"normalize needs finite mean and std > 0"),
            ({"normalize": (0.5,)}, r"normalize must be \(mean, std\)"),
            ({"pool_batch_size": 0}, r"pool_batch_size must be an int >= 1"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict, match: str) -> None:
        kw = {"num_classes": 3, **kwargs}
        with pytest.raises(VarMixupError, match=match):
            MIPredictor(linear_model(3), random_pool(3), **kw)

    def test_bad_model(self) -> None:
        with pytest.raises(VarMixupError, match=r"model must be a torch.nn.Module, got function"):
            MIPredictor(lambda x: x, random_pool(3), num_classes=3)

    @pytest.mark.parametrize("mode", ["pl", "combined"])
    def test_pool_missing_class_for_pl(self, mode: str) -> None:
        images, labels = random_pool(4)
        keep = labels != 3
        with pytest.raises(VarMixupError, match=rf"pool has no images of classes \[3\]; mode='{mode}'"):
            MIPredictor(linear_model(4), (images[keep], labels[keep]), num_classes=4, mode=mode)

    def test_pool_with_one_class_for_ol(self) -> None:
        images, labels = random_pool(3)
        keep = labels == 1
        with pytest.raises(VarMixupError, match=r"fewer than 2 classes \(missing \[0, 2\]\); mode='ol'"):
            MIPredictor(linear_model(3), (images[keep], labels[keep]), num_classes=3, mode="ol")

    @pytest.mark.parametrize(
        ("pool", "match"),
        [
            ((torch.rand(0, *SHAPE), torch.zeros(0, dtype=torch.long)), r"pool is empty"),
            (PairDataset(torch.rand(0, *SHAPE), torch.zeros(0)), r"pool is empty"),
            ((torch.rand(6, *SHAPE), torch.tensor([0, 1, 2, 0, 1, 3])),
             r"pool labels must lie in \[0, num_classes\) = \[0, 3\), got values in \[0, 3\]"),
            ((torch.rand(6, *SHAPE), torch.tensor([0, 1, 2, 0, 1, -1])), r"pool labels must lie in.*\[-1, 2\]"),
            ((torch.rand(6, *SHAPE), torch.zeros(6)), r"pool labels must be integer class indices"),
            ((torch.rand(6, *SHAPE), torch.zeros(5, dtype=torch.long)), r"pool labels must have shape \(P,\) = \(6,\)"),
            (((torch.rand(6, *SHAPE) * 255).long(), torch.arange(6) % 3),
             r"pool images must be floating point or uint8 \(read as x / 255\), got torch.int64"),
            ((torch.rand(6, *SHAPE) * 2 - 1, torch.arange(6) % 3), r"pool images must lie in pixel space \[0, 1\]"),
            ((torch.full((6, *SHAPE), float("nan")), torch.arange(6) % 3), r"pool images contain NaN"),
            ((torch.rand(6, 9), torch.arange(6) % 3), r"pool images must have shape \(P, C, H, W\)"),
            (42, r"pool must be a map-style Dataset .*got int"),
            ([(torch.rand(1, 3, 3), 0), (torch.rand(1, 2, 2), 1)], r"pool items could not be batched"),
        ],
    )
    def test_bad_pool(self, pool: object, match: str) -> None:
        with pytest.raises(VarMixupError, match=match):
            MIPredictor(linear_model(3), pool, num_classes=3)

    def test_pool_of_pil_images(self) -> None:
        image = pytest.importorskip("PIL.Image")
        pool = [(image.new("L", (3, 3)), i % 3) for i in range(6)]
        with pytest.raises(VarMixupError, match=r"pool items could not be batched.*ToTensor"):
            MIPredictor(linear_model(3), pool, num_classes=3)

    @pytest.mark.parametrize(
        ("x", "match"),
        [
            (torch.rand(2, 1, 4, 4), r"x has images of shape \(1, 4, 4\) but the pool images are \(1, 3, 3\)"),
            ((torch.rand(2, *SHAPE) * 255).byte(), r"x must be floating point in \[0, 1\], got torch.uint8"),
            (torch.full((2, *SHAPE), float("nan")), r"x contains NaN or Inf"),
            (torch.rand(*SHAPE), r"x must have shape \(B, C, H, W\)"),
            (torch.rand(0, *SHAPE), r"x must have shape \(B, C, H, W\) with B >= 1"),
            ([[0.0]], r"x must be a tensor \(B, C, H, W\), got list"),
        ],
    )
    def test_bad_input(self, x: object, match: str) -> None:
        mi = MIPredictor(linear_model(3), random_pool(3), num_classes=3, num_samples=2)
        with pytest.raises(VarMixupError, match=match):
            mi(x)

    def test_model_output_width_checked(self) -> None:
        mi = MIPredictor(linear_model(4), random_pool(3), num_classes=3, num_samples=2)
        with pytest.raises(VarMixupError, match=r"model's output must have shape \(B, num_classes\) = \(2, 3\), "
                                                r"got \(2, 4\)"):
            mi(inputs(2))

    def test_bad_draws(self) -> None:
        mi = MIPredictor(linear_model(3), random_pool(3), num_classes=3, mode="combined", num_samples=2)
        x = inputs(2)
        good = mi.draw(torch.tensor([0, 1]))
        with pytest.raises(VarMixupError, match=r"draws\['ol'\] must be an integer tensor of shape \(B, N\) = "
                                                r"\(2, 2\) for mode='combined', got NoneType"):
            mi(x, draws={"pl": good["pl"]})
        with pytest.raises(VarMixupError, match=r"draws\['pl'\] must index the pool, \[0, 12\)"):
            mi(x, draws={**good, "pl": good["pl"] + 100})
        with pytest.raises(VarMixupError, match=r"draws must be a dict"):
            mi(x, draws=good["pl"])
        with pytest.raises(VarMixupError, match=r"y_hat must be a \(B,\) integer tensor"):
            mi.draw(torch.zeros(2))
        with pytest.raises(VarMixupError, match=r"y_hat must lie in \[0, num_classes\) = \[0, 3\)"):
            mi.draw(torch.tensor([0, 3]))
