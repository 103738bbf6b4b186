"""Hook points: named places in the model where an activation can be read or replaced.

A `HookPoint` is an identity module. The model passes every interesting
activation through one (`x = self.hook(x)`), and after construction each hook
point gets its name from where it sits (`blocks.0.attn.pattern`). With no
function attached, a hook point returns its input untouched, so an unused hook
costs one Python call.

A hook function is `fn(tensor, hook) -> tensor | None`: return None to only
look, or a tensor of the same shape to replace the activation (ablation,
patching).

Two lifetimes:
- `model.add_hook(name, fn)` attaches fn to the model itself: every forward pass,
  in every thread, runs it until `model.remove_hooks()`.
- `model.hooks(...)`, `run_with_hooks` and `run_with_cache` attach functions for
  one call. They live in a `contextvars.ContextVar`, so only forward passes made
  by the same thread (or asyncio task) inside that call see them: a generation
  running in another thread on the same model neither triggers nor disturbs them.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import Callable, Iterable, Union

import torch
from torch import nn

from glassgpt.errors import did_you_mean

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]
NameFilter = Union[str, Iterable[str], Callable[[str], bool]]

# The hooks attached for the current call: {hook point: (fn, ...)}. Each thread starts with the
# empty default, and `hooks(...)` sets a new mapping and puts the old one back when it ends.
_scoped: contextvars.ContextVar[dict] = contextvars.ContextVar("glassgpt_scoped_hooks", default={})


_count_lock = threading.Lock()


def _count(points, step: int) -> None:
    """Tell hook points that a call (in some thread) attached functions to them, or finished."""
    with _count_lock:
        for point in points:
            point.scoped_count += step


class NoHookPoint(KeyError, ValueError):
    """A name that is no hook point of the model (a KeyError, as before, and a ValueError)."""

    __str__ = Exception.__str__  # the sentence itself, not KeyError's quoted repr


class HookPoint(nn.Module):
    """`needs_weights=True`: the activation exists only on attention's manual path (the scores and
    weights the fused kernel never materialises), so watching it sends the call down that path."""

    def __init__(self, needs_weights: bool = False):
        super().__init__()
        self.needs_weights = needs_weights
        self.name = ""
        self.fns: list[HookFn] = []  # attached to the model: seen by every call, in every thread
        self.scoped_count = 0  # calls, in any thread, with hooks attached here now (0: skip the lookup)

    def scoped_fns(self) -> tuple[HookFn, ...]:
        """The functions attached to this hook point for the current call (this thread's)."""
        return _scoped.get().get(self, ())

    @property
    def active(self) -> bool:
        """Whether a forward pass made now, in this thread, would run a function here."""
        return bool(self.fns) or (self.scoped_count > 0 and bool(self.scoped_fns()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The common case, nothing attached anywhere, reads two attributes: no ContextVar lookup,
        # which torch.compile cannot trace (it would break the graph at every hook point).
        if not self.fns and not self.scoped_count:
            return x
        for fn in (*self.fns, *(self.scoped_fns() if self.scoped_count else ())):
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

    def resolve_names(self, names: NameFilter | None, argument: str = "names") -> list[str]:
        """Hook point names from None (all), one name, a list of names or a filter `fn(name) -> bool`,
        in the model's order for a filter. A name that is no hook point, or a filter that matches
        nothing, raises ValueError naming `argument`."""
        if names is None:
            return list(self.hook_points)
        if callable(names):
            chosen = [name for name in self.hook_points if names(name)]
            if not chosen:
                raise ValueError(f"{argument}: the filter matches no hook point of this model")
            return chosen
        chosen = [names] if isinstance(names, str) else list(names)
        for name in chosen:
            self._hook_point(name, argument)
        return chosen

    def add_hook(self, name: str, fn: HookFn) -> None:
        """Attach fn to the model: every forward pass, in every thread, runs it until `remove_hooks`."""
        self._hook_point(name).fns.append(fn)

    def remove_hooks(self, names: Iterable[str] | None = None) -> None:
        """Remove the functions `add_hook` attached (those of `hooks(...)` end with their call)."""
        for name in names if names is not None else self.hook_points:
            self._hook_point(name).fns.clear()

    @contextlib.contextmanager
    def hooks(self, pairs: Iterable[tuple[NameFilter, HookFn]]):
        """Attach `(name_or_filter, fn)` pairs for the duration of a `with` block, seen only by
        forward passes made in this thread (or asyncio task) inside the block."""
        outer = _scoped.get()
        attached = dict(outer)  # {hook point: (fn, ...)}: the enclosing call's hooks, then these
        for names, fn in pairs:
            for name in self.resolve_names(names, "fwd_hooks"):
                point = self._hook_point(name)
                attached[point] = (*attached.get(point, ()), fn)
        added = [point for point in attached if attached[point] != outer.get(point, ())]
        _count(added, +1)
        token = _scoped.set(attached)
        try:
            yield self
        finally:
            _scoped.reset(token)
            _count(added, -1)

    def run_with_hooks(self, idx: torch.Tensor, fwd_hooks: Iterable[tuple[NameFilter, HookFn]] = (),
                       **forward_kwargs):
        """Run the model with `fwd_hooks = [(name_or_filter, fn)]` attached for this call only;
        returns what `forward` returns, `(logits, loss)`."""
        with self.hooks(fwd_hooks):
            return self(idx, **forward_kwargs)

    def run_with_cache(self, idx: torch.Tensor, names: NameFilter | None = None, **forward_kwargs):
        """Run the model and keep a detached copy of each named activation.

        Returns `(logits, cache)` with `cache[name]` a tensor. `names=None` caches
        every hook point; `names` may also be a list or a filter `fn(name) -> bool`.
        Asking for `attn.pattern` or `attn.scores` makes attention take the manual
        path for this call, whatever `attn_impl` says.
        """
        names = self.resolve_names(names)
        cache: dict[str, torch.Tensor] = {}

        def save(x, hook):
            cache[hook.name] = x.detach()

        with self.hooks((name, save) for name in names):
            logits, _ = self(idx, **forward_kwargs)
        return logits, cache

    def _hook_point(self, name: str, argument: str = "name") -> HookPoint:
        try:
            return self.hook_points[name]
        except (KeyError, TypeError):
            hint = did_you_mean(str(name), self.hook_points)
            raise NoHookPoint(f"{argument}: no hook point named {name!r}{hint}") from None
