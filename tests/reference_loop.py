"""A hand-written plain-PyTorch training loop: the reference trainlab's fit() must reproduce.

It knows nothing of trainlab except the documented data-order contract (each epoch's order is
``torch.randperm`` from a generator seeded with ``epoch_seed(seed, epoch)``). ``fused`` picks
torch's fused SGD (what trainlab uses on the CPU unless a recipe says otherwise) or torch's default
implementation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainlab.data.loaders import epoch_seed


def reference_fit(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    no_decay_bias: bool = False,
    accumulate: int = 1,
    clip_grad_norm: float | None = None,
    clip_grad_value: float | None = None,
    fused: bool = True,
) -> nn.Module:
    if no_decay_bias:
        decay = [p for name, p in model.named_parameters() if not name.endswith("bias")]
        no_decay = [p for name, p in model.named_parameters() if name.endswith("bias")]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        groups = [{"params": list(model.parameters())}]
    implementation = {"fused": True} if fused else {}  # else torch's default
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **implementation)
    loss_function = nn.CrossEntropyLoss()
    count = len(inputs)
    batches = math.ceil(count / batch_size)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(count, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
        for window_start in range(0, batches, accumulate):
            window = range(window_start, min(window_start + accumulate, batches))
            window_items = sum(len(order[b * batch_size : (b + 1) * batch_size]) for b in window)
            for b in window:
                index = order[b * batch_size : (b + 1) * batch_size]
                loss = loss_function(model(inputs[index]), targets[index])
                scale = len(index) / window_items
                (loss * scale if scale != 1.0 else loss).backward()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            if clip_grad_value is not None:
                nn.utils.clip_grad_value_(model.parameters(), clip_grad_value)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return model
