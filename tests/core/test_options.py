"""VarMixup's options live in one place: MixupOptions gives the three public signatures their options."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, Literal

import pytest
import torch

import varmixup_aug._mixup
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


FIELDS = dataclasses.fields(MixupOptions)
# A valid value other than the default for every option: each must reach the MixupOptions the call builds.
NON_DEFAULT = {"num_classes": 3, "alpha": 0.5, "lam_per_sample": False, "prob": 0.5, "posterior": "mean",
               "space": "input", "residual": True, "label_smoothing": 0.1,
               "input_normalization": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), "autocast_dtype": torch.bfloat16,
               "mixup_off_epoch": 3}


def _disagreements(obj: Callable[..., Any]) -> list[str]:
    """How the options in ``obj``'s signature differ from MixupOptions' fields (names and order, kind,
    defaults, annotations as written and as resolved); empty when they agree."""
    params = inspect.signature(obj).parameters
    names = [f.name for f in FIELDS]
    found = [name for name in params if name in names]
    if found != names:
        return [f"options {found} instead of MixupOptions' {names}"]
    hints = typing.get_type_hints(obj.__init__ if isinstance(obj, type) else obj)
    field_hints = typing.get_type_hints(MixupOptions)
    problems = []
    for f in FIELDS:
        p = params[f.name]
        default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            problems.append(f"{f.name} is {p.kind.description}, not keyword-only")
        if p.default != default or type(p.default) is not type(default):
            problems.append(f"{f.name} defaults to {p.default!r}, MixupOptions to {default!r}")
        if p.annotation != f.type or hints[f.name] != field_hints[f.name]:
            problems.append(f"{f.name} is annotated {p.annotation!r}, MixupOptions {f.type!r}")
    return problems


class TestSignaturesAgreeWithMixupOptions:
    """The three public signatures spell the options out (for type checkers and IDEs); MixupOptions stays their
    one definition, so a field added, renamed, retyped or given another default on one side only fails here."""

    @pytest.mark.parametrize("obj", [varmixup, VarMixup, VarMixupCollate], ids=lambda o: o.__name__)
    def test_options_match_the_fields(self, obj) -> None:
        assert _disagreements(obj) == []

    def test_a_drifted_signature_is_caught(self) -> None:
        def drifted(*, num_classes: int, alpha: float = 0.5, lam_per_sample: bool = True, prob: int = 1,
                    posterior: Literal["sample", "mean"] = "sample", space: str = "latent", residual: bool = False,
                    label_smoothing: float = 0.0, autocast_dtype: torch.dtype | None = None,
                    mixup_off_epoch: int | None = None) -> None: ...

        assert _disagreements(drifted) == [f"options {[f.name for f in FIELDS if f.name != 'input_normalization']}"
                                           f" instead of MixupOptions' {[f.name for f in FIELDS]}"]

        def retyped(*, num_classes: int, alpha: float = 0.5, lam_per_sample: bool = True, prob: int = 1,
                    posterior: Literal["sample", "mean"] = "sample", space: str = "latent", residual: bool = False,
                    label_smoothing: float = 0.0, input_normalization: tuple[Any, Any] | None = None,
                    autocast_dtype: torch.dtype | None = None, mixup_off_epoch: int | None = None) -> None: ...

        problems = _disagreements(retyped)
        assert [p.split()[0] for p in problems] == ["alpha", "prob", "prob", "space", "input_normalization"]

    @pytest.mark.parametrize("name", ["varmixup", "VarMixup", "VarMixupCollate"])
    def test_every_option_reaches_the_options(self, name, monkeypatch) -> None:
        assert set(NON_DEFAULT) == {f.name for f in FIELDS}
        assert all(NON_DEFAULT[f.name] != f.default for f in FIELDS)
        if name == "varmixup":
            seen = []
            monkeypatch.setattr(varmixup_aug._mixup, "apply_varmixup", lambda *args, **kwargs: seen.append(args[3]))
            varmixup(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), None, **NON_DEFAULT)
            options = seen[0]
        else:
            mixer = {"VarMixup": VarMixup, "VarMixupCollate": VarMixupCollate}[name](None, **NON_DEFAULT)
            options = mixer.options if isinstance(mixer, VarMixup) else mixer.mixer.options
        assert options == MixupOptions(**NON_DEFAULT)
