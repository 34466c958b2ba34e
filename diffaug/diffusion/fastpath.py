"""Training and sampling without the launch tax. The training step: `Trainer.train_step`'s math, graph-safe,
replayed as a CUDA graph (FastStep). Sampling: the network, compiled where asked, replayed as CUDA graphs at a few
padded batch sizes (GraphedForward).

Graph-safe means no host synchronisation and no host-side values inside the step: the LR and the EMA decay
are computed on the device from a step counter, the optimizer is fused and capturable with a tensor LR,
randomness comes from the trainer's generator (registered with the graph), the batch is drawn on the device
from the uint8 images already there, and the loss is summed on the device and read by the trainer every 25
steps only. Gradients are set to None before the backward pass, as the eager step does; under capture that
happens once, before recording (PyTorch's whole-network recipe), so backward writes fresh gradients in the
graph's pool at every replay instead of zeroing and accumulating into kept buffers.

On CUDA the step is captured once (after a few eager warm-up steps on a side stream: cuDNN autotuning,
lazy optimizer state, torch.compile) and each later step is one `graph.replay()`. Elsewhere the same body
runs eagerly. The eager `Trainer.train_step` stays the reference: tests/test_trainer.py checks both give
the same loss trajectory on CPU; benchmarks/gpu_check.py does the same on CUDA with the graph.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from .step import autocast, ema_decay_at, ema_update, lr_at, step_counter

WARMUP_STEPS = 3   # eager steps before capture (PyTorch's CUDA-graph recipe warms up on a side stream)


class FastStep:
    """Callable that advances `trainer` (a diffusion.trainer.Trainer) by one optimizer step; a CUDA graph
    replay on CUDA."""

    def __init__(self, trainer, capture: bool | None = None):
        self.tr = trainer
        dev = trainer.device
        self.capture = dev.type == "cuda" if capture is None else capture
        self.step = step_counter(trainer.step, dev)
        lrs = {id(g["lr"]) for g in trainer.opt.param_groups}
        if not all(torch.is_tensor(g["lr"]) for g in trainer.opt.param_groups) or len(lrs) != 1:
            raise TypeError("the fast path needs one tensor LR shared by all parameter groups (make_optimizer)")
        self.lr = trainer.opt.param_groups[0]["lr"]
        self.params = list(trainer.model.parameters())
        self.graph = None
        self.calls = 0

    def body(self) -> None:
        tr, cfg = self.tr, self.tr.cfg
        self.lr.copy_(lr_at(self.step, cfg, tr.steps, tr.spent if cfg.minutes else None))
        x, y, cond = tr.batch()
        with autocast(tr.device):
            loss = tr.loss_fn(tr.forward, x, y, tr.rng, tr.part, cond)
        tr.opt.zero_grad(set_to_none=True)   # no kernels: under capture, backward allocates in the graph's pool
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip, foreach=True)
        tr.opt.step()
        self.step += 1
        if tr.ranks.main:
            ema_update(tr.ema, tr.model, ema_decay_at(self.step, cfg))
        tr.loss_sum += loss.detach()

    def __call__(self) -> None:
        if not self.capture:
            self.body()
        elif self.graph is not None:
            self.graph.replay()
        elif self.calls < WARMUP_STEPS:
            side = torch.cuda.Stream(self.tr.device)
            side.wait_stream(torch.cuda.current_stream(self.tr.device))
            with torch.cuda.stream(side):
                self.body()
            torch.cuda.current_stream(self.tr.device).wait_stream(side)
        else:
            self.graph = torch.cuda.CUDAGraph()
            self.graph.register_generator_state(self.tr.rng)   # replays advance the trainer's generator
            with torch.cuda.graph(self.graph):
                self.body()   # recorded, not run
            self.graph.replay()
        self.calls += 1
        self.tr.step += 1


def graph_batch(n: int) -> int:
    """The batch a network call of `n` images replays at: n rounded up to a power of two. At most twice the rows,
    and one capture (memory pool, compilation) per octave of call sizes instead of one per size."""
    return 1 << max(0, n - 1).bit_length()


class GraphedForward:
    """`fn(z, t, y)` under no_grad replayed as CUDA graphs. A call of n images runs the graph of `graph_batch(n)`
    images, its inputs padded (a sampler's last partial batch, a small perturb call: no new capture, and the shapes
    a compiled network sees stay few and static); the network's rows are independent in eval mode (GroupNorm and
    attention work per image), so the padding rows change nothing. At most `max_graphs` captures are kept, the least
    recently used dropped first. Inputs are copied into static buffers, the graph is replayed, and the output is
    cloned so callers may keep it."""

    def __init__(self, fn, max_graphs: int = 4):
        self.fn = fn
        self.max_graphs = max_graphs
        self.graphs: OrderedDict = OrderedDict()   # (batch, image shape, strides, dtype) -> (graph, inputs, out)

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = len(z)
        key = (graph_batch(n), tuple(z.shape[1:]), tuple(z.stride()[1:]), z.dtype)
        if key not in self.graphs:
            self.graphs[key] = self._capture(padded((z, t, y), key[0]))
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        graph, (sz, st, sy), out = self.graphs[key]
        sz[:n].copy_(z)
        st[:n].copy_(t)
        sy[:n].copy_(y)
        graph.replay()
        return out[:n].clone()

    def _capture(self, static: tuple) -> tuple:
        """(graph, static inputs, static output) for the static inputs (z, t, y), which the graph reads."""
        side = torch.cuda.Stream(static[0].device)
        side.wait_stream(torch.cuda.current_stream(static[0].device))
        with torch.cuda.stream(side):   # warm-up: cuDNN autotuning, compilation, lazy init happen outside the graph
            for _ in range(2):
                self.fn(*static)
        torch.cuda.current_stream(static[0].device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(*static)
        return graph, static, out


def padded(inputs: tuple, batch: int) -> tuple:
    """Copies of `inputs` with `batch` rows, the rows repeated cyclically (real values in every padding row), each
    in its input's memory layout."""
    n = len(inputs[0])
    rows = torch.arange(batch, device=inputs[0].device) % n
    return tuple(a[rows].contiguous(memory_format=torch.channels_last)
                 if a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last) else a[rows] for a in inputs)
