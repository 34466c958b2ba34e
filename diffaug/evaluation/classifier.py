"""Moved to diffaug.classify.training and diffaug.classify.networks in diffaug 0.4.0; this path warns and is removed
in 0.7.0."""

from .._deprecated import moved

moved("diffaug.evaluation.classifier", ("diffaug.classify.training", "diffaug.classify.networks"), "0.4.0", "0.7.0",
      globals())
