"""The package's shape, read from its own imports: no circles, nothing imports the package that contains it,
no module past 400 lines; and each default and choice list has one source that every signature follows."""

import ast
import inspect
from pathlib import Path

import pytest

import diffaug
from diffaug.diffusion import sampling

ROOT = Path(diffaug.__file__).parent
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("diffaug",) + path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """Every diffaug module `name` imports, at the top or inside a function (a lazy import is still an arrow)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("diffaug")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("diffaug"):
                base = node.module
            else:
                continue
            for alias in node.names:   # `from . import x`: the module x when there is one, else the package
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


GRAPH = {name: _imports(name, path, _modules()) for name, path in _modules().items()}


def test_the_import_graph_has_no_circles():
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == "open":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_no_module_imports_a_package_that_contains_it():
    upward = [(m, n) for m, targets in GRAPH.items() for n in targets
              if m.startswith(n + ".") and _modules()[n].name == "__init__.py"]
    assert not upward, f"modules importing their own package's __init__: {upward}"


def test_no_module_is_longer_than_the_limit():
    lines = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")}
    long = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_version_has_one_source():
    import tomllib

    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    from diffaug._version import __version__
    assert diffaug.__version__ == __version__


def _sampling_entry_points():
    from diffaug.adapters.albumentations import AlbumentationsDiffusionAugment
    from diffaug.adapters.source import AugmentSource
    from diffaug.hf import expand_dataset, perturb_dataset

    return [diffaug.Generator.sample, diffaug.Generator.perturb, diffaug.Generator.denoiser,
            diffaug.DiffusionAugment.__init__, diffaug.DiffusionBatchAugment.__init__, AugmentSource.__init__,
            AlbumentationsDiffusionAugment.__init__, diffaug.SampleBank.build, expand_dataset, perturb_dataset]


@pytest.mark.parametrize("parameter, default", [("steps", sampling.SAMPLE_STEPS), ("sampler", sampling.SAMPLER),
                                                ("guidance", sampling.GUIDANCE), ("strength", sampling.STRENGTH)])
def test_every_sampling_signature_takes_its_default_from_the_sampling_spec(parameter, default):
    seen = 0
    for fn in _sampling_entry_points():
        p = inspect.signature(fn).parameters.get(parameter)
        if p is not None:
            seen += 1
            assert p.default == default, f"{fn.__qualname__}({parameter}={p.default!r}) drifted from {default!r}"
    assert seen >= 2
    spec = sampling.SamplingSpec()
    if hasattr(spec, parameter):
        assert getattr(spec, parameter) == default


def test_the_cli_takes_its_sampling_defaults_and_choices_from_the_same_source():
    from diffaug.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("sample", "expand"):
        actions = {a.dest: a for a in sub[command]._actions}
        assert actions["steps"].default == sampling.SAMPLE_STEPS
        assert actions["guidance"].default == sampling.GUIDANCE
        assert actions["sampler"].default == sampling.SAMPLER
        assert tuple(actions["sampler"].choices) == sampling.SAMPLER_CHOICES
    assert {a.dest: a for a in sub["expand"]._actions}["strength"].default == sampling.STRENGTH
    assert tuple({a.dest: a for a in sub["sample"]._actions}["spacing"].choices) == sampling.SPACING_CHOICES


# The rooms of docs/design.md, bottom to top: a module may import its own room and the rooms below it, never one
# above (lazy imports inside functions included: an arrow is an arrow).
ROOMS = [("diffaug._version", "diffaug._deprecated", "diffaug.errors", "diffaug.checks", "diffaug.io",
          "diffaug.workers"),
         ("diffaug.data", "diffaug.images", "diffaug.loading", "diffaug.grid"),
         ("diffaug.diffusion",),
         ("diffaug.generator",),
         ("diffaug.classify", "diffaug.pseudo"),   # diffaug.pseudo: the shim of its old path
         ("diffaug.fitting",),
         ("diffaug.adapters", "diffaug.hf"),
         ("diffaug.evaluation",),
         ("diffaug.demo", "diffaug.cli", "diffaug.cli_args", "diffaug.cli_evaluate", "diffaug.__main__")]


def _room(module: str) -> int:
    for rank, prefixes in enumerate(ROOMS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return len(ROOMS)   # the package's own __init__: the public face, above everything


def test_no_module_imports_a_room_above_its_own():
    assert all(_room(m) < len(ROOMS) for m in GRAPH if m != "diffaug"), "a module outside every room"
    upward = sorted((m, n) for m, targets in GRAPH.items() for n in targets if _room(n) > _room(m))
    assert not upward, f"imports into a room above: {upward}"


def test_the_commands_that_never_augment_start_without_the_classifier_stack():
    """`import diffaug` and the parsing of fit, sample, expand and info leave torchvision (and the classifier and
    evaluation stack it comes with) unimported: every such command started 1.5-2.5 s later with it. In a fresh
    interpreter, since this one imported them long ago; the torchvision names still resolve on first use."""
    import subprocess
    import sys
    code = ("import sys, diffaug, diffaug.cli\n"
            "for command in ('fit', 'sample', 'expand', 'info'):\n"
            "    diffaug.cli.build_parser(command)\n"
            "assert diffaug.cli.command_of(['--quiet', 'info', 'g.safetensors']) == 'info'\n"
            "print(sorted(m for m in sys.modules if m.startswith(('torchvision', 'diffaug.classify', "
            "'diffaug.evaluation'))))\n"
            "from diffaug import DiffusionAugment\n"
            "from diffaug.adapters import augment_dataset\n"
            "print('torchvision' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "True"]
