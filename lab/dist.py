"""The few collective operations the training loop needs; no-ops in a single process."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list


class Dist:
    """Process count and rank from accelerate, plus the reductions the loop uses."""

    def __init__(self, accelerator: Accelerator):
        self.acc = accelerator
        self.n = accelerator.num_processes
        self.main = accelerator.is_main_process

    def all_true(self, flag: bool) -> bool:
        if self.n == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.acc.device)
        return bool(self.acc.reduce(t, reduction="sum").item() == self.n)

    def mean_grads(self, params: list[torch.nn.Parameter]) -> None:
        if self.n == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.n
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, values: list[float]) -> list[float]:
        if self.n == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        return self.acc.reduce(t, reduction="mean").tolist()

    def broadcast(self, obj):
        if self.n == 1:
            return obj
        box = [obj]
        broadcast_object_list(box)
        return box[0]

    def barrier(self) -> None:
        if self.n > 1:
            self.acc.wait_for_everyone()
