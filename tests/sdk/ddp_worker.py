"""Run by tests/sdk/test_train.py under torchrun: a few DDP steps, then each rank saves its weights."""

import os
import sys

import torch
import torch.distributed as dist

from pixlm.train import TrainConfig, train

out = sys.argv[1]
cfg = TrainConfig(
    output=os.path.join(out, "ddp.pt"),
    eval_data="/nonexistent",
    max_images=512,
    epochs=1,
    batch_size=32,
    patch=4,
    codes=32,
    threads=1,
    warmup_steps=2,
    model={"n_layer": 1, "n_head": 2, "d_model": 32},
)
result = train(cfg, log=lambda s: None)
state = {"world": dist.get_world_size(), "step": result.step, "weights": result.model.state_dict()}
torch.save(state, os.path.join(out, f"rank{dist.get_rank()}.pt"))
