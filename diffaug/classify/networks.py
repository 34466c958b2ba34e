"""The downstream networks: the reference SmallCNN, a ResNet-18 with a small-image stem, and the user's own, named
by a spec (`smallcnn`, `smallcnn(width=32)`, `resnet18`, `module:function`) or passed as a factory
(in_channels, num_classes) -> nn.Module. `factory_key` names a factory for caches: two factories with the same key
build the same network, and a factory it cannot name (a lambda over unkeyable state) gets None, never a guess."""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
from typing import Callable

import torch
from torch import nn

from ..checks import call_spec
from ..errors import DataError

Factory = Callable[[int, int], nn.Module]


class SmallCNN(nn.Module):
    """conv-BN-ReLU x4 with two early poolings, global average pooling, a linear head; any input >= 4x4.

    Pooling right after the first conv and width 16 are CPU choices: measured on 2 cores at batch 128,
    a 28x28 step takes 0.043 s (800 steps: ~35 s) against 0.25 s for width 32 without early pooling.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        w = width
        self.features = nn.Sequential(block(in_channels, w), nn.MaxPool2d(2), block(w, 2 * w), nn.MaxPool2d(2),
                                      block(2 * w, 4 * w), block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.head = nn.Linear(4 * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: what own-feature FID/KID and precision/recall are computed on."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resnet18(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with the small-image stem of CIFAR practice (He et al. 2016, sec. 4.2): a 3x3
    stride-1 first conv and no max-pool, so 8x8 to 32x32 inputs keep their resolution into the first stage."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=num_classes)   # weights=None: nothing is downloaded
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


BUILT_IN = {"smallcnn": SmallCNN, "resnet18": resnet18}
DEFAULT = "smallcnn"


def default_classifier(in_channels: int, num_classes: int) -> nn.Module:
    return SmallCNN(in_channels, num_classes)


def resolve_classifier(spec) -> Factory:
    """A factory from a spec: None (SmallCNN), a built-in name with keyword numbers ('smallcnn(width=32)',
    'resnet18'), 'module:function' (imported now; a DataError if it does not import), or a callable as it is."""
    if spec is None:
        return default_classifier
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise DataError(f"a classifier is a name ({', '.join(BUILT_IN)}), 'module:function' or a factory "
                        f"(in_channels, num_classes) -> nn.Module; got {spec!r}")
    text = spec.strip()
    parsed = call_spec(text.lower(), int, "whole number") if ":" not in text else None
    if parsed and parsed[0] in BUILT_IN:
        base, kwargs = BUILT_IN[parsed[0]], parsed[1]
        return functools.partial(base, **kwargs) if kwargs else base
    module, sep, name = text.partition(":")
    if not sep or not module or not name:
        raise DataError(f"unknown classifier {text!r}: use one of {', '.join(BUILT_IN)} or 'module:function'")
    try:
        factory = getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise DataError(f"classifier {text!r}: module {module!r} does not import ({e})") from None
    except AttributeError:
        raise DataError(f"classifier {text!r}: module {module!r} has no {name!r}") from None
    if not callable(factory):
        raise DataError(f"classifier {text!r} is not callable; it must be (in_channels, num_classes) -> nn.Module")
    return factory


def check_factory(factory: Factory, in_channels: int, num_classes: int) -> nn.Module:
    """Build the network once for this data, before any work: a factory that fails or returns something other than
    an nn.Module gets one clear error here, not deep inside a training loop."""
    name = getattr(factory, "__qualname__", repr(factory))
    try:
        net = factory(in_channels, num_classes)
    except Exception as e:   # the user's code: any failure is theirs to see, in one line
        raise DataError(f"the classifier factory {name} failed for {in_channels} channels and {num_classes} "
                        f"classes: {type(e).__name__}: {e}") from None
    if not isinstance(net, nn.Module):
        raise DataError(f"the classifier factory {name} returned {type(net).__name__}, not a torch nn.Module")
    return net


def factory_key(factory: Factory | None) -> str | None:
    """A name for the network a factory builds, stable across processes: the function's module and qualified name
    plus, for a functools.partial, its arguments and, for a closure or lambda, a hash of its code and the values it
    closes over. None when some part cannot be written down (then no cache may trust it)."""
    if factory is None:
        return "diffaug.classify.networks.SmallCNN"
    if isinstance(factory, functools.partial):
        inner = factory_key(factory.func)
        args = _plain((list(factory.args), dict(sorted(factory.keywords.items()))))
        return None if inner is None or args is None else f"{inner}{args}"
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    if module is None or qualname is None:   # a callable object: its class and its state
        state = _plain(vars(factory)) if hasattr(factory, "__dict__") else None
        cls = type(factory)
        return None if state is None else f"{cls.__module__}.{cls.__qualname__}{state}"
    key = f"{module}.{qualname}"
    if not module.startswith("diffaug."):   # a user's function: editing it must not reuse units of the old one
        source = _source_of(factory)
        if source is None:
            return None
        key += f"@{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    code = getattr(factory, "__code__", None)
    if "<locals>" in qualname or "<lambda>" in qualname:   # two closures of one factory share the qualname
        if code is None:
            return None
        cells = [c.cell_contents for c in (factory.__closure__ or ())]
        state = _plain([cells, list(factory.__defaults__ or ()), dict(factory.__kwdefaults__ or {})])
        if state is None:
            return None
        digest = hashlib.sha256(code.co_code + repr(code.co_consts).encode() + state.encode()).hexdigest()[:12]
        key += f"#{digest}"
    return key


def _source_of(factory) -> str | None:
    """The source text of a user's factory (function or class), or its compiled code where the source is not on
    disk; None when neither can be read."""
    import inspect

    try:
        return inspect.getsource(factory)
    except (OSError, TypeError):
        code = getattr(factory, "__code__", None)
        return None if code is None else code.co_code.hex() + repr(code.co_consts)


def _plain(value) -> str | None:
    """`value` as canonical JSON when it holds only numbers, strings, booleans, None, lists and dicts, else None."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError):
        return None
