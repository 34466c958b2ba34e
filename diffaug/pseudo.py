"""Moved to diffaug.classify.pseudo in diffaug 0.4.0; this path warns and is removed in 0.7.0."""

from ._deprecated import moved

moved("diffaug.pseudo", ("diffaug.classify.pseudo",), "0.4.0", "0.7.0", globals())
