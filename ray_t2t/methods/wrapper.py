"""A task model with extra trained parts, as one nn.Module: what gan and vae give the shared loop.
Not a method itself (METHODS does not list it).

The loop builds one DeepSpeed engine around whatever build() returns, so a method whose training
needs more than the task model (gan's discriminator, vae's posterior network) puts those parts next
to it in a TaskModelWrapper: one optimizer, one checkpoint, one parameter count. To the rest of the
loop the wrapper *is* the task model: forward() (the teacher-forced validation loss), generate()
(decoding), get_encoder() (FLOPs per token) and .config all go to `task_model`, and export saves the
task model alone (plain transformers; the extra parts are training machinery).

Buffers of a wrapper (step counters, a reward baseline) are in its state dict, so DeepSpeed
checkpoints keep them and a resumed run continues its schedules where it stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ray_t2t.methods.base import Setup
    from ray_t2t.storage import StoragePath


class TaskModelWrapper(torch.nn.Module):
    def __init__(self, task_model: torch.nn.Module) -> None:
        super().__init__()
        self.task_model = task_model
        self.config = task_model.config
        # loss() calls while training: the clock of a method's own schedules (annealing, D/G phases)
        self.register_buffer("loss_calls", torch.zeros((), dtype=torch.long))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.task_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.task_model.generate(*args, **kwargs)

    def get_encoder(self) -> Any:
        return self.task_model.get_encoder()

    def optimizer_step(self, accumulation: int) -> int:
        """The 0-based optimizer step the current loss() call belongs to (every micro-step of one
        optimizer step gets the same number), counting this call."""
        step = int(self.loss_calls) // accumulation
        self.loss_calls += 1
        return step


def unwrap(model: torch.nn.Module) -> TaskModelWrapper:
    """The wrapper inside a DeepSpeed engine (or the wrapper itself)."""
    return getattr(model, "module", model)


def export_task_model(model: torch.nn.Module, folder: StoragePath, setup: Setup = None) -> None:
    """save_pretrained of the task model alone: a plain transformers model."""
    unwrap(model).task_model.save_pretrained(folder)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions in `mask` [batch, positions] of `states` [batch, positions, hidden]."""
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)
