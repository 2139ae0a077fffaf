"""The adaptive attacks on tiny models: EOT-PGD and its sweep, APGD with EOT, transfer, the binarization test."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varmixup_aug import MIPredictor, VarMixupError
from varmixup_aug._random import derive_seed
from varmixup_aug.harness import (APGDResult, AutocastAttacker, BinarizationResult, BinarizedDefence, EOTPGDResult,
                                  PenultimateFeatures, TransferResult, adversarial_examples, apgd, apgd_ce_then_dlr,
                                  apgd_checkpoints, binarization_test, eot_pgd, eot_sweep, transfer_attack)

pytestmark = pytest.mark.usefixtures("one_thread")

K, EPS = 4, 8 / 255


def linear_model(seed: int = 0, scale: float = 0.5) -> nn.Module:
    """A deterministic linear classifier on (3, 8, 8) images; 8/255 flips some of its decisions, not all."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, K)).eval()
    with torch.no_grad():
        model[1].weight.mul_(scale / model[1].weight.std())
    return model.requires_grad_(False)


def images(n: int = 8, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def predicted(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def mi_pair(model: nn.Module, *, n: int = 4, seed: int = 1) -> tuple[MIPredictor, MIPredictor]:
    """An attacked MI-OL (``n`` mixes) and its independent judge (8 mixes, another seed), same pool."""
    pool = (images(40, seed=9), torch.arange(40) % K)
    return (MIPredictor(model, pool, num_classes=K, mode="ol", num_samples=n, seed=seed),
            MIPredictor(model, pool, num_classes=K, mode="ol", num_samples=8, seed=seed + 100))


def wrong(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return predicted(model, x) != y


class Counting(nn.Module):
    """Counts forward calls of the wrapped model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.inner(x)


def in_ball(adv: Tensor, x: Tensor, eps: float = EPS) -> bool:
    return bool((adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1)


def assert_seeded(attack: Callable[[MIPredictor, MIPredictor, Tensor, Tensor, int], Tensor]) -> None:
    """The attack gives the same images for one seed and others for another (fresh MI predictors each time)."""
    model = linear_model()
    x = images()
    y = predicted(model, x)

    def run(seed: int) -> Tensor:
        return attack(*mi_pair(model), x, y, seed)

    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


class TestEotPgd:
    def test_stays_in_the_ball_through_mi_and_reports_every_checkpoint(self) -> None:
        model = linear_model()
        x = images()
        mi, judge = mi_pair(model)
        res = eot_pgd(mi, x, predicted(model, x), eps=EPS, judge=judge, checkpoints=(2, 4), eot=2, restarts=2)
        assert res.checkpoints == (2, 4) and set(res.adversarials) == {2, 4}
        assert all(in_ball(res.adversarials[s], x) for s in (2, 4))
        assert res.correct[4].shape == (8,) and res.correct[4].dtype == torch.bool

    def test_lowers_the_accuracy_of_a_linear_model(self) -> None:
        model = linear_model()
        x = images(16)
        y = predicted(model, x)
        res = eot_pgd(model, x, y, eps=EPS, judge=model, checkpoints=(10,), eot=1, restarts=1)
        assert 0 < res.accuracy(10) < 0.9
        assert torch.equal(res.correct[10], ~wrong(model, res.adversarials[10], y))  # a fresh pass of the judge

    def test_one_run_answers_the_shorter_step_counts(self) -> None:
        model = linear_model()
        x = images()
        y = predicted(model, x)
        long = eot_pgd(model, x, y, eps=EPS, judge=model, checkpoints=(3, 6), eot=1, restarts=1, seed=5)
        short = eot_pgd(model, x, y, eps=EPS, judge=model, checkpoints=(3,), eot=1, restarts=1, seed=5)
        assert torch.equal(long.adversarials[3], short.adversarials[3])
        fooled_early = ~long.correct[3]
        assert bool((~long.correct[6])[fooled_early].all())  # best-so-far: a fooled image stays fooled

    def test_a_second_restart_only_adds(self) -> None:
        model = linear_model()
        x = images(16)
        y = predicted(model, x)
        one = eot_pgd(model, x, y, eps=4 / 255, judge=model, checkpoints=(2,), eot=1, restarts=1)
        two = eot_pgd(model, x, y, eps=4 / 255, judge=model, checkpoints=(2,), eot=1, restarts=2)
        assert bool((~two.correct[2])[~one.correct[2]].all())

    def test_cost_is_restarts_steps_eot_passes_and_judging_is_optional(self) -> None:
        model = linear_model()
        x = images(6)
        attacked, judge = Counting(model), Counting(model)
        res = eot_pgd(attacked, x, predicted(model, x), eps=EPS, judge=judge, checkpoints=(4, 8), eot=3, restarts=2,
                      batch_size=3)
        assert attacked.calls == 2 * 8 * 3 * 2  # restarts * steps * eot * batches
        assert res.judged_steps == (4, 8) and judge.calls == 2 * 2 * 2 + 2 * 2  # judged steps, then the verdicts
        judge.calls = 0
        res = eot_pgd(model, x, predicted(model, x), eps=EPS, judge=judge, checkpoints=(8,), eot=1, restarts=1,
                      judge_every=2, batch_size=6)
        assert res.judged_steps == (2, 4, 6, 8) and judge.calls == 4 + 1

    def test_deterministic_under_the_seed(self) -> None:
        assert_seeded(lambda mi, judge, x, y, seed: eot_pgd(mi, x, y, eps=EPS, judge=judge, checkpoints=(3,), eot=2,
                                                            restarts=1, seed=seed).adversarials[3])

    @pytest.mark.parametrize(("kwargs", "match"), [
        ({"eps": 8}, "got 8; did you mean 8/255"),
        ({"checkpoints": ()}, "checkpoints must be a non-empty sequence"),
        ({"eot": 0}, "eot must be an int >= 1"),
        ({"judge_every": 0}, "judge_every must be an int >= 1 or None"),
    ])
    def test_errors(self, kwargs: dict, match: str) -> None:
        model = linear_model()
        x = images(2)
        settings = {"eps": EPS, "checkpoints": (2,), **kwargs}
        with pytest.raises(VarMixupError, match=match):
            eot_pgd(model, x, predicted(model, x), judge=model, **settings)


class TestEOTPGDResult:
    def test_accuracy_reads_the_verdicts_of_a_checkpoint(self) -> None:
        res = EOTPGDResult((5,), {5: torch.zeros(3, 3, 2, 2)}, {5: torch.tensor([True, False, False])},
                           {5: torch.zeros(3)})
        assert res.accuracy(5) == pytest.approx(1 / 3)
        with pytest.raises(VarMixupError, match=r"step must be one of the checkpoints \[5\], got 7"):
            res.accuracy(7)


class TestEotSweep:
    def test_one_run_per_eot_read_at_every_step_count(self) -> None:
        model = linear_model()
        x = images(6)
        y = predicted(model, x)
        mi, judge = mi_pair(model)
        out = eot_sweep(mi, judge, model, x, y, eps=EPS, steps=(2, 4), eots=(1, 2), restarts=1, seed=3)
        assert sorted(out) == ["pgd2-eot1-r1", "pgd2-eot2-r1", "pgd4-eot1-r1", "pgd4-eot2-r1"]
        assert all(v["judge"].shape == v["plain"].shape == (6,) for v in out.values())
        mi, judge = mi_pair(model)  # the same streams again: the sweep's first run, repeated by hand
        ref = eot_pgd(mi, x, y, eps=EPS, judge=judge, checkpoints=(2, 4), eot=1, restarts=1,
                      seed=derive_seed(3, "eot-sweep", 1))
        assert torch.equal(out["pgd4-eot1-r1"]["judge"], ref.correct[4])
        assert torch.equal(out["pgd4-eot1-r1"]["plain"], ~wrong(model, ref.adversarials[4], y))


class TestAutocastAttacker:
    @staticmethod
    def conv_model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, K)).eval()

    def test_bf16_forward_with_a_float32_output_close_to_fp32(self) -> None:
        model, x = self.conv_model(), images()
        seen: list[torch.dtype] = []
        model[0].register_forward_hook(lambda _m, _a, out: seen.append(out.dtype))
        out = AutocastAttacker(model)(x)
        assert seen == [torch.bfloat16] and out.dtype == torch.float32
        torch.testing.assert_close(out, model(x), atol=0.05, rtol=0.05)

    def test_the_gradient_reaches_the_input_and_points_the_same_way(self) -> None:
        model, x = self.conv_model(), images()
        y = predicted(model, x)
        grads = []
        for m in (model, AutocastAttacker(model)):
            xr = x.clone().requires_grad_(True)
            F.cross_entropy(m(xr), y).backward()
            grads.append(xr.grad)
        assert grads[1].dtype == torch.float32
        assert float((grads[0].sign() == grads[1].sign()).double().mean()) > 0.9

    def test_mi_draws_are_those_of_the_wrapped_predictor(self) -> None:
        model = self.conv_model()
        x = images(3)
        plain, _ = mi_pair(model, seed=5)
        wrapped, _ = mi_pair(model, seed=5)
        torch.testing.assert_close(AutocastAttacker(wrapped)(x), plain(x), atol=0.05, rtol=0.05)
        assert torch.equal(plain.draw(predicted(model, x))["ol"], wrapped.draw(predicted(model, x))["ol"])

    def test_an_eot_pgd_through_it_stays_in_the_ball_and_is_judged_in_fp32(self) -> None:
        model = linear_model()
        x = images()
        y = predicted(model, x)
        mi, judge = mi_pair(model)
        res = eot_pgd(AutocastAttacker(mi), x, y, eps=EPS, judge=judge, checkpoints=(5,), eot=2, restarts=1)
        assert in_ball(res.adversarials[5], x) and res.adversarials[5].dtype == torch.float32
        assert res.accuracy(5) < 1.0

    def test_rejects_what_is_not_a_module_or_a_half_dtype(self) -> None:
        with pytest.raises(VarMixupError, match="model must be a torch.nn.Module, got function"):
            AutocastAttacker(lambda x: x)  # type: ignore[arg-type]
        with pytest.raises(VarMixupError, match="dtype must be torch.bfloat16 or torch.float16, got torch.float64"):
            AutocastAttacker(linear_model(), dtype=torch.float64)


class TestApgdCheckpoints:
    def test_the_papers_schedule(self) -> None:
        assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
        assert apgd_checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]
        with pytest.raises(VarMixupError, match="steps must be an int >= 1"):
            apgd_checkpoints(0)


class TestApgd:
    def test_stays_in_the_ball_through_mi(self) -> None:
        model = linear_model()
        x = images()
        mi, judge = mi_pair(model)
        res = apgd(mi, x, predicted(model, x), eps=EPS, steps=6, eot=2, judge=judge, judge_every=2)
        assert in_ball(res.adversarials, x) and res.correct is not None and res.attack == ["ce"] * 8

    def test_finds_adversarials_on_a_linear_model_as_well_as_pgd(self) -> None:
        model = linear_model()
        x = images(24)
        y = predicted(model, x)
        pgd = adversarial_examples(model, x, y, attack="pgd", eps=4 / 255, steps=20)
        for loss in ("ce", "dlr"):
            res = apgd(model, x, y, eps=4 / 255, loss=loss, steps=20, eot=1)
            assert int(wrong(model, res.adversarials, y).sum()) >= int(wrong(model, pgd, y).sum()) > 0

    def test_returns_its_own_iterate_for_every_image_never_the_clean_one(self) -> None:
        model = linear_model()
        x = images()
        y = predicted(model, x)
        y[:3] = (y[:3] + 1) % K  # already "fooled" before the attack starts: attacked all the same
        for judge in (None, model):
            res = apgd(model, x, y, eps=EPS, steps=5, eot=1, judge=judge)
            assert bool((res.adversarials != x).flatten(1).any(1).all())

    def test_keeps_the_highest_loss_without_a_judge(self) -> None:
        model = linear_model()
        x = images()
        y = predicted(model, x)
        res = apgd(model, x, y, eps=EPS, steps=8, eot=1)
        with torch.no_grad():
            torch.testing.assert_close(res.loss, F.cross_entropy(model(res.adversarials), y, reduction="none"))
            start = apgd(model, x, y, eps=EPS, steps=1, eot=1)  # the same start, one step
        assert bool((res.loss >= start.loss - 1e-6).all())

    def test_step_halving_follows_the_two_conditions(self) -> None:
        from varmixup_aug.harness.adaptive import _APGDState

        # Image 0 raised its loss at 2 of 5 steps (< 0.75 * 5): halve. Image 1 at 4 of 5 and its best rose: keep.
        # Image 2 at 4 of 5 but its step was kept last time and its best has not risen since: halve.
        # Halving restarts from the best point and forgets the momentum.
        b = 3
        x = torch.zeros(b, 1, 2, 2)
        st = _APGDState(cur=x + 0.5, prev=x + 0.4, f=torch.zeros(b), g=torch.ones_like(x), eta=torch.ones(b, 1, 1, 1),
                        best_x=x + 0.1, best_f=torch.tensor([1.0, 2.0, 3.0]), best_g=-torch.ones_like(x),
                        increases=torch.tensor([2.0, 4.0, 4.0]), reduced_last=torch.zeros(b, dtype=torch.bool),
                        best_f_last=torch.tensor([0.0, 1.0, 3.0]))
        st.checkpoint(5, 0.75)
        assert st.eta.flatten().tolist() == [0.5, 1.0, 0.5]
        assert torch.equal(st.cur[0], x[0] + 0.1) and torch.equal(st.prev[0], x[0] + 0.1)  # from the best point
        assert torch.equal(st.cur[1], x[1] + 0.5) and torch.equal(st.g[1], torch.ones(1, 2, 2))  # untouched
        assert st.reduced_last.tolist() == [True, False, True] and bool((st.increases == 0).all())
        st.increases = torch.full((b,), 5.0)  # many increases, and no gain for anyone since this checkpoint
        st.checkpoint(5, 0.75)
        assert st.eta.flatten().tolist() == [0.5, 0.5, 0.5]  # only image 1: its step was kept last time

    def test_deterministic_under_the_seed(self) -> None:
        assert_seeded(lambda mi, judge, x, y, seed: apgd(mi, x, y, eps=EPS, steps=4, eot=2, judge=judge,
                                                         seed=seed).adversarials)

    def test_errors(self) -> None:
        x = images(2)
        two = nn.Sequential(nn.Flatten(), nn.Linear(192, 2)).eval()
        with pytest.raises(VarMixupError, match="the DLR loss needs at least 3 classes"):
            apgd(two, x, torch.zeros(2, dtype=torch.long), eps=EPS, loss="dlr", steps=2, eot=1)
        with pytest.raises(VarMixupError, match="loss must be one of"):
            apgd(two, x, torch.zeros(2, dtype=torch.long), eps=EPS, loss="cw", steps=2)  # type: ignore[arg-type]


class TestAPGDResult:
    def test_accuracy_needs_a_judge(self) -> None:
        res = APGDResult(torch.zeros(2, 3, 2, 2), torch.zeros(2), ["ce", "ce"])
        with pytest.raises(VarMixupError, match="ran without a judge"):
            res.accuracy()
        assert APGDResult(res.adversarials, res.loss, res.attack, torch.tensor([True, False])).accuracy() == 0.5


class TestApgdCeThenDlr:
    def test_dlr_runs_only_where_the_judge_left_ce_correct_and_keeps_the_better(self) -> None:
        model = linear_model()
        x = images(16)
        y = predicted(model, x)
        both = apgd_ce_then_dlr(model, x, y, eps=3 / 255, judge=model, steps=6, eot=1, seed=2)
        ce = apgd(model, x, y, eps=3 / 255, loss="ce", steps=6, eot=1, judge=model, seed=2)
        assert ce.correct is not None and both.correct is not None
        fooled = ~ce.correct
        assert 0 < int(fooled.sum()) < 16
        assert torch.equal(both.adversarials[fooled], ce.adversarials[fooled])  # CE's result where it won
        assert all(both.attack[i] == "ce" for i in fooled.nonzero()[:, 0].tolist())
        assert bool(both.correct.le(ce.correct).all())  # never worse than CE alone
        assert torch.equal(both.correct, ~wrong(model, both.adversarials, y))


class TestTransferAttack:
    def test_scores_every_target_on_the_source_models_pgd(self) -> None:
        source, target = linear_model(0), linear_model(1)
        x = images(12)
        y = predicted(source, x)
        mi, _ = mi_pair(target)
        res = transfer_attack(source, x, y, eps=EPS, targets={"plain": target, "mi": mi}, seed=4)
        expected = adversarial_examples(source, x, y, attack="pgd", eps=EPS, steps=10, seed=4)
        assert torch.equal(res.adversarials, expected)
        assert torch.equal(res.correct["plain"], ~wrong(target, expected, y))
        assert res.correct["mi"].shape == (12,)
        with pytest.raises(VarMixupError, match="targets must be a non-empty mapping"):
            transfer_attack(source, x, y, eps=EPS, targets={})


class TestTransferResult:
    def test_accuracy_per_target(self) -> None:
        res = TransferResult(torch.zeros(2, 3, 2, 2), {"plain": torch.tensor([True, True])})
        assert res.accuracy("plain") == 1.0
        with pytest.raises(VarMixupError, match=r"name must be one of the targets \['plain'\]"):
            res.accuracy("mi")


class TestPenultimateFeatures:
    def test_the_input_of_the_last_linear_layer(self) -> None:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
        x = torch.rand(4, 3, 2, 2)
        feats = PenultimateFeatures(net)(x)
        torch.testing.assert_close(net[3](feats), net(x))
        torch.testing.assert_close(feats, torch.relu(net[1](x.flatten(1))))
        assert sorted(PenultimateFeatures(net).state_dict()) == ["model.1.bias", "model.1.weight", "model.3.bias",
                                                                  "model.3.weight"]

    def test_errors(self) -> None:
        with pytest.raises(VarMixupError, match="has no nn.Linear layer"):
            PenultimateFeatures(nn.Flatten())
        with pytest.raises(VarMixupError, match="layer must be a module of model"):
            PenultimateFeatures(nn.Sequential(nn.Flatten(), nn.Linear(2, 2)), layer=nn.Linear(2, 2))


class TestBinarizedDefence:
    def test_plain_classifier_gets_the_binary_readout_on_its_features(self) -> None:
        model = linear_model()
        readout = nn.Linear(192, 2)
        x = images(3)
        out = BinarizedDefence(model, readout)(x)
        torch.testing.assert_close(out, torch.log_softmax(readout(x.flatten(1)), 1))

    def test_mi_keeps_the_draw_rule_and_averages_over_the_mixes(self) -> None:
        model = linear_model()
        mi, _ = mi_pair(model, n=5)
        readout = nn.Linear(192, 2)
        x = images(3)
        out = BinarizedDefence(mi, readout, seed=7)(x)
        # The same draws by hand: MI-OL's rule from the model's prediction, from a generator of the same seed.
        idx = mi.draw(predicted(model, x), generator=torch.Generator().manual_seed(7))["ol"]
        assert bool((mi.pool_labels[idx] != predicted(model, x)[:, None]).all())
        mixes = 0.5 * x[:, None] + 0.5 * mi.pool_images[idx]  # lam 0.5
        probs = torch.softmax(readout(mixes.flatten(2)), 2).mean(1)
        torch.testing.assert_close(out.exp(), probs)

    def test_errors(self) -> None:
        model = linear_model()
        pool = (images(8), torch.arange(8) % K)
        combined = MIPredictor(model, pool, num_classes=K, mode="combined", num_samples=2)
        with pytest.raises(VarMixupError, match="mode 'pl' or 'ol'"):
            BinarizedDefence(combined, nn.Linear(192, 2))
        with pytest.raises(VarMixupError, match=r"readout must be an nn.Linear\(D, 2\)"):
            BinarizedDefence(model, nn.Linear(192, 3))


def strong_attack(model: nn.Module, x: Tensor, y: Tensor, judge: nn.Module) -> Tensor:
    return eot_pgd(model, x, y, eps=EPS, judge=judge, checkpoints=(20,), eot=2, restarts=1).adversarials[20]


def broken_attack(model: nn.Module, x: Tensor, y: Tensor, judge: nn.Module) -> Tensor:
    return x.clone()  # zero steps: the clean image back


class OffsetAndSize(nn.Module):
    """Features around one image ``x0``: the offset from it, and its squared size, repeated so that a readout
    fitted on corners against inner points keys on the size (as MI's noisy features of a real network do)."""

    def __init__(self, x0: Tensor, copies: int = 256) -> None:
        super().__init__()
        self.x0, self.copies = x0, copies

    def forward(self, x: Tensor) -> Tensor:
        d = (x - self.x0).flatten(1)
        return torch.cat([d, d.square().sum(1, keepdim=True).expand(-1, self.copies) / EPS], 1)


class TestBinarizationTest:
    @pytest.mark.parametrize("randomised", [False, True])
    def test_a_strong_attack_passes_and_a_broken_one_fails(self, randomised: bool) -> None:
        model = linear_model()
        x = images(3)
        y = predicted(model, x)
        defence, judge = mi_pair(model) if randomised else (model, None)
        settings = {"eps": EPS, "judge": judge, "n_inner": 30, "boundary_repeats": 4, "seed": 1}
        strong = binarization_test(defence, x, y, strong_attack, **settings)
        # Validity is a fresh judge pass, so under MI a task can fail it (the third here); never without MI.
        assert int(strong.valid.sum()) == (2 if randomised else 3)
        assert strong.pass_rate == 1.0 and strong.passed()
        ok = strong.valid
        assert bool((strong.p_clean[ok] < 0.5).all() & (strong.p_boundary[ok] > 0.5).all())
        assert bool(strong.clean_correct.all())
        broken = binarization_test(defence, x, y, broken_attack, **settings)
        assert torch.equal(broken.valid, strong.valid)  # the same tasks, seeded
        assert broken.pass_rate == 0.0 and not broken.passed()

    def test_decoy_corners_make_random_corners_fail_and_a_strong_attack_still_passes(self) -> None:
        for i, x in enumerate(images(2).split(1)):
            features = OffsetAndSize(x)
            model = nn.Sequential(features, nn.Linear(features(x).shape[1], K)).eval().requires_grad_(False)
            y = predicted(model, x)
            settings = {"eps": EPS, "features": features, "n_inner": 30, "boundary_repeats": 4, "n_random": 16,
                        "seed": i}
            easy = binarization_test(model, x, y, strong_attack, **settings)
            assert bool(easy.valid.all() & easy.random_hit.all())  # the readout keys on the offset's size
            hard = binarization_test(model, x, y, strong_attack, n_decoys=60, **settings)
            assert bool(hard.valid.all()) and not bool(hard.random_hit.any())  # on its direction
            assert hard.pass_rate == 1.0
            assert binarization_test(model, x, y, broken_attack, n_decoys=60, **settings).pass_rate == 0.0

    def test_with_decoys_the_level_clears_the_held_out_corners(self) -> None:
        from varmixup_aug.harness.adaptive import _check_bin_settings, _fit_task, _points
        x = images(1)
        features = OffsetAndSize(x)
        model = nn.Sequential(features, nn.Linear(features(x).shape[1], K)).eval().requires_grad_(False)
        # one decoy and a short fit: the readout still keys on the size, so unseen corners score high
        s = _check_bin_settings(EPS, 30, 1, 2, 0.75, 0.05, 16, 3, 1)
        inner, boundary, decoys, held_out = _points(x[0], s, torch.Generator().manual_seed(0))
        assert held_out.shape[0] == 8 and decoys.shape[0] == 1
        probe = BinarizedDefence(model, nn.Linear(1, 2), features=features)
        for placed_from, cleared in ((held_out[:0], False), (held_out, True)):
            fit = _fit_task(probe, x, inner, decoys, placed_from, boundary, s)
            assert fit is not None
            w, b, pick, _ = fit
            held, clean, bound = (features(p).double() @ w + b for p in (held_out, x, boundary[pick:]))  # no draws
            assert bool((held < 0).all()) == cleared and float(clean) < 0 and float(bound) > 0

    def test_no_decoys_is_the_original_task(self) -> None:
        model = linear_model()
        x = images(2)
        y = predicted(model, x)
        settings = {"eps": EPS, "n_inner": 20, "boundary_repeats": 2, "seed": 3}
        a = binarization_test(model, x, y, strong_attack, **settings)
        b = binarization_test(model, x, y, strong_attack, n_decoys=0, **settings)
        assert all(torch.equal(u, v) for u, v in zip(vars(a).values(), vars(b).values(), strict=True)
                   if not u.isnan().any())

    def test_refuses_an_attack_that_leaves_the_ball(self) -> None:
        model = linear_model()
        x = images(1)

        def too_far(m: nn.Module, xx: Tensor, yy: Tensor, judge: nn.Module) -> Tensor:
            return (xx + 2 * EPS).clamp(0, 1)

        with pytest.raises(VarMixupError, match="it must stay within eps and in"):
            binarization_test(model, x, predicted(model, x), too_far, eps=EPS, n_inner=10)

    def test_errors(self) -> None:
        model = linear_model()
        mi, _ = mi_pair(model)
        x = images(1)
        with pytest.raises(VarMixupError, match="judge must be an MIPredictor"):
            binarization_test(mi, x, predicted(model, x), broken_attack, eps=EPS)
        with pytest.raises(VarMixupError, match="closeness must be"):
            binarization_test(model, x, predicted(model, x), broken_attack, eps=EPS, closeness=1.0)
        with pytest.raises(VarMixupError, match="n_decoys must be"):
            binarization_test(model, x, predicted(model, x), broken_attack, eps=EPS, n_decoys=-1)
        with pytest.raises(VarMixupError, match="attack_fn must be callable"):
            binarization_test(model, x, predicted(model, x), None, eps=EPS)  # type: ignore[arg-type]


class TestBinarizationResult:
    def test_pass_rate_counts_only_valid_images(self) -> None:
        t, f = torch.tensor([True, True, False]), torch.tensor([True, False, True])
        z = torch.zeros(3)
        res = BinarizationResult(t, f, ~t, t, z, z, z, torch.zeros(3, 2))
        assert res.pass_rate == 0.5 and not res.passed() and res.passed(threshold=0.5)
        none = BinarizationResult(~t & ~f, f, f, f, z, z, z, torch.zeros(3, 2))
        assert none.pass_rate is None and not none.passed()
