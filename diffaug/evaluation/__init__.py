"""Measuring downstream gains: the protocol (regimes x seeds x arms), the reference classifier, classical
baselines, generator-quality metrics and the report."""

from ..classify.classical import CLASSICAL, classical_augment
from ..classify.networks import SmallCNN
from ..classify.training import train_classifier
from .metrics import cas, fid_own, kid_own, memorization, precision_recall
from .config import ARMS, EvalConfig
from .protocol import EvalResult, evaluate
from .verdict import compare, decide, sign_flip_p, t_given_split, two_level

__all__ = ["evaluate", "EvalConfig", "EvalResult", "ARMS", "CLASSICAL", "classical_augment", "SmallCNN",
           "train_classifier", "cas", "fid_own", "kid_own", "precision_recall", "memorization",
           "compare", "decide", "sign_flip_p", "two_level", "t_given_split"]


def __getattr__(name: str):
    if name == "paired_ci":   # the t-interval over seeds, renamed for what it is in 0.6.0
        import warnings

        warnings.warn("diffaug.evaluation.paired_ci is diffaug.evaluation.t_given_split since 0.6.0 (a claim is "
                      "decided by verdict.compare); the old name is removed in 0.7.0", DeprecationWarning, stacklevel=2)
        return t_given_split
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
