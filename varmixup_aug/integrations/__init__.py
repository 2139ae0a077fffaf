"""Drop-ins for pipelines users already run; each submodule imports its package when it is imported itself.

- :mod:`varmixup_aug.integrations.hf`: Hugging Face ``transformers.Trainer`` (``VarMixupTrainer``,
  ``soft_target_loss``).
- :mod:`varmixup_aug.integrations.timm`: timm's ``train.py`` (``VarMixupCutMix``, ``VarMixupFastCollate``).

``import varmixup_aug`` never imports this package; docs/integrations.md shows each client.
"""

__all__: list[str] = []
