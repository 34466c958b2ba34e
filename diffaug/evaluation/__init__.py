"""Measuring downstream gains: the protocol (regimes x seeds x arms), the reference classifier, classical
baselines, generator-quality metrics and the report."""

from ..classify.classical import CLASSICAL, classical_augment
from ..classify.networks import SmallCNN
from ..classify.training import train_classifier
from .metrics import cas, fid_own, kid_own, memorization, paired_ci, precision_recall
from .config import ARMS, EvalConfig
from .protocol import EvalResult, evaluate

__all__ = ["evaluate", "EvalConfig", "EvalResult", "ARMS", "CLASSICAL", "classical_augment", "SmallCNN",
           "train_classifier", "cas", "fid_own", "kid_own", "precision_recall", "memorization", "paired_ci"]
