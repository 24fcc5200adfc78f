"""Other devices' rules, enforced on the CPU: the `devices` tests run the product under these.

`mps_rules()`: every device reports MPS's capabilities (`capability.emulating("mps")`) and a dispatch
mode refuses any tensor op that reads or makes a float64 tensor, as Apple's Metal backend does.

`cudnn_rules()`: every device reports cuDNN's rule and a function mode refuses an RNN forward that
would need a backward pass (grad enabled, a tensor that requires grad) outside training mode, as
cuDNN refuses that backward (unless cuDNN is switched off around it, as the real rule allows).

Both modes are per thread (PyTorch keeps its mode stacks per thread): `on_thread(mode)` pushes one on
another thread through a function that runs there (the server's worker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from charnn import capability


class DeviceRuleError(RuntimeError):
    """What the emulated device refuses."""


class NoFloat64(TorchDispatchMode):
    """MPS: "Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64"."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if kwargs.get("dtype") == torch.float64 or any(
                isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tree_leaves((args, kwargs))):
            raise DeviceRuleError(f"MPS has no float64: {func} was asked for it")
        out = func(*args, **kwargs)
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tree_leaves(out)):
            raise DeviceRuleError(f"MPS has no float64: {func} made a float64 tensor")
        return out


RNN_FUNCTIONS = {"gru", "lstm", "rnn_tanh", "rnn_relu"}


class CudnnBackward(TorchFunctionMode):
    """cuDNN: "cudnn RNN backward can only be called in training mode"."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in RNN_FUNCTIONS and len(args) >= 7 and isinstance(args[2], (list, tuple)):
            train = args[6]  # (input, hx, params, has_biases, layers, dropout, train, bidirectional, batch_first)
            needs_grad = torch.is_grad_enabled() and any(
                isinstance(t, torch.Tensor) and t.requires_grad for t in tree_leaves((args, kwargs)))
            if needs_grad and not train and torch.backends.cudnn.enabled:
                raise DeviceRuleError("cudnn RNN backward can only be called in training mode")
        return func(*args, **kwargs)


@contextmanager
def mps_rules() -> Iterator[None]:
    with capability.emulating("mps"), NoFloat64():
        yield


@contextmanager
def cudnn_rules() -> Iterator[None]:
    with capability.emulating("cudnn"), CudnnBackward():
        yield


def on_thread(run: Callable[[Callable[[], None]], Any], mode: TorchDispatchMode | TorchFunctionMode) -> Callable[[], None]:
    """Push `mode` on the thread `run` executes functions on; returns the function that pops it there."""
    stack = ExitStack()
    run(lambda: stack.enter_context(mode))
    return lambda: run(stack.close)
