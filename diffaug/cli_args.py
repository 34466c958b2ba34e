"""Argument helpers the `diffaug` sub-commands share: the DATA options and loading, and parsers of list options."""

from __future__ import annotations

import argparse

from .errors import DiffaugError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help (where it has one: None means "chosen for you", said in the text), the
    description and the example below it wrapped to the terminal."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or action.default in (None, argparse.SUPPRESS) or action.option_strings == [] \
                or isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction, argparse._VersionAction)):
            return text
        return text + " (default: %(default)s)"


def data_args(p) -> None:
    p.add_argument("data", help="built-in name (digits, fashion-mnist), .npz file, image folder, or saved HF dataset")
    p.add_argument("--split", default="train", choices=["train", "test", "all"],
                   help="split of a built-in or HF dataset")
    p.add_argument("--root", help="folder with the Fashion-MNIST IDX files (default: the Debian package's)")
    p.add_argument("--image-column", default="image", help="HF datasets: the image column")
    p.add_argument("--label-column", default="label", help="HF datasets: the label column")
    p.add_argument("--image-size", type=int, metavar="N", help="resize every image's shorter side to N (antialiased) "
                   "and crop its centre to N x N, as torchvision's Resize + CenterCrop (needed for a folder of mixed "
                   "sizes; default: the images' own size)")
    p.add_argument("--background", default="white", help="the colour transparent pixels are composited on: a name, "
                   "#rrggbb or r,g,b")


def load(args, source=None, split=None):
    """The DATA of `args` (or `source`), at --image-size on --background."""
    from .loading import load_data
    return load_data(source or args.data, split or args.split, image_column=args.image_column,
                     label_column=args.label_column, root=args.root, image_size=args.image_size,
                     background=args.background, progress=not getattr(args, "quiet", False))


def ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(0 if t.strip() == "all" else int(t) for t in text.split(","))
    except ValueError:
        raise DiffaugError(f"expected comma-separated whole numbers (or 'all'), got {text!r}") from None


def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise DiffaugError(f"expected comma-separated numbers, got {text!r}") from None


def strength(text: str) -> float | tuple[float, ...]:
    """--strength: one number, or low,high."""
    values = floats(text)
    return values[0] if len(values) == 1 else values


def specs(text: str) -> tuple[str, ...]:
    """Comma-separated names that may hold their own commas in parentheses: 'smallcnn,smallcnn(width=32)'."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if depth or not all(parts):
        raise DiffaugError(f"expected comma-separated names, e.g. 'smallcnn,smallcnn(width=32)', got {text!r}")
    return tuple(parts)


def jobs(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}") from None
