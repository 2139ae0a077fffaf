"""VarMixup's options live in one place: MixupOptions gives the three public signatures their options."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

from varmixup_aug import VarMixup, VarMixupCollate, varmixup
from varmixup_aug._options import MixupOptions

from _helpers import REPO

_OPTIONS = (
    "num_classes: 'int', alpha: 'float' = 1.0, lam_per_sample: 'bool' = True, prob: 'float' = 1.0, "
    "posterior: \"Literal['sample', 'mean']\" = 'sample', space: \"Literal['latent', 'input']\" = 'latent', "
    "residual: 'bool' = False, label_smoothing: 'float' = 0.0, "
    "input_normalization: 'tuple[Sequence[float], Sequence[float]] | None' = None, "
    "autocast_dtype: 'torch.dtype | None' = None, mixup_off_epoch: 'int | None' = None"
)
SIGNATURES = {
    varmixup: "(images: 'Tensor | Posterior', labels: 'Tensor', vae: 'VAEProtocol | None', *, " + _OPTIONS
    + ", generator: 'torch.Generator | None' = None, params: 'MixupParams | None' = None) -> 'tuple[Tensor, Tensor]'",
    VarMixup: "(vae: 'VAEProtocol | None', *, " + _OPTIONS
    + ", seed: 'int | None' = None, generator: 'torch.Generator | None' = None) -> 'None'",
    VarMixupCollate: "(vae: 'VAEProtocol | None', *, " + _OPTIONS
    + ", seed: 'int | None' = None, generator: 'torch.Generator | None' = None, "
    "device: 'torch.device | str | None' = None, image_key: 'Any' = None, label_key: 'Any' = None) -> 'None'",
}


@pytest.mark.parametrize("obj", list(SIGNATURES), ids=lambda o: o.__name__)
def test_public_signatures_list_every_option(obj) -> None:
    assert str(inspect.signature(obj)) == SIGNATURES[obj]


def test_every_option_has_a_row_in_the_api_page() -> None:
    api = (REPO / "docs" / "api.md").read_text()
    table = api[api.index("## The options"):]
    rows = set(re.findall(r"^\| `(\w+)`", table, flags=re.M))
    assert {f.name for f in dataclasses.fields(MixupOptions)} <= rows


def test_calls_are_bound_like_ordinary_functions() -> None:
    with pytest.raises(TypeError, match="num_classes"):
        VarMixup(None, space="input")
    with pytest.raises(TypeError, match="alhpa"):
        VarMixupCollate(None, num_classes=2, space="input", alhpa=1.0)


def test_options_are_read_only_on_the_mixer() -> None:
    mixer = VarMixup(None, num_classes=3, space="input", alpha=0.4)
    assert mixer.alpha == 0.4 and mixer.options == MixupOptions(num_classes=3, space="input", alpha=0.4)
    with pytest.raises(AttributeError, match="fixed at construction"):
        mixer.alpha = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        mixer.options.alpha = 1.0  # type: ignore[misc]
