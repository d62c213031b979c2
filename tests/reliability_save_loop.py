"""Child process for the kill test: saves checkpoints in a loop, each step's weights all equal to the step number.

Prints "ready" once started; the parent kills it (SIGKILL) at random moments and checks the newest checkpoint.
"""
import sys

import numpy as np

import convcore as cc
from convcore import checkpoint

folder, start = sys.argv[1], int(sys.argv[2])
model = cc.nn.Sequential(cc.nn.Conv2d(3, 16, 3, rng=0), cc.nn.ReLU(), cc.nn.Flatten(), cc.nn.Linear(16 * 36, 10, rng=1))
opt = cc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
for p in model.parameters():
    opt.buffers[f"momentum_buffer.{len(opt.buffers)}"] = np.zeros_like(p.data)
print("ready", flush=True)
step = start
while True:
    step += 1
    for p in model.parameters():
        p.data[...] = step
    checkpoint.save(folder, model, opt, {"step": step})
