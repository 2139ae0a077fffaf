"""The classifier models."""

from __future__ import annotations

import pytest
import torch

from varmixup_aug import VarMixupError
from varmixup_aug.harness import PreActResNet

pytestmark = pytest.mark.usefixtures("one_thread")


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
