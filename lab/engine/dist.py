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

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Add up the gradients of all processes (each holds its share of a loss that is
        already normalised by the global count, so the sum is the full-batch gradient)."""
        if self.n == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``t`` over processes (a new tensor; ``t`` itself if one)."""
        if self.n == 1:
            return t
        out = t.detach().clone()
        torch.distributed.all_reduce(out)
        return out

    def gather_rows(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """All processes' (m_i, D) rows stacked in rank order, and where this process's start."""
        if self.n == 1:
            return x, 0
        sizes = torch.tensor([x.shape[0]], device=x.device)
        all_sizes = [torch.zeros_like(sizes) for _ in range(self.n)]
        torch.distributed.all_gather(all_sizes, sizes)
        counts = [int(s.item()) for s in all_sizes]
        width = max(counts)
        padded = x.new_zeros((width, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.zeros_like(padded) for _ in range(self.n)]
        torch.distributed.all_gather(parts, padded.contiguous())
        rank = self.acc.process_index
        rows = torch.cat([p[:c] for p, c in zip(parts, counts)], 0)
        return rows, sum(counts[:rank])

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
