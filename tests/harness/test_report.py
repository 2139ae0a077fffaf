"""The robustness report: its settings, the whole evaluation, the markdown table, merged results files, committed results."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import Tensor

from varmixup_aug import VarMixupError
from varmixup_aug.harness import CORRUPTIONS, EvalConfig, evaluate_robustness, markdown_table
from varmixup_aug.harness.scoring import eps_key

from _helpers import accuracy

pytestmark = pytest.mark.usefixtures("one_thread")


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


class TestEvalContext:
    """The context ``evaluate`` and ``evidence`` share: checked inputs and seeded MI predictors."""

    def _ctx(self, pool: bool):
        from varmixup_aug.harness.eval_context import EvalContext

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
        x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        y = torch.arange(6) % 3
        return EvalContext.start(model, (x * 255).byte(), y, (x, y) if pool else None, seed=7, progress=False)

    def test_inputs_are_checked_and_mi_is_seeded_by_its_tag(self):
        from varmixup_aug._random import derive_seed

        ctx = self._ctx(pool=True)
        assert ctx.x.dtype == torch.float32 and ctx.num_classes == 3 and not ctx.model.training
        a = ctx.make_mi("ol", "clean", "ol", lam=0.5, num_samples=2)
        b = ctx.make_mi("ol", "clean", "ol", lam=0.5, num_samples=2)
        assert torch.equal(a.predict(ctx.x), b.predict(ctx.x))
        assert a._base_seed == derive_seed(7, "mi", "clean", "ol")
        assert ctx.make_mi("ol", "other", lam=0.5, num_samples=2)._base_seed != a._base_seed
        assert ctx.logits(ctx.x, 4).shape == (6, 3)

    def test_mi_without_a_pool(self):
        with pytest.raises(VarMixupError, match="Mixup Inference needs a pool of clean training images"):
            self._ctx(pool=False).make_mi("pl", "clean", lam=0.5, num_samples=2)


class TestStratifiedSubset:
    def test_takes_the_same_number_per_class_in_random_order(self) -> None:
        from varmixup_aug.harness.scoring import stratified_subset

        labels = torch.arange(200) % 10
        idx = stratified_subset(labels, 30, 0, "t")
        assert len(set(idx)) == 30 and torch.bincount(labels[idx], minlength=10).tolist() == [3] * 10
        assert idx != sorted(idx) and idx == stratified_subset(labels, 30, 0, "t")
        assert idx != stratified_subset(labels, 30, 1, "t")
        prefix = torch.bincount(labels[stratified_subset(labels, 100, 0, "t")[:50]], minlength=10)
        assert int(prefix.min()) >= 1  # a partial run still sees every class

    def test_remainder_goes_to_the_first_classes_and_all_means_a_permutation(self) -> None:
        from varmixup_aug.harness.scoring import stratified_subset

        labels = torch.arange(40) % 4
        assert torch.bincount(labels[stratified_subset(labels, 6, 0, "t")]).tolist() == [2, 2, 1, 1]
        every = stratified_subset(labels, None, 0, "t")
        assert sorted(every) == list(range(40)) and every != list(range(40))

    def test_refuses_a_class_too_small(self) -> None:
        from varmixup_aug.harness.scoring import stratified_subset

        with pytest.raises(VarMixupError, match="class 1 has 1 images, fewer than the 2"):
            stratified_subset(torch.tensor([0, 0, 0, 1, 2, 2]), 5, 0, "t")


class TestDatasetLabels:
    def test_reads_targets_of_folders_subsets_and_plain_datasets(self, image_folder: Path) -> None:
        from torch.utils.data import Subset

        from varmixup_aug.harness import open_image_dataset
        from varmixup_aug.harness.data import dataset_labels

        test = open_image_dataset(image_folder, "test")
        labels = dataset_labels(test)
        assert labels.tolist() == [y for _, y in test]
        assert dataset_labels(Subset(test, [5, 0])).tolist() == [labels[5].item(), labels[0].item()]
        assert dataset_labels([(None, 3), (None, 1)]).tolist() == [3, 1]
