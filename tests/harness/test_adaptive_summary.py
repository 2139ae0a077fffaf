"""The adaptive evaluation's tables, from small hand-made evidence files of the stored format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from varmixup_aug.harness import PLATEAU, adaptive_tables, attack_precision_table

N_TEST = 10
SUBSET = [7, 2, 5, 0]  # the adaptive subset's first images, in its order


def whole(**keys: str) -> dict[str, Any]:
    """A part over all N_TEST images, in one chunk."""
    return {"n": N_TEST, "chunks": {"0": {"range": [0, N_TEST], **keys}}}


def subset(**keys: str) -> dict[str, Any]:
    """A subset part over SUBSET, in two chunks of two images."""
    first = {k: v[:2] for k, v in keys.items()}
    second = {k: v[2:] for k, v in keys.items()}
    return {"n": len(SUBSET), "chunks": {"0": {"range": [0, 2], "indices": SUBSET[:2], "seconds": 5.0, **first},
                                         "1": {"range": [2, 4], "indices": SUBSET[2:], "seconds": 5.0, **second}}}


def sweep(grid: dict[tuple[int, int], str], restarts: int = 2) -> dict[str, Any]:
    keys = {}
    for (steps, eot), bits in grid.items():
        keys[f"pgd{steps}-eot{eot}-r{restarts}:mi_ol@paper"] = bits
        keys[f"pgd{steps}-eot{eot}-r{restarts}:none"] = "0000"
    return subset(**keys)


CONFIG = {"binarization_steps": 50, "binarization_eot": 5}


def write_run(folder: Path, parts: dict[str, Any]) -> None:
    folder.mkdir(parents=True)
    (folder / "train_report.json").write_text(json.dumps({"test_accuracy": 0.9}))
    (folder / "evidence.json").write_text(json.dumps({"config": CONFIG, "parts": parts}))


class TestAdaptiveTables:
    def test_nothing_run_yet(self, tmp_path: Path) -> None:
        tables = adaptive_tables(tmp_path)
        assert sorted(tables) == ["papers apgd", "papers attack precision", "papers binarization",
                                  "papers eot plateau", "papers eot sweep 2/255", "papers eot sweep 8/255",
                                  "papers transfer 2/255", "papers transfer 8/255"]
        assert set(tables.values()) == {"Not run yet."}

    def test_sweep_and_plateau_beside_the_oblivious_attack_on_the_same_images(self, tmp_path: Path) -> None:
        oblivious = whole(**{"none": "1000000100", "mi_ol@paper": "1010010111"})
        grid = {(50, 1): "1111", (100, 1): "1110", (200, 1): "1110", (50, 15): "1100", (100, 15): "1100",
                (200, 15): "1000", (200, 5): "1100"}
        write_run(tmp_path / "seed0" / "mixup", {"oblivious:2/255": oblivious, "eot_sweep:2/255": sweep(grid)})
        tables = adaptive_tables(tmp_path)
        rows = tables["papers eot sweep 2/255"].splitlines()
        assert rows[0] == "| method | n | restarts | steps | MI-OL, EOT 1 | MI-OL, EOT 5 | MI-OL, EOT 15 |"
        assert rows[2].startswith("| mixup | 4 | 2 | 50 | 100.0 [") and rows[2].endswith("| - | 50.0 [15.0, 85.0] |")
        assert rows[4].startswith("| mixup | 4 | 2 | 200 | 75.0 [") and "| 50.0 [15.0, 85.0] | 25.0 [" in rows[4]
        assert tables["papers eot sweep 8/255"] == "Not run yet."
        plateau = tables["papers eot plateau"].splitlines()
        assert len(plateau) == 3 and plateau[2].startswith("| mixup | 2/255 | 4 | ")
        cells = [c.strip() for c in plateau[2].split("|")[1:-1]]
        # SUBSET [7, 2, 5, 0] of the oblivious bits: none "1001", MI-OL "1111"
        assert cells[3].startswith("50.0 ") and cells[4].startswith("100.0 ") and cells[5].startswith("25.0 ")
        assert cells[6] == "-25.0 (p 1.00)" and cells[7] == "-25.0 (p 1.00)"  # one image fewer each
        assert cells[8] == "yes" and cells[9] == "fp32"  # the file says nothing: fp32, as before the setting
        assert cells[10] == "2.5"  # chunks of 5 s for two images

    def test_no_plateau_when_the_stronger_setting_fools_two_more_images(self, tmp_path: Path) -> None:
        grid = {(100, 15): "1111", PLATEAU: "1100", (PLATEAU[0], 5): "1100"}
        write_run(tmp_path / "seed0" / "mixup", {"eot_sweep:8/255": sweep(grid)})
        row = adaptive_tables(tmp_path)["papers eot plateau"].splitlines()[2]
        assert row.endswith("| -50.0 (p 0.50) | +0.0 (p 1.00) | no | fp32 | 2.5 |")
        assert "| - | - |" in row  # no oblivious part yet

    def test_apgd_binarization_and_transfer(self, tmp_path: Path) -> None:
        parts = {
            "apgd:8/255": subset(**{"mi_ol@paper": "0100", "none": "0000", "attack": "cdcd"}),
            "binarization:eot_pgd:8/255": subset(valid="1110", success="1100", random_hit="1000",
                                                 clean_correct="1111"),
            "binarization:apgd:8/255": {**subset(valid="1110", success="1110", random_hit="1000",
                                                 clean_correct="1111"), "attack_precision": "bf16"},
            "transfer:8/255": whole(**{"none": "1" * 5 + "0" * 5, "mi_ol@paper": "1" * 8 + "00",
                                       "mi_pl@paper": "1" * 6 + "0000", "mi_ol@selected": "1" * 7 + "000"}),
        }
        write_run(tmp_path / "seed0" / "mixup", parts)
        write_run(tmp_path / "seed0" / "erm", {})
        tables = adaptive_tables(tmp_path)
        apgd = tables["papers apgd"].splitlines()
        assert len(apgd) == 3 and apgd[2].startswith("| mixup | 8/255 | 4 | 0.0 [") and apgd[2].endswith("| 2 | fp32 | 2.5 |")
        assert "| - | 25.0 [" in apgd[2]  # no oblivious part; MI-OL right on one of four
        binarization = tables["papers binarization"].splitlines()[2:]
        assert binarization == [
            "| mixup | EOT-PGD, 50 steps, EOT 5 | 8/255 | 0 | 4 | 3 | 1 | 2 / 3 (67%) | **failed** | fp32 | 2.5 |",
            "| mixup | APGD-CE, 50 steps, EOT 5 | 8/255 | 0 | 4 | 3 | 1 | 3 / 3 (100%) | **passed** | bf16 | 2.5 |"]
        transfer = tables["papers transfer 8/255"].splitlines()
        assert len(transfer) == 3 and transfer[2].startswith("| mixup | 10 | 50.0 [")
        assert "| 80.0 [" in transfer[2] and "| 60.0 [" in transfer[2] and "| 70.0 [" in transfer[2]
        assert tables["papers transfer 2/255"] == "Not run yet."

    def test_a_binarization_with_every_valid_task_won_passes(self, tmp_path: Path) -> None:
        parts = {"binarization:eot_pgd:8/255": subset(valid="0111", success="0111", random_hit="0000",
                                                      clean_correct="1111")}
        write_run(tmp_path / "seed0" / "varmixup", parts)
        row = adaptive_tables(tmp_path)["papers binarization"].splitlines()[2]
        assert row.endswith("| 4 | 3 | 0 | 3 / 3 (100%) | **passed** | fp32 | 2.5 |")

    def test_a_task_with_decoy_corners_is_its_own_row(self, tmp_path: Path) -> None:
        bits = {"valid": "1111", "random_hit": "1111", "clean_correct": "1111"}
        parts = {"binarization:eot_pgd:8/255": subset(success="1111", **bits),
                 "binarization:eot_pgd:8/255:decoys100": subset(success="1101", **{**bits, "random_hit": "0100"})}
        write_run(tmp_path / "seed0" / "mixup", parts)
        rows = adaptive_tables(tmp_path)["papers binarization"].splitlines()[2:]
        assert rows == [
            "| mixup | EOT-PGD, 50 steps, EOT 5 | 8/255 | 0 | 4 | 4 | 4 | 4 / 4 (100%) | **passed** | fp32 | 2.5 |",
            "| mixup | EOT-PGD, 50 steps, EOT 5 | 8/255 | 100 | 4 | 4 | 1 | 3 / 4 (75%) | **failed** | fp32 | 2.5 |"]


class TestAttackPrecisionTable:
    def test_the_two_attackers_compared_per_image(self, tmp_path: Path) -> None:
        for precision, bits in (("fp32", {(25, 1): "1100", (50, 1): "1000"}),
                                ("bf16", {(25, 1): "1100", (50, 1): "0100"})):
            evidence = {"config": CONFIG, "parts": {"eot_sweep:2/255": sweep(bits, restarts=1)}}
            (tmp_path / f"{precision}.json").write_text(json.dumps(evidence))
        rows = attack_precision_table(tmp_path).splitlines()
        assert rows[2].startswith("| 25 steps, EOT 1 | 4 | 50.0 [") and rows[2].endswith("| 0 / 0 | 1.00 |")
        assert rows[3].endswith("| 1 / 1 | 1.00 |")  # image 1 only the fp32 attack fooled, image 0 only bf16
        assert rows[4:] == ["", "Whole sweep, s per image, fp32 / bf16 attacker: 2.5 / 2.5"]

    def test_one_side_missing_is_not_run_yet(self, tmp_path: Path) -> None:
        evidence = {"config": CONFIG, "parts": {"eot_sweep:2/255": sweep({(25, 1): "1100"}, restarts=1)}}
        (tmp_path / "fp32.json").write_text(json.dumps(evidence))
        assert attack_precision_table(tmp_path) == "Not run yet."
