"""Moved to diffaug.classify.classical in diffaug 0.4.0; this path warns and is removed in 0.7.0."""

from .._deprecated import moved

moved("diffaug.evaluation.classical", ("diffaug.classify.classical",), "0.4.0", "0.7.0", globals())
