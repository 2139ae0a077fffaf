"""Expected calibration error, reliability bins and the reliability diagram."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from varmixup_aug import VarMixupError
from varmixup_aug.harness import calibration_bins, expected_calibration_error, reliability_diagram
from varmixup_aug.harness.calibration import fit_temperature

pytestmark = pytest.mark.usefixtures("one_thread")


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


class TestFitTemperature:
    def _sample(self, temperature: float, n: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        logits = 3 * torch.randn(n, 5, generator=g)
        labels = torch.multinomial((logits / temperature).softmax(1), 1, generator=g).flatten()
        return logits, labels

    @pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
    def test_recovers_the_temperature_the_labels_were_drawn_with(self, temperature: float) -> None:
        logits, labels = self._sample(temperature)
        assert fit_temperature(logits, labels) == pytest.approx(temperature, rel=0.1)

    def test_matches_a_grid_search_of_the_nll(self) -> None:
        logits, labels = self._sample(1.7, n=1000)
        grid = torch.linspace(0.5, 5.0, 4501, dtype=torch.float64)
        nll = torch.stack([F.cross_entropy(logits.double() / t, labels) for t in grid])
        assert fit_temperature(logits, labels) == pytest.approx(float(grid[nll.argmin()]), abs=2e-3)

    def test_rejects_bad_inputs(self) -> None:
        with pytest.raises(VarMixupError, match=r"logits must be a non-empty \(N, K\) tensor, got \(3,\)"):
            fit_temperature(torch.zeros(3), torch.zeros(3, dtype=torch.long))
        with pytest.raises(VarMixupError, match="labels must be a tensor of 2 labels, got \\(3,\\)"):
            fit_temperature(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long))
        with pytest.raises(VarMixupError, match="need 0 < low < high"):
            fit_temperature(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), low=2.0, high=1.0)
