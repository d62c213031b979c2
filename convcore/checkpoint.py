"""Checkpoints: tensors in safetensors, everything else in JSON, written so that a crash never loses the last one.

Layout of a checkpoint folder:
    latest                      the name of the newest complete checkpoint (replaced atomically)
    step-00000123/tensors.safetensors   model state_dict ("model.<name>") and optimizer buffers ("optimizer.<key>")
    step-00000123/state.json    format, save sequence, step, epoch, optimizer hyper-parameters, scheduler, RNG
                                states, data position, history, and the manifest (name, shape, dtype) of every tensor
A save writes a fresh step folder (step-00000123-1 if that step was saved before) through a temporary name (files
fsynced, then the folder renamed and fsynced), then points `latest` at it (temporary file + rename), and only then
removes older step folders. "Older" means saved earlier, not a smaller step: each save records a sequence number one
above every other step folder's, so `keep` and `latest` agree on which saves are the newest even when a new run
(steps counting from 0 again) writes into a folder that holds an earlier run's checkpoints. Loading checks the JSON
and the tensor file against each other and against the model before changing anything. No pickle.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from ._validate import as_int

FORMAT = "convcore-checkpoint-1"
_DTYPES = {"float32", "float64", "int64"}
_SEQUENCE = "save_sequence"
_RESERVED = ("format", _SEQUENCE, "optimizer", "tensors")  # keys of state.json that save writes itself
_STEP_FOLDER = re.compile(r"step-(\d+)(?:-(\d+))?")  # the names save gives: step-00000123, step-00000123-1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _save_order(path: Path) -> tuple:
    """Sort key of a step folder, oldest save first: its recorded save sequence, then its step and suffix (parsed as
    numbers, whatever their digit count). Folders without a readable sequence (written before sequences were
    recorded, or left half-removed by a crash) sort before all others."""
    match = _STEP_FOLDER.fullmatch(path.name)
    try:
        sequence = json.loads((path / "state.json").read_text()).get(_SEQUENCE)
    except (OSError, ValueError, AttributeError):  # UnicodeDecodeError is a ValueError
        sequence = None
    if type(sequence) is not int:
        sequence = -1
    return sequence, int(match[1]), int(match[2] or 0)


def require_safetensors() -> None:
    """Raises ImportError, saying how to install it, where the safetensors package (checkpoints' tensors) is
    missing: for a caller that will save later, to fail before its work rather than after it."""
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError as e:
        raise ImportError("checkpoints need safetensors: pip install 'convcore[train]'") from e


def save(folder, model, optimizer=None, state: dict | None = None, keep: int = 1) -> Path:
    """Save model (+ optimizer) and the JSON-able `state` dict (its "step", a non-negative int, names the step
    folder; 0 where it has none) into `folder`.

    Returns the new step folder. Afterwards only the `keep` most recently saved step folders remain (this one among
    them): the order is that of the saves, as `latest` follows it, not that of the step numbers."""
    require_safetensors()
    from safetensors.numpy import save as st_save

    keep = as_int(keep, "keep", minimum=1)
    if state is not None and not isinstance(state, dict):
        raise TypeError(f"state must be a dict (JSON-serialisable values under string keys), got {type(state).__name__}")
    state = dict(state or {})
    reserved = [key for key in _RESERVED if key in state]
    if reserved:
        raise ValueError(f"state must not contain the keys {reserved}: save writes {list(_RESERVED)} itself")
    for key, value in state.items():  # checked before anything is written
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise TypeError(f"state[{key!r}] must be JSON-serialisable (numbers, strings, lists, dicts), got "
                            f"{type(value).__name__}: {e}") from None
    step = as_int(state.get("step", 0), "state['step']", minimum=0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    others = sorted((_save_order(p), p) for p in folder.glob("step-*") if p.is_dir() and _STEP_FOLDER.fullmatch(p.name))
    sequence = others[-1][0][0] + 1 if others else 0
    # np.asarray, not np.ascontiguousarray, which would turn 0-d buffers (num_batches_tracked) into shape (1,)
    tensors = {f"model.{k}": np.asarray(v, order="C") for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, _SEQUENCE: sequence, **state}
    if optimizer is not None:
        opt = optimizer.state_dict()
        tensors.update({f"optimizer.{k}": np.asarray(v, order="C") for k, v in opt["buffers"].items()})
        meta["optimizer"] = {"type": type(optimizer).__name__, "hyper": opt["hyper"], "step_count": opt["step_count"]}
    meta["tensors"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in tensors.items()}
    name = f"step-{step:08d}"
    if (folder / name).exists():  # never delete a folder `latest` may point at: a same-step save gets a new name
        name = next(f"{name}-{k}" for k in range(1, 1 << 30) if not (folder / f"{name}-{k}").exists())
    tmp = folder / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_file(tmp / "tensors.safetensors", st_save(tensors))
        _write_file(tmp / "state.json", json.dumps(meta, indent=1).encode())
        _fsync_dir(tmp)
    except BaseException:  # a full disk, an interrupt: the half-written folder goes (a full disk left it for good)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = folder / name
    os.rename(tmp, final)
    _fsync_dir(folder)
    pointer_tmp = folder / f".latest.tmp-{os.getpid()}"
    _write_file(pointer_tmp, name.encode())
    os.replace(pointer_tmp, folder / "latest")
    _fsync_dir(folder)
    for _, old in others[:max(0, len(others) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(folder) -> Path | None:
    """The newest complete checkpoint folder, or None when `folder` holds none."""
    pointer = Path(folder) / "latest"
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text().strip()
    except UnicodeDecodeError as e:
        raise ValueError(f"{pointer}: not a pointer to a checkpoint folder (not UTF-8 text: {e})") from e
    if not name.startswith("step-") or "/" in name or not (Path(folder) / name).is_dir():
        raise ValueError(f"{pointer}: points at {name!r}, which is not a checkpoint folder here")
    return Path(folder) / name


def _step_folder(path) -> Path:
    path = Path(path)
    return latest(path) if (path / "latest").is_file() else path


def read_state(path) -> dict:
    """The JSON state of a checkpoint (a step folder, or a checkpoint folder with `latest`), checked for its format:
    the state save was given and the keys save writes itself (format, save_sequence, optimizer, tensors); nothing is
    loaded into a model."""
    path = _step_folder(path)
    json_path, tensor_path = path / "state.json", path / "tensors.safetensors"
    if not json_path.is_file() or not tensor_path.is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint (needs state.json and tensors.safetensors)")
    try:
        meta = json.loads(json_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{json_path}: malformed JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("tensors"), dict):
        raise ValueError(f"{json_path}: not a {FORMAT} state file")
    return meta


def load(path, model, optimizer=None) -> dict:
    """Load a checkpoint (a step folder, or a checkpoint folder with `latest`) into model (+ optimizer).

    Everything is validated first (JSON, tensor manifest, keys, shapes, dtypes against the model); on any problem
    a ValueError names it and the model is unchanged. Returns the state dict that save was given (step, epoch,
    history, ...; not the keys save writes itself, so it can be given to save again)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    path = _step_folder(path)
    json_path, tensor_path = path / "state.json", path / "tensors.safetensors"
    meta = read_state(path)
    manifest = meta["tensors"]
    for key, info in manifest.items():
        if (not isinstance(info, dict) or info.get("dtype") not in _DTYPES or not isinstance(info.get("shape"), list)
                or not all(isinstance(d, int) and d >= 0 for d in info["shape"])):
            raise ValueError(f"{json_path}: bad manifest entry for {key!r}: {info!r}")
    try:
        tensors = st_load(tensor_path.read_bytes())
    except (SafetensorError, ValueError, OverflowError) as e:
        raise ValueError(f"{tensor_path}: malformed safetensors file ({e})") from e
    if set(tensors) != set(manifest):
        raise ValueError(f"{tensor_path}: tensors {sorted(set(tensors) ^ set(manifest))} disagree with the manifest")
    for key, arr in tensors.items():
        if list(arr.shape) != manifest[key]["shape"] or str(arr.dtype) != manifest[key]["dtype"]:
            raise ValueError(f"{tensor_path}: {key} is {arr.dtype}{list(arr.shape)}, the manifest says "
                             f"{manifest[key]['dtype']}{manifest[key]['shape']}")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.check_state_dict(model_state, strict=True)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: checkpoint does not fit the model: {e}") from e
    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(f"{path}: checkpoint has no optimizer state")
        info = meta["optimizer"]
        if not isinstance(info, dict):
            raise ValueError(f"{json_path}: optimizer must be a dict (type, hyper, step_count), got {info!r}")
        if info.get("type") != type(optimizer).__name__:
            raise ValueError(f"{path}: optimizer state is for {info.get('type')}, not {type(optimizer).__name__}")
        buffers = {k[len("optimizer."):]: v for k, v in tensors.items() if k.startswith("optimizer.")}
        try:
            optimizer.load_state_dict({"hyper": info["hyper"], "step_count": info["step_count"], "buffers": buffers})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: optimizer state does not fit the optimizer: {e}") from e
    model.load_state_dict(model_state, strict=True)
    return {key: value for key, value in meta.items() if key not in _RESERVED}
