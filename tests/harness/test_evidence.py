"""The train-fast and evidence commands end to end on a tiny ImageFolder, and the evidence store's resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from varmixup_aug import VarMixupError
from varmixup_aug.harness import EvidenceConfig, FastCifarNet, autoattack_rand, load_classifier
from varmixup_aug.harness.cli import main

TINY_EVIDENCE = ["--n-test", "40", "--chunk-size", "20", "--pool-size", "50", "--select-n", "10",
                 "--oblivious-eps", "8/255", "--published-eps", "8/255", "--published-n", "8",
                 "--published-steps", "2", "--published-mi-samples", "2", "--mi-samples-pl", "2",
                 "--mi-samples-ol", "2", "--autoattack-n", "2", "--autoattack-steps", "2", "--autoattack-eot", "2",
                 "--eot-sweep-n", "2", "--eot-sweep-eps", "8/255", "--eot-sweep-steps", "1,2", "--eot-sweep-eots", "1",
                 "--eot-sweep-restarts", "1", "--eot-sweep-mi-samples", "2", "--apgd-n", "2", "--apgd-steps", "2",
                 "--apgd-eot", "1", "--apgd-mi-samples", "2", "--binarization-n", "1", "--binarization-steps", "2",
                 "--binarization-eot", "1", "--binarization-inner", "10", "--binarization-mi-samples", "2",
                 "--transfer-eps", "8/255", "--no-progress"]


@pytest.fixture(scope="module")
def fast_run(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fast") / "erm"
    args = ["train-fast", "--method", "erm", "--data-dir", str(image_folder), "--out", str(out), "--holdout", "20",
            "--batch-size", "16", "--widths", "4,8,8", "--epochs", "1", "--no-progress"]
    assert main(args) == 0
    return out


class TestTrainFastCommand:
    def test_writes_a_loadable_checkpoint(self, fast_run: Path) -> None:
        model = load_classifier(fast_run)
        assert isinstance(model, FastCifarNet)
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        report = json.loads((fast_run / "train_report.json").read_text())
        assert report["steps"] == 5 and report["test_images"] == 40
        assert len(model.checkpoint_metadata["holdout"]["indices"]) == 20

    def test_refuses_to_replace_an_earlier_run(self, fast_run: Path, image_folder: Path, capsys) -> None:
        args = ["train-fast", "--method", "erm", "--data-dir", str(image_folder), "--out", str(fast_run),
                "--no-progress"]
        assert main(args) == 2
        assert "already holds a run" in capsys.readouterr().err


class TestEvidenceCommand:
    def test_every_part_stores_per_image_results_and_resumes(self, fast_run: Path, image_folder: Path,
                                                             tmp_path: Path) -> None:
        out = tmp_path / "evidence.json"
        args = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), *TINY_EVIDENCE]
        assert main(args) == 0
        data = json.loads(out.read_text())
        parts = data["parts"]
        # Every part but the superseded AutoAttack-rand; transfer is skipped without --transfer-source.
        assert set(parts) == {"lam_selection", "calibration", "clean", "corruptions", "oblivious:8/255",
                              "published:8/255", "eot_sweep:8/255", "apgd:8/255", "binarization:eot_pgd:8/255",
                              "binarization:apgd:8/255"}
        clean = parts["clean"]["chunks"]
        assert sorted(clean) == ["0", "1"] and all(len(c["none"]) == 20 for c in clean.values())
        assert {"mi_pl@paper", "mi_ol@selected", "mi_combined@selected"} <= set(clean["0"])
        assert len(parts["corruptions"]["chunks"]) == 33
        assert len(parts["published:8/255"]["chunks"]["0"]["mi_ol@paper"]) == 8
        sweep = parts["eot_sweep:8/255"]["chunks"]["0"]
        assert {"pgd1-eot1-r1:mi_ol@paper", "pgd2-eot1-r1:none"} <= set(sweep) and len(sweep["indices"]) == 2
        assert sweep["indices"] == parts["published:8/255"]["chunks"]["0"]["indices"][:2]  # prefixes of one order
        apgd = parts["apgd:8/255"]["chunks"]["0"]
        assert len(apgd["mi_ol@paper"]) == len(apgd["none"]) == 2 and set(apgd["attack"]) <= {"c", "d"}
        for attack in ("eot_pgd", "apgd"):
            binar = parts[f"binarization:{attack}:8/255"]["chunks"]["0"]
            assert {"valid", "success", "random_hit", "p_boundary"} <= set(binar) and len(binar["valid"]) == 1
        same_tasks = [parts[f"binarization:{a}:8/255"]["chunks"]["0"]["valid"] for a in ("eot_pgd", "apgd")]
        assert same_tasks[0] == same_tasks[1]  # both attacks face the same binary tasks
        assert main(args) == 0  # everything is there: nothing is recomputed (chunk timings unchanged)
        again = json.loads(out.read_text())["parts"]
        assert all(again[p]["chunks"] == parts[p]["chunks"] for p in parts if p != "lam_selection")

    def test_refuses_a_results_file_of_other_settings(self, fast_run: Path, image_folder: Path,
                                                     tmp_path: Path, capsys) -> None:
        out = tmp_path / "evidence.json"
        base = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), "--parts", "clean",
                *TINY_EVIDENCE]
        assert main(base) == 0
        assert main([*base, "--mi-samples-ol", "3"]) == 2
        assert "made with another config" in capsys.readouterr().err

    def test_resuming_reads_the_results_file_once(self, fast_run: Path, image_folder: Path, tmp_path: Path,
                                                   monkeypatch) -> None:
        from varmixup_aug.harness import evidence

        out = tmp_path / "evidence.json"
        args = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), "--parts", "clean",
                *TINY_EVIDENCE]
        assert main(args) == 0
        reads: list[Path] = []
        real_read = evidence._read_store
        monkeypatch.setattr(evidence, "_read_store", lambda path: reads.append(path) or real_read(path))
        assert main(args) == 0
        assert reads == [out]


class TestCalibrationPart:
    def test_scores_every_test_image_and_fits_a_temperature_on_held_out_images(
            self, fast_run: Path, image_folder: Path, tmp_path: Path) -> None:
        from varmixup_aug.harness.calibration import expected_calibration_error

        out = tmp_path / "evidence.json"
        args = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), "--parts",
                "calibration", "--calibration-n", "15", *TINY_EVIDENCE]
        assert main(args) == 0
        result = json.loads(out.read_text())["parts"]["calibration"]["result"]
        test = result["test"]
        assert test["n"] == 40 and len(test["correct"]) == 40 and len(test["confidence_ts"]) == 40
        assert result["fit"]["n"] == 15 and result["temperature"] > 0
        assert result["fit"]["nll_after"] <= result["fit"]["nll_before"] + 1e-9  # the fit minimises the NLL
        correct = torch.tensor([c == "1" for c in test["correct"]])
        for key, ece in (("confidence", "ece"), ("confidence_ts", "ece_ts")):
            recomputed = expected_calibration_error(torch.tensor(test[key]), correct)
            assert recomputed == pytest.approx(test[ece], abs=1e-4)
        model = load_classifier(fast_run)
        from varmixup_aug.harness import load_tensor_dataset, open_image_dataset

        x, y = load_tensor_dataset(open_image_dataset(image_folder, "test"), progress=False)
        with torch.no_grad():
            right = model(x.float() / 255).argmax(1) == y
        assert torch.equal(right, correct)  # in test-split order


class TestTestSubset:
    def test_stratified_images_are_balanced_and_stored_in_random_order(self, fast_run: Path, image_folder: Path,
                                                                       tmp_path: Path) -> None:
        out = tmp_path / "evidence.json"
        args = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), "--parts", "clean",
                *TINY_EVIDENCE, "--n-test", "20"]
        assert main(args) == 0
        idx = json.loads(out.read_text())["test_indices"]
        from varmixup_aug.harness import open_image_dataset
        from varmixup_aug.harness.data import dataset_labels

        labels = dataset_labels(open_image_dataset(image_folder, "test"))[idx]
        assert torch.bincount(labels, minlength=10).tolist() == [2] * 10
        assert idx != sorted(idx)

    def test_files_made_before_the_setting_resume_as_random(self, fast_run: Path, image_folder: Path,
                                                            tmp_path: Path, capsys) -> None:
        out = tmp_path / "evidence.json"
        base = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), "--parts", "clean",
                *TINY_EVIDENCE, "--n-test", "20"]
        assert main([*base, "--test-subset", "random"]) == 0
        data = json.loads(out.read_text())
        assert data["test_indices"] == sorted(data["test_indices"])
        for key in ("test_subset", "calibration_n"):  # as an older file stores it
            del data["config"][key]
        out.write_text(json.dumps(data))
        assert main([*base, "--test-subset", "random"]) == 0
        assert main(base) == 2
        assert "made with another config (test_subset)" in capsys.readouterr().err


class TestEvidenceConfig:
    def test_rejects_unknown_parts_and_bad_eps(self) -> None:
        with pytest.raises(VarMixupError, match=r"parts \['pgd'\] are unknown"):
            EvidenceConfig(parts=("pgd",))
        with pytest.raises(VarMixupError, match="eps values must be in"):
            EvidenceConfig(oblivious_eps=(8.0,))
        with pytest.raises(VarMixupError, match=r"test_subset must be one of \('random', 'stratified'\), got 'first'"):
            EvidenceConfig(test_subset="first")
        with pytest.raises(VarMixupError, match="eps values must be in"):
            EvidenceConfig(eot_sweep_eps=(8.0,))
        with pytest.raises(VarMixupError, match="pool_source must be one of"):
            EvidenceConfig(pool_source="val")
        for attacks in (("fgsm",), (), ("apgd", "apgd")):
            with pytest.raises(VarMixupError, match="binarization_attacks must be distinct names from"):
                EvidenceConfig(binarization_attacks=attacks)
        with pytest.raises(VarMixupError, match=r"attack_precision must be one of \('auto', 'fp32', 'bf16'\), got 'fp16'"):
            EvidenceConfig(attack_precision="fp16")
        with pytest.raises(VarMixupError, match="eot_sweep_eots must be an int >= 1"):
            EvidenceConfig(eot_sweep_eots=(0,))

    def test_autoattack_is_not_run_by_default(self) -> None:
        from varmixup_aug.harness import DEFAULT_PARTS, EVIDENCE_PARTS

        assert "autoattack" in EVIDENCE_PARTS and "autoattack" not in DEFAULT_PARTS
        assert EvidenceConfig().parts == DEFAULT_PARTS and EvidenceConfig(parts=("autoattack",)).parts


class TestAdaptiveParts:
    def test_transfer_scores_the_sources_pgd_and_checks_the_source_file(self, fast_run: Path, image_folder: Path,
                                                                       tmp_path: Path, capsys) -> None:
        out = tmp_path / "evidence.json"
        base = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), "--parts",
                "transfer", *TINY_EVIDENCE]
        assert main([*base, "--transfer-source", str(fast_run)]) == 0
        part = json.loads(out.read_text())["parts"]["transfer:8/255"]
        assert part["n"] == 40 and len(part["source_sha"]) == 64
        assert {"none", "mi_ol@paper", "mi_pl@paper", "mi_ol@selected"} <= set(part["chunks"]["0"])
        assert main([*base, "--transfer-source", str(fast_run / "checkpoint.safetensors")]) == 0  # same file
        other = tmp_path / "other.safetensors"
        other.write_bytes((fast_run / "checkpoint.safetensors").read_bytes() + b" ")
        assert main([*base, "--transfer-source", str(other)]) == 2
        assert "made from another source checkpoint" in capsys.readouterr().err

    def test_a_file_from_before_the_new_settings_is_read_and_extended(self, fast_run: Path, image_folder: Path,
                                                                     tmp_path: Path, capsys) -> None:
        out = tmp_path / "evidence.json"
        before = TINY_EVIDENCE[:TINY_EVIDENCE.index("--eot-sweep-n")] + ["--no-progress"]  # the older flags only
        base = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), "--parts", "clean",
                *before]
        assert main(base) == 0
        data = json.loads(out.read_text())
        for key in [k for k in data["config"] if k.startswith(("eot_sweep", "apgd", "binarization", "transfer"))]:
            del data["config"][key]  # as a file written before these settings existed
        del data["config"]["pool_source"]
        out.write_text(json.dumps(data))
        assert main([*base, "--eot-sweep-n", "3"]) == 0  # new settings at their defaults, or extendable
        assert main([*base, "--pool-source", "test-augmented"]) == 2  # another protocol: refused, as before
        assert "made with another config" in capsys.readouterr().err


class TestLoadEvaluationData:
    def test_the_reference_pool_is_augmented_test_images(self, fast_run: Path, image_folder: Path) -> None:
        from varmixup_aug._random import derive_seed
        from varmixup_aug.harness import load_evaluation_data, load_tensor_dataset, open_image_dataset
        from varmixup_aug.harness import reference_pool_augment

        ref = load_evaluation_data(fast_run, image_folder, n_test=10, pool_size=30, select_n=0,
                                   pool_source="test-augmented", progress=False)
        test_x, test_y = load_tensor_dataset(open_image_dataset(image_folder, "test"), progress=False)
        idx = ref["pool_indices"]
        assert len(idx) == 30 and ref["pool_source"] == "test-augmented"
        expected = reference_pool_augment(test_x[idx].float() / 255, seed=derive_seed(0, "mi-pool-augment"))
        torch.testing.assert_close(ref["pool"][0], expected)
        assert torch.equal(ref["pool"][1], test_y[idx].long())
        default = load_evaluation_data(fast_run, image_folder, n_test=10, pool_size=30, select_n=0, progress=False)
        assert default["pool_source"] == "train" and torch.equal(default["x"], ref["x"])  # the same test images
        with pytest.raises(VarMixupError, match="pool_source must be one of"):
            load_evaluation_data(fast_run, image_folder, pool_source="val", progress=False)


class TestReferencePoolAugment:
    def test_flips_and_crops_from_zero_padding_seeded(self) -> None:
        from varmixup_aug.harness import reference_pool_augment

        x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.5  # no zeros inside
        a = reference_pool_augment(x, seed=1)
        assert torch.equal(a, reference_pool_augment(x, seed=1)) and not torch.equal(a, reference_pool_augment(x, seed=2))
        for i in range(64):  # each is a shifted copy of the image or of its mirror, zeros where it left the frame
            found = False
            for img in (x[i], x[i].flip(-1)):
                padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
                found |= any(torch.equal(a[i], padded[:, dy:dy + 8, dx:dx + 8]) for dy in range(9) for dx in range(9))
            assert found
        flipped = sum(not torch.equal(a[i], x[i]) for i in range(64))
        assert flipped > 40  # 1/81 of the crops are centred and 1/2 of those unflipped
        with pytest.raises(VarMixupError, match="images must be square images"):
            reference_pool_augment(torch.rand(1, 3, 4, 6), seed=0)


class TestAutoattackRand:
    def test_stays_in_the_ball_and_lowers_accuracy(self) -> None:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
        x = torch.rand(16, 3, 8, 8)
        y = model(x).argmax(1)
        adv = autoattack_rand(model, x, y, eps=8 / 255, steps=5, eot_iter=2)
        assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert (model(adv).argmax(1) == y).float().mean() < 1.0

    def test_rejects_bad_steps(self) -> None:
        with pytest.raises(VarMixupError, match="steps must be an int >= 1"):
            autoattack_rand(torch.nn.Identity(), torch.rand(1, 3, 2, 2), torch.zeros(1), eps=0.1, steps=0)


class TestEvidenceStore:
    def test_more_parts_and_longer_subsets_extend_the_same_file(self, fast_run: Path, image_folder: Path,
                                                              tmp_path: Path) -> None:
        out = tmp_path / "evidence.json"
        base = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), *TINY_EVIDENCE]
        assert main([*base, "--parts", "clean,published"]) == 0
        first = json.loads(out.read_text())["parts"]
        assert len(first["published:8/255"]["chunks"]["0"]["none"]) == 8
        assert main([*base, "--parts", "clean,published", "--published-n", "10"]) == 0
        parts = json.loads(out.read_text())["parts"]
        assert parts["clean"]["chunks"] == first["clean"]["chunks"]
        assert parts["clean"]["seconds_this_run"] == first["clean"]["seconds_this_run"] > 0  # nothing redone
        assert len(parts["published:8/255"]["chunks"]["0"]["none"]) == 10  # the short chunk is redone


    def test_a_parts_own_settings_may_change_until_it_has_a_chunk(self, fast_run: Path, image_folder: Path,
                                                                  tmp_path: Path, capsys) -> None:
        out = tmp_path / "evidence.json"
        base = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), *TINY_EVIDENCE]
        assert main([*base, "--parts", "clean"]) == 0
        clean = json.loads(out.read_text())["parts"]["clean"]["chunks"]
        bf16 = ["--attack-precision", "bf16", "--eot-sweep-restarts", "2"]
        assert main([*base, "--parts", "clean,eot_sweep", *bf16]) == 0  # the sweep had no chunk yet: accepted
        data = json.loads(out.read_text())
        assert data["parts"]["clean"]["chunks"] == clean and data["config"]["attack_precision"] == "bf16"
        assert len(data["parts"]["eot_sweep:8/255"]["chunks"]["0"]["pgd2-eot1-r2:mi_ol@paper"]) == 2
        assert main([*base, "--parts", "clean", "--attack-precision", "bf16"]) == 2  # 1 restart: not the sweep's
        assert "made with another config (eot_sweep_restarts)" in capsys.readouterr().err
        assert main([*base, "--parts", "clean", *bf16, "--apgd-steps", "3"]) == 0  # APGD has not run
        assert main([*base, "--parts", "clean", *bf16, "--mi-samples-ol", "3"]) == 2  # binds every part
        assert "made with another config (mi_samples_ol)" in capsys.readouterr().err


    def test_each_attacker_part_keeps_its_attack_precision(self, fast_run: Path, image_folder: Path, tmp_path: Path,
                                                           capsys) -> None:
        out = tmp_path / "evidence.json"
        base = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), *TINY_EVIDENCE]
        assert main([*base, "--parts", "eot_sweep", "--attack-precision", "bf16"]) == 0
        assert main([*base, "--parts", "binarization", "--binarization-attacks", "eot_pgd"]) == 0  # fp32: accepted
        data = json.loads(out.read_text())
        assert data["parts"]["eot_sweep:8/255"]["attack_precision"] == "bf16"
        assert data["parts"]["binarization:eot_pgd:8/255"]["attack_precision"] == "fp32"
        sweep = data["parts"]["eot_sweep:8/255"]["chunks"]
        assert main([*base, "--parts", "eot_sweep,binarization", "--eot-sweep-n", "4"]) == 2  # before any work
        assert ("eot_sweep:8/255 (bf16) were attacked with another attack_precision than 'fp32'"
                in capsys.readouterr().err)
        assert json.loads(out.read_text())["parts"]["eot_sweep:8/255"]["chunks"] == sweep
        assert main([*base, "--parts", "eot_sweep", "--eot-sweep-n", "4", "--attack-precision", "bf16"]) == 0
        assert json.loads(out.read_text())["parts"]["eot_sweep:8/255"]["chunks"]["0"]["range"] == [0, 4]

    @pytest.mark.parametrize(("option", "value", "part", "bad", "error"), [
        ("--binarization-eps", "2/255", "binarization:eot_pgd:2/255", "2/255,8/255",
         "--binarization-eps takes one value like 2/255 or 0.5, got '2/255,8/255'"),
        ("--binarization-decoys", "3", "binarization:eot_pgd:8/255:decoys3", "-1", "binarization_decoys must be"),
    ])
    def test_the_binarization_test_at_another_eps_or_with_decoys_is_another_part(
            self, fast_run: Path, image_folder: Path, tmp_path: Path, capsys, option: str, value: str, part: str,
            bad: str, error: str) -> None:
        out = tmp_path / "evidence.json"
        base = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), *TINY_EVIDENCE,
                "--parts", "binarization", "--binarization-attacks", "eot_pgd"]
        assert main(base) == 0
        first = json.loads(out.read_text())["parts"]["binarization:eot_pgd:8/255"]
        assert main([*base, option, value]) == 0
        parts = json.loads(out.read_text())["parts"]
        assert parts["binarization:eot_pgd:8/255"] == first and len(parts[part]["chunks"]) == 1
        assert main([*base, option, bad]) == 2
        assert error in capsys.readouterr().err

    def test_a_file_from_before_keeps_its_configs_attack_precision(self, fast_run: Path, image_folder: Path,
                                                                    tmp_path: Path, capsys) -> None:
        out = tmp_path / "evidence.json"
        base = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), *TINY_EVIDENCE]
        assert main([*base, "--parts", "eot_sweep", "--attack-precision", "bf16"]) == 0
        data = json.loads(out.read_text())
        del data["parts"]["eot_sweep:8/255"]["attack_precision"]  # as files were written before it was stored
        out.write_text(json.dumps(data))
        assert main([*base, "--parts", "eot_sweep", "--eot-sweep-n", "4"]) == 2
        assert "eot_sweep:8/255 (bf16)" in capsys.readouterr().err

    def test_opening_a_file_from_before_stores_each_attacker_parts_precision(self, tmp_path: Path) -> None:
        from varmixup_aug.harness.evidence import FORMAT, _read_store
        chunk = {"chunks": {"0": {"range": [0, 1]}}}
        parts = {"eot_sweep:8/255": chunk, "apgd:8/255": {"chunks": {}}, "clean": chunk}
        old = tmp_path / "old.json"
        old.write_text(json.dumps({"format": FORMAT, "config": {}, "parts": parts}))
        opened = _read_store(old)["parts"]
        assert opened["eot_sweep:8/255"]["attack_precision"] == "fp32"  # before the setting existed
        assert "attack_precision" not in opened["apgd:8/255"] and "attack_precision" not in opened["clean"]
        old.write_text(json.dumps({"format": FORMAT, "config": {"attack_precision": "bf16"}, "parts": parts}))
        assert _read_store(old)["parts"]["eot_sweep:8/255"]["attack_precision"] == "bf16"

    def test_auto_attack_precision_follows_the_cpus_bf16_units(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from varmixup_aug.harness import fast_training
        monkeypatch.setattr(fast_training, "cpu_bf16_units", lambda: ())
        assert EvidenceConfig(attack_precision="auto").attack_precision == "fp32"
        monkeypatch.setattr(fast_training, "cpu_bf16_units", lambda: ("avx512_bf16",))
        assert EvidenceConfig(attack_precision="auto").attack_precision == "bf16"

    def test_lam_selection_runs_only_for_parts_that_report_the_selected_lam(
            self, fast_run: Path, image_folder: Path, tmp_path: Path) -> None:
        out = tmp_path / "evidence.json"
        base = ["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out), *TINY_EVIDENCE]
        assert main([*base, "--parts", "eot_sweep"]) == 0  # the sweep uses the paper's lam only
        assert "lam_selection" not in json.loads(out.read_text())["parts"]
        assert main([*base, "--parts", "eot_sweep,clean"]) == 0
        parts = json.loads(out.read_text())["parts"]
        assert "result" in parts["lam_selection"] and "mi_ol@selected" in parts["clean"]["chunks"]["0"]

    def test_a_checkpoint_without_held_out_images_runs_the_parts_that_need_none(
            self, fast_run: Path, image_folder: Path, tmp_path: Path, capsys) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        src = str(fast_run / "checkpoint.safetensors")
        with safe_open(src, framework="pt") as f:
            metadata = f.metadata()
        header = json.loads(metadata["varmixup_aug_classifier"])
        del header["holdout"]
        ckpt = tmp_path / "no-holdout.safetensors"
        save_file(load_file(src), str(ckpt), metadata={**metadata, "varmixup_aug_classifier": json.dumps(header)})
        base = ["evidence", str(ckpt), "--data-dir", str(image_folder), "--out", str(tmp_path / "e.json"),
                *TINY_EVIDENCE]
        assert main([*base, "--parts", "eot_sweep"]) == 0
        assert main([*base, "--parts", "calibration"]) == 2
        assert "stores none (train it with train-fast" in capsys.readouterr().err


class TestReproductionTables:
    def test_tables_come_from_the_stored_bits(self, fast_run: Path, image_folder: Path, tmp_path: Path) -> None:
        from varmixup_aug.harness import reliability_figures, reproduction_tables
        from varmixup_aug.harness.evidence_results import part_vector

        root = tmp_path / "runs"
        (root / "erm").mkdir(parents=True)
        (root / "erm" / "train_report.json").write_text((fast_run / "train_report.json").read_text())
        out = root / "erm" / "evidence.json"
        assert main(["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(out),
                     "--parts", "lam_selection,clean,corruptions,oblivious,published,autoattack",
                     *TINY_EVIDENCE]) == 0
        evidence = json.loads(out.read_text())
        tables = reproduction_tables(root)
        clean = part_vector(evidence, "clean", "none")
        assert clean is not None and len(clean) == 40
        row = tables["clean"].splitlines()[2]
        assert row.startswith(f"| erm | {100 * clean.count('1') / 40:.1f} [")
        assert "| erm | 8 |" in tables["published 8/255"]
        assert "| erm | 2 |" in tables["autoattack 8/255"]
        assert tables["oblivious 2/255 lam paper"].splitlines()[2] == "| erm | - | - | - | - |"  # not run: not shown
        assert tables["paper"].count("| - | - |") == 3  # the three mixup rows: no mixup run here
        assert "| ERM + MI-OL | 81.6 | 7.4 | " in tables["paper"]
        assert "| not run yet |" in tables["conclusions"]  # every claim involves a method not run here
        figures = reliability_figures(root, tmp_path / "figures")
        assert [f.name for f in figures] == ["reliability-erm.png"] and figures[0].stat().st_size > 0

    def test_an_unfinished_part_gives_no_vector(self) -> None:
        from varmixup_aug.harness.evidence_results import part_vector

        evidence = {"parts": {"clean": {"chunks": {"0": {"none": "101", "range": [0, 3]}}}}}
        assert part_vector(evidence, "clean", "none") is None  # "n" is written only when the part is complete
        evidence["parts"]["clean"]["n"] = 3
        assert part_vector(evidence, "clean", "none") == "101"

    def test_progress_counts_scored_images_and_marks_unfinished_parts(self) -> None:
        from varmixup_aug.harness.evidence_results import part_progress
        from varmixup_aug.harness.evidence_summary import _status_table

        evidence = {"parts": {"clean": {"chunks": {"0": {"none": "101", "range": [0, 3]},
                                                   "1": {"none": "1", "range": [3, 4]}}}}}
        assert part_progress(evidence, "clean") == (4, False)
        assert part_progress(evidence, "oblivious:8/255") is None and part_progress(None, "clean") is None
        assert "| m | - | 4 (partial) | - |" in _status_table({"m": {"evidence": evidence}})
        evidence["parts"]["clean"]["n"] = 4
        evidence["parts"]["lam_selection"] = {"chunks": {}, "result": {}}
        assert part_progress(evidence, "clean") == (4, True)
        assert "| m | done | 4 | - |" in _status_table({"m": {"evidence": evidence}})

    def test_selected_lams_are_read_only_once_chosen(self) -> None:
        from varmixup_aug.harness.evidence_results import selected_lams

        chosen = {"pl": {"lam": 0.7}, "ol": {"lam": 0.6}}
        assert selected_lams(None) is None
        assert selected_lams({"parts": {"lam_selection": {"chunks": {}}}}) is None
        assert selected_lams({"parts": {"lam_selection": {"chunks": {}, "result": chosen}}}) == chosen


def test_committed_tables_match_the_committed_results() -> None:
    import subprocess
    import sys

    from _helpers import REPO

    proc = subprocess.run([sys.executable, str(REPO / "examples" / "evidence_summary.py"),
                           str(REPO / "results" / "cifar10-fast"), "--check"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr


class TestEvaluationExamples:
    """``examples/flip_tta_accuracy.py`` and ``examples/mi_predict_cifar10.py`` on a tiny trained run."""

    def _run(self, script: str, *args: str) -> str:
        import subprocess
        import sys

        from _helpers import REPO

        proc = subprocess.run([sys.executable, str(REPO / "examples" / script), *args], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def test_flip_tta_prints_both_accuracies(self, fast_run: Path, image_folder: Path) -> None:
        out = self._run("flip_tta_accuracy.py", str(fast_run), "--data-dir", str(image_folder), "--threads", "1")
        row = out.splitlines()[2].split("|")
        assert row[2].strip() == "40"
        model = load_classifier(fast_run)
        from varmixup_aug.harness import load_tensor_dataset, open_image_dataset

        x, y = load_tensor_dataset(open_image_dataset(image_folder, "test"), progress=False)
        with torch.inference_mode():
            expected = 100 * (model(x.float() / 255).argmax(1) == y).double().mean()
        assert abs(float(row[3]) - float(expected)) < 2.6  # one image of 40 may differ by summation order

    def test_autoattack_bookkeeping_reruns_the_survivors(self, fast_run: Path, image_folder: Path,
                                                         tmp_path: Path) -> None:
        evidence, out = tmp_path / "evidence.json", tmp_path / "bookkeeping.json"
        tiny = [("4" if previous == "--autoattack-n" else a) for previous, a in zip([""] + TINY_EVIDENCE, TINY_EVIDENCE)]
        assert main(["evidence", str(fast_run), "--data-dir", str(image_folder), "--out", str(evidence),
                     "--parts", "autoattack", *tiny]) == 0
        args = [str(fast_run), "--data-dir", str(image_folder), "--evidence", str(evidence), "--repeats", "3",
                "--rerun", "--threads", "1", "--out", str(out)]
        printed = self._run("autoattack_bookkeeping.py", *args)
        report = json.loads(out.read_text())
        assert report["n"] == 4 and f"judge (MI-OL N=2) right on {report['judge_right']}" in printed
        for image in report["images"]:
            assert image["single_pass_error"] in (0.0, 0.333, 0.667, 1.0)
            assert ("rerun_linf_255" in image) == image["judge_right"]
            assert 0 <= image.get("rerun_linf_255", 0) <= 8.0 + 1e-3
        with pytest.raises(AssertionError, match="exists; pass --overwrite"):
            self._run("autoattack_bookkeeping.py", *args)

    def test_mi_predict_reports_plain_and_mi_accuracy(self, fast_run: Path, image_folder: Path) -> None:
        out = self._run("mi_predict_cifar10.py", "--checkpoint", str(fast_run), "--data-dir", str(image_folder),
                        "--num-samples", "2", "--chunk-size", "16", "--pool-size", "50", "--threads", "1")
        assert "MI-OL (N=2, lam=0.5) accuracy" in out and "on 40 test images" in out
        assert "80 mixes in chunks of 16" in out

    def test_single_step_check_scores_fgsm_and_pgd_and_never_overwrites(self, fast_run: Path, image_folder: Path,
                                                                         tmp_path: Path) -> None:
        out = tmp_path / "check.json"
        args = [str(fast_run), "--data-dir", str(image_folder), "--n", "20", "--threads", "1", "--out", str(out)]
        printed = self._run("single_step_check.py", *args)
        result = json.loads(out.read_text())
        assert result["n"] == 20 and [r["eps"] for r in result["rows"]] == [2.0, 8.0]
        assert all(0 <= r["pgd10"] <= result["clean"] and 0 <= r["fgsm_random_start"] <= 1 for r in result["rows"])
        assert printed.splitlines()[0] == f"clean {100 * result['clean']:.1f}% on 20 images (erm)"
        assert result["method"] == "erm" and result["adv_attack"] is None
        import subprocess
        import sys

        from _helpers import REPO

        again = subprocess.run([sys.executable, str(REPO / "examples" / "single_step_check.py"), *args],
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr
