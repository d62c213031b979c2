"""atheris fuzz target: arbitrary bytes as a checkpoint's tensor file (beside a valid state.json) or as its
state.json must be refused with ValueError / FileNotFoundError, never crash or raise anything else.

Run: python tests/fuzz/fuzz_checkpoint.py -runs=20000 (libFuzzer options); exits non-zero on a finding.
"""
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import numpy as np

    import convcore as cc
    from convcore import checkpoint

MODEL = cc.nn.Sequential(cc.nn.Conv2d(1, 2, 3, rng=0), cc.nn.ReLU(), cc.nn.Flatten(), cc.nn.Linear(8, 3, rng=1))
FOLDER = Path(tempfile.mkdtemp(prefix="convcore-fuzz-"))
GOOD = checkpoint.save(FOLDER, MODEL, None, {"step": 1})
GOOD_TENSORS = (GOOD / "tensors.safetensors").read_bytes()
GOOD_STATE = (GOOD / "state.json").read_bytes()


def one_input(data: bytes):
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 2)
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    if target == 0:
        tensors, state = payload, GOOD_STATE
    elif target == 1:
        tensors, state = GOOD_TENSORS, payload
    else:  # a mutated copy of the good tensor file: flip bytes at fuzzed places
        mutated = bytearray(GOOD_TENSORS)
        for i in range(0, len(payload) - 1, 2):
            mutated[payload[i] * 7 % len(mutated)] = payload[i + 1]
        tensors, state = bytes(mutated), GOOD_STATE
    (GOOD / "tensors.safetensors").write_bytes(tensors)
    (GOOD / "state.json").write_bytes(state)
    before = [p.data.copy() for p in MODEL.parameters()]
    try:
        checkpoint.load(FOLDER, MODEL, None)
    except (ValueError, FileNotFoundError):
        for p, b in zip(MODEL.parameters(), before):
            if not np.array_equal(p.data, b, equal_nan=True):
                raise AssertionError("a refused checkpoint changed the model") from None


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
