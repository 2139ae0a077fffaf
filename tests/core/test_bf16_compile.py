"""bf16 autocast of the VAE on the CPU through the op, the collate and the loader; the compiled decoder."""

from __future__ import annotations

import pickle

import pytest
import torch
from _helpers import tiny_conv_vae
from torch.utils.data import DataLoader

from varmixup_aug import (
    ConvVAE,
    Posterior,
    VarMixup,
    VarMixupCollate,
    VarMixupError,
    VarMixupLoader,
)


@pytest.fixture()
def vae() -> ConvVAE:
    return tiny_conv_vae()  # a fresh one per test: compile_decoder and in-place weight changes stay here


def _items(vae: ConvVAE, n: int = 6) -> tuple[list, list]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 3
    with torch.no_grad():
        mu, logvar = vae.encode(x)
    return ([(x[i], int(y[i])) for i in range(n)], [(Posterior(mu[i], logvar[i]), int(y[i])) for i in range(n)])


class TestBf16OnTheCpu:
    @pytest.mark.parametrize("latents", [False, True], ids=["images", "cached latents"])
    def test_collate_close_to_fp32_in_the_input_dtype(self, vae, latents) -> None:
        batch = _items(vae)[latents]
        ref, t_ref = VarMixupCollate(vae, num_classes=3, seed=0)(batch)
        out, t = VarMixupCollate(vae, num_classes=3, seed=0, autocast_dtype=torch.bfloat16)(batch)
        assert out.dtype == ref.dtype == torch.float32 and torch.equal(t, t_ref)
        assert 0 < float((out - ref).abs().max()) < 0.02  # bf16 ran, and stayed close

    def test_loader_and_other_input_dtypes(self, vae) -> None:
        image_items, latent_items = _items(vae)
        loader = DataLoader(latent_items, batch_size=3)
        mixer = VarMixup(vae, num_classes=3, seed=0, autocast_dtype="bfloat16")
        ref = VarMixup(vae, num_classes=3, seed=0)
        for (x, _), (r, _) in zip(VarMixupLoader(loader, mixer), VarMixupLoader(loader, ref)):
            assert x.dtype == torch.float32 and float((x - r).abs().max()) < 0.02
        x64 = torch.stack([im for im, _ in image_items]).double()
        y = torch.tensor([lab for _, lab in image_items])
        assert mixer(x64, y)[0].dtype == torch.float64
        mu = torch.stack([p.mu for p, _ in latent_items]).bfloat16()
        assert mixer(Posterior(mu, torch.zeros_like(mu)), y)[0].dtype == torch.bfloat16


class TestCompiledDecoder:
    @pytest.mark.slow
    @pytest.mark.usefixtures("one_thread")
    def test_same_images_recompiles_after_a_weight_change_and_pickles(self, vae) -> None:
        z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            eager = vae.decode(z)
            compiled = vae.compile_decoder().decode(z)
            torch.testing.assert_close(compiled, eager)
            vae.decoder[-1].bias.add_(0.5)  # in place: the frozen weights are stale
            torch.testing.assert_close(vae.decode(z), vae._decode(z))
            assert not torch.allclose(vae.decode(z), eager)
        assert vae.decode(z).requires_grad  # with gradients on, the eager decoder runs (trainable)
        clone = pickle.loads(pickle.dumps(vae))
        assert clone.__dict__["_compiled"] is not None and clone.__dict__["_compiled"]._fn is None
        with torch.no_grad():
            vae.compile_decoder(False)
            assert vae.__dict__["_compiled"] is None
            torch.testing.assert_close(vae.decode(z), vae._decode(z), rtol=0, atol=0)

    def test_rejects_a_non_bool(self, vae) -> None:
        with pytest.raises(VarMixupError, match=r"enabled must be True or False, got str 'yes'"):
            vae.compile_decoder("yes")


@pytest.mark.slow
def test_a_forked_worker_compiles_after_its_parent(vae) -> None:
    # The parent compiles for batch 2, the forked worker for batch 4: it must not wait on the parent's
    # pool of compile workers (the DataLoader's timeout turns a hang into an error).
    vae.compile_decoder()
    items = [(Posterior(torch.randn(4), torch.zeros(4)), i % 3) for i in range(8)]
    collate = VarMixupCollate(vae, num_classes=3, seed=0)
    collate(items[:2])
    loader = DataLoader(items, batch_size=4, num_workers=1, collate_fn=collate, multiprocessing_context="fork",
                        timeout=240)
    assert [tuple(x.shape) for x, _ in loader] == [(4, 3, 8, 8)] * 2
