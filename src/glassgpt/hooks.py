"""Hook points: named places in the model where an activation can be read or replaced.

A `HookPoint` is an identity module. The model passes every interesting
activation through one (`x = self.hook(x)`), and after construction each hook
point gets its name from where it sits (`blocks.0.attn.pattern`). With no
function attached, a hook point returns its input untouched, so an unused hook
costs one Python call.

A hook function is `fn(tensor, hook) -> tensor | None`: return None to only
look, or a tensor of the same shape to replace the activation (ablation,
patching).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]


class HookPoint(nn.Module):
    def __init__(self):
        super().__init__()
        self.name = ""
        self.fns: list[HookFn] = []

    @property
    def active(self) -> bool:
        return bool(self.fns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fn in self.fns:
            out = fn(x, self)
            if out is not None:
                if out.shape != x.shape:
                    raise ValueError(
                        f"hook on {self.name} returned shape {tuple(out.shape)}, expected {tuple(x.shape)}"
                    )
                x = out
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class HookedModule(nn.Module):
    """Mixin for the root model: names its hook points and attaches functions to them."""

    def name_hook_points(self) -> None:
        self.hook_points: dict[str, HookPoint] = {}
        for path, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = path
                self.hook_points[path] = module

    def hook_names(self) -> list[str]:
        return list(self.hook_points)

    def add_hook(self, name: str, fn: HookFn) -> None:
        self._hook_point(name).fns.append(fn)

    def remove_hooks(self, names: Iterable[str] | None = None) -> None:
        for name in names if names is not None else self.hook_points:
            self._hook_point(name).fns.clear()

    @contextlib.contextmanager
    def hooks(self, pairs: Iterable[tuple[str, HookFn]]):
        """Attach `(name, fn)` pairs for the duration of a `with` block."""
        pairs = list(pairs)
        try:
            for name, fn in pairs:
                self.add_hook(name, fn)
            yield self
        finally:
            for name, fn in pairs:
                fns = self._hook_point(name).fns
                if fn in fns:
                    fns.remove(fn)

    def run_with_cache(self, idx: torch.Tensor, names: Iterable[str] | None = None, **forward_kwargs):
        """Run the model and keep a detached copy of each named activation.

        Returns `(logits, cache)` with `cache[name]` a tensor. `names=None` caches
        every hook point. Asking for `attn.pattern` or `attn.scores` makes
        attention take the manual path for this call, whatever `attn_impl` says.
        """
        names = list(self.hook_points) if names is None else list(names)
        cache: dict[str, torch.Tensor] = {}

        def save(x, hook):
            cache[hook.name] = x.detach()

        with self.hooks((name, save) for name in names):
            logits, _ = self(idx, **forward_kwargs)
        return logits, cache

    def _hook_point(self, name: str) -> HookPoint:
        try:
            return self.hook_points[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, list(self.hook_points), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KeyError(f"no hook point named {name!r}{hint}") from None
