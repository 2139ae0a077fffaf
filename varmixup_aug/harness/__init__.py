"""The research harness: data opening, classifier models, training, evaluation, pictures and the CLI.

It uses the core package (``varmixup_aug``); the core never imports it. ``__all__`` is its public
surface: the CLI, the examples and the benchmarks use only these names and the core's.
"""

from .._tensors import resolve_device
from .attacks import ATTACKS, adversarial_examples
from .calibration import calibration_bins, expected_calibration_error, reliability_diagram
from .classifier_checkpoint import load_classifier, read_classifier_metadata
from .corruptions import CORRUPTIONS, SEVERITIES, corrupt
from .data import cache_dir, load_tensor_dataset, open_image_dataset
from .lam_selection import select_mi_lam
from .models import PreActResNet, SmallCNN
from .pictures import mixup_grid, reconstruction_grid, write_pictures
from .report import EvalConfig, evaluate_checkpoint, evaluate_robustness, load_evaluation_data, markdown_table
from .scoring import predict_logits
from .train_classifier import METHODS, TrainClassifierConfig, load_train_split, split_holdout, train_classifier
from .train_vae import TrainVAEConfig, evaluate_vae, train_vae

__all__ = [
    "ATTACKS",
    "CORRUPTIONS",
    "EvalConfig",
    "METHODS",
    "PreActResNet",
    "SEVERITIES",
    "SmallCNN",
    "TrainClassifierConfig",
    "TrainVAEConfig",
    "adversarial_examples",
    "cache_dir",
    "calibration_bins",
    "corrupt",
    "evaluate_checkpoint",
    "evaluate_robustness",
    "evaluate_vae",
    "expected_calibration_error",
    "load_classifier",
    "load_evaluation_data",
    "load_tensor_dataset",
    "load_train_split",
    "markdown_table",
    "mixup_grid",
    "open_image_dataset",
    "predict_logits",
    "read_classifier_metadata",
    "reconstruction_grid",
    "reliability_diagram",
    "resolve_device",
    "select_mi_lam",
    "split_holdout",
    "train_classifier",
    "train_vae",
    "write_pictures",
]
