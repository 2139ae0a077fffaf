"""The research harness: data opening, classifier models, training, evaluation, pictures and the CLI.

It uses the core package (``varmixup_aug``); the core never imports it. ``__all__`` is its public
surface: the CLI, the examples and the benchmarks use only these names and the core's.
"""

from varmixup_aug._tensors import resolve_device
from .adaptive import (APGDResult, AutocastAttacker, BinarizationResult, BinarizedDefence, EOTPGDResult,
                       PenultimateFeatures, TransferResult, apgd, apgd_ce_then_dlr, apgd_checkpoints, binarization_test,
                       eot_pgd, eot_sweep, transfer_attack)
from .adaptive_summary import PLATEAU, adaptive_tables, attack_precision_table
from .attacks import ATTACKS, adversarial_examples
from .calibration import calibration_bins, expected_calibration_error, reliability_diagram
from .classifier_checkpoint import load_classifier, read_classifier_metadata
from .corruptions import CORRUPTIONS, SEVERITIES, corrupt
from .claims import (CLAIMS, FAST_CLAIMS, claims_table, evaluate_claim, evaluate_claim_across_seeds, evaluate_claims,
                     evaluate_claims_across_seeds)
from .evidence_results import bits_to_bool, load_runs, load_seed_runs, part_indices, part_vector
from .evidence_summary import (PUBLISHED_MI_CIFAR10, REFERENCE_POOL_FILE, SINGLE_STEP_FILE, papers_tables,
                               precision_tables, reliability_figures, reproduction_tables, single_step_tables)
from .evidence import DEFAULT_PARTS, EVIDENCE_PARTS, PAPER_LAM, EvidenceConfig, autoattack_rand, run_evidence
from .fast_training import (ADV_ATTACKS, FAST_METHODS, PRECISIONS, VAE_METHODS, FastTrainConfig, batch_crop_flip,
                            cpu_bf16_units, fgsm_random_start, train_fast_classifier)
from .data import cache_dir, load_tensor_dataset, open_image_dataset
from .lam_selection import select_mi_lam
from .models import FastCifarNet, PreActResNet, SmallCNN
from .outputs import (RunClaim, atomic_write_json, check_out, claim_run, hold_output, merge_result_row,
                      read_result_rows)
from .pictures import mixup_grid, reconstruction_grid, write_pictures
from .report import (POOL_SOURCES, EvalConfig, evaluate_checkpoint, evaluate_robustness, load_evaluation_data,
                     markdown_table, reference_pool_augment)
from .scoring import predict_logits
from .significance import (ALPHA, compare_pairwise, holm_adjust, mcnemar_exact, mcnemar_min_p,
                           paired_bootstrap_interval, paired_swap_test, t_interval, wilson_interval)
from .train_classifier import METHODS, TrainClassifierConfig, load_train_split, split_holdout, train_classifier
from .train_vae import TrainVAEConfig, evaluate_vae, train_vae

__all__ = [
    "ADV_ATTACKS",
    "ALPHA",
    "APGDResult",
    "ATTACKS",
    "AutocastAttacker",
    "BinarizationResult",
    "BinarizedDefence",
    "CLAIMS",
    "CORRUPTIONS",
    "DEFAULT_PARTS",
    "EOTPGDResult",
    "EVIDENCE_PARTS",
    "EvalConfig",
    "EvidenceConfig",
    "FAST_CLAIMS",
    "FAST_METHODS",
    "FastCifarNet",
    "FastTrainConfig",
    "METHODS",
    "PAPER_LAM",
    "PLATEAU",
    "POOL_SOURCES",
    "PRECISIONS",
    "PUBLISHED_MI_CIFAR10",
    "PenultimateFeatures",
    "PreActResNet",
    "REFERENCE_POOL_FILE",
    "RunClaim",
    "SEVERITIES",
    "SINGLE_STEP_FILE",
    "SmallCNN",
    "TrainClassifierConfig",
    "TrainVAEConfig",
    "TransferResult",
    "VAE_METHODS",
    "adaptive_tables",
    "adversarial_examples",
    "apgd",
    "apgd_ce_then_dlr",
    "apgd_checkpoints",
    "atomic_write_json",
    "attack_precision_table",
    "autoattack_rand",
    "batch_crop_flip",
    "binarization_test",
    "bits_to_bool",
    "cache_dir",
    "calibration_bins",
    "check_out",
    "claim_run",
    "claims_table",
    "compare_pairwise",
    "corrupt",
    "cpu_bf16_units",
    "eot_pgd",
    "eot_sweep",
    "evaluate_checkpoint",
    "evaluate_claim",
    "evaluate_claim_across_seeds",
    "evaluate_claims",
    "evaluate_claims_across_seeds",
    "evaluate_robustness",
    "evaluate_vae",
    "expected_calibration_error",
    "fgsm_random_start",
    "hold_output",
    "holm_adjust",
    "load_classifier",
    "load_evaluation_data",
    "load_runs",
    "load_seed_runs",
    "load_tensor_dataset",
    "load_train_split",
    "markdown_table",
    "mcnemar_exact",
    "mcnemar_min_p",
    "merge_result_row",
    "mixup_grid",
    "open_image_dataset",
    "paired_bootstrap_interval",
    "paired_swap_test",
    "papers_tables",
    "part_indices",
    "part_vector",
    "precision_tables",
    "predict_logits",
    "read_classifier_metadata",
    "read_result_rows",
    "reconstruction_grid",
    "reference_pool_augment",
    "reliability_diagram",
    "reliability_figures",
    "reproduction_tables",
    "resolve_device",
    "run_evidence",
    "select_mi_lam",
    "single_step_tables",
    "split_holdout",
    "t_interval",
    "train_classifier",
    "train_fast_classifier",
    "train_vae",
    "transfer_attack",
    "wilson_interval",
    "write_pictures",
]
