"""varmixup-aug: VarMixup (mixup in a VAE's latent space) and Mixup Inference for PyTorch.

The public API is what ``__all__`` lists; the modules behind it are private.
"""

from ._checkpoint import load_vae, read_vae_metadata, save_vae
from ._collate import VarMixupCollate, VarMixupLoader
from ._dataset import BatchRandomCropFlip, VarMixupDataset
from ._errors import VarMixupError
from ._mi import MIPredictor
from ._mixup import MixupParams, Posterior, VarMixup, draw_mixup_params, mix_targets, varmixup
from ._pretrained import list_pretrained, load_pretrained_vae
from ._vae import ConvVAE, VAEConfig, VAEProtocol
from ._version import __version__

__all__ = [
    "BatchRandomCropFlip",
    "ConvVAE",
    "MIPredictor",
    "MixupParams",
    "Posterior",
    "VAEConfig",
    "VAEProtocol",
    "VarMixup",
    "VarMixupCollate",
    "VarMixupDataset",
    "VarMixupError",
    "VarMixupLoader",
    "__version__",
    "draw_mixup_params",
    "list_pretrained",
    "load_pretrained_vae",
    "load_vae",
    "mix_targets",
    "read_vae_metadata",
    "save_vae",
    "varmixup",
]
