"""The downstream classifier, below both `fit` (pseudo-labels) and the evaluation (every arm): its networks,
classical augmentation (per image and batched), the policy menu and its cross-validated choice, the supervised
loop, and the semi-supervised learners (self-training, FixMatch)."""

from .networks import SmallCNN, check_factory, factory_key, resnet18, resolve_classifier
from .pseudo import PseudoLabels, pseudo_label
from .semi import FixMatch, self_train
from .training import accuracy, fit_classifier, predict_proba, steps_for, train_classifier

__all__ = ["SmallCNN", "resnet18", "resolve_classifier", "check_factory", "factory_key", "pseudo_label",
           "PseudoLabels", "FixMatch", "self_train", "fit_classifier", "train_classifier", "predict_proba",
           "accuracy", "steps_for"]
