"""Sparse autoencoders on a run's activations: the dictionary (`SAE`), its training
(`train_sae` on any iterator of activation batches), its evaluation (`evaluate_sae`:
L0, FVU, CE loss recovered) and its features (`feature_stats`, the feature page).
`run_sae` is `glassgpt sae`; `load_sae` reads the folder it writes."""

from glassgpt.sae.activations import ActivationStream, activation_rows, check_hook, from_rows, to_rows
from glassgpt.sae.evaluate import evaluate_sae, splice, zero_ablate
from glassgpt.sae.features import feature_stats, features_per_token, logit_effects, steering_hook
from glassgpt.sae.job import discover_saes, load_sae, run_sae
from glassgpt.sae.model import SAE, SAEConfig
from glassgpt.sae.page import render_features_html
from glassgpt.sae.training import SAETrainConfig, SAETrainer, fraction_unexplained, train_sae

__all__ = ["SAE", "SAEConfig", "SAETrainConfig", "SAETrainer", "train_sae", "evaluate_sae", "feature_stats",
           "ActivationStream", "activation_rows", "check_hook", "to_rows", "from_rows", "splice", "zero_ablate",
           "fraction_unexplained", "logit_effects", "render_features_html", "run_sae", "load_sae", "features_per_token",
           "steering_hook", "discover_saes"]
