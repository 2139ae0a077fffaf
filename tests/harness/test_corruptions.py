"""The 11 corruptions at 3 severities: seeded, in range, and checked arguments."""

from __future__ import annotations

import pytest
import torch

from varmixup_aug import VarMixupError
from varmixup_aug.harness import CORRUPTIONS, SEVERITIES, corrupt
from varmixup_aug.harness.corruptions import corruption_transform

from _helpers import smooth_images

RANDOM_CORRUPTIONS = {"gaussian_noise", "shot_noise", "iso_noise", "motion_blur", "fog", "elastic_transform"}

pytestmark = pytest.mark.usefixtures("one_thread")


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
