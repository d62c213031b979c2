"""The `convcore` command: train, summary, info, bench. Bad arguments exit with code 2 and a one-line message."""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ._runtime import MAX_THREADS

MODELS = ("lenet5", "alexnet", "zfnet", "vgg16", "resnet18", "resnet34", "resnet20", "googlenet")
DEFAULT_INPUT = {"lenet5": (1, 28, 28), "alexnet": (3, 227, 227), "resnet20": (3, 32, 32)}
TRAINABLE = ("lenet5", "resnet20")  # models that fit Fashion-MNIST's 28x28 single-channel images
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
# `convcore train` recipes. AdamW with a cosine schedule at batch 32 reaches 90.4-90.7% Fashion-MNIST test accuracy
# with LeNet-5 in 5 epochs (seeds 0-2); SGD (lr 0.05, momentum 0.9, cosine) 88.5-88.9%.
OPTIMIZER_DEFAULTS = {"adamw": {"lr": 2e-3, "weight_decay": 0.05},
                      "sgd": {"lr": 0.05, "weight_decay": 0.0, "momentum": 0.9}}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `convcore: error: ...` and exit code 2, no usage dump."""

    def error(self, message):
        self.exit(2, f"convcore: error: {message}\n")


def _checked(convert, valid, rule):
    """An argparse type that converts the text (convert raises ValueError where it cannot) and checks the value
    (valid), failing with `must be <rule>, got '<text>'`."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value
    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_nonnegative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
_thread_count = _checked(int, lambda v: 1 <= v <= MAX_THREADS, f"an integer from 1 to {MAX_THREADS}")
_shape = _checked(lambda text: tuple(int(v) for v in text.split(",")), lambda dims: 1 <= len(dims) <= 3 and
                  min(dims) >= 1, "1 to 3 comma-separated positive integers like 3,224,224")
_positive_float = _checked(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
_nonnegative_float = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
_momentum = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _holds_a_run(folder: Path) -> bool:
    """Whether an output folder holds an earlier run's checkpoint (a pointer to nothing counts: fit names it)."""
    from convcore import checkpoint

    try:
        return checkpoint.latest(folder / "checkpoint") is not None
    except ValueError:
        return True


def _default_out(model: str, resume: bool) -> Path:
    """runs/MODEL, or where that holds an earlier run, runs/MODEL-2, -3, ...: a new run takes the first free one (an
    earlier run's checkpoint is never replaced), --resume continues the newest."""
    folders = [Path(f"runs/{model}")]
    while folders[-1].exists():
        folders.append(Path(f"runs/{model}-{len(folders) + 1}"))
    if resume:
        return next((f for f in reversed(folders) if _holds_a_run(f)), folders[0])
    return next(f for f in folders if not _holds_a_run(f))


def _resumed_settings(args, out: Path):
    """(lr, weight_decay, momentum) a run resumed from out's checkpoint continues with (its own, whatever this call
    passes), or an error message where an explicit option asks for another; None where there is nothing to resume."""
    from convcore import checkpoint

    try:
        meta = checkpoint.read_state(out / "checkpoint")
        kind, hyper, base_lr = meta["optimizer"]["type"], meta["optimizer"]["hyper"], meta["scheduler"]["base_lr"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None  # fit refuses it, naming the problem
    wanted = {"adamw": "AdamW", "sgd": "SGD"}[args.optimizer]
    if kind != wanted:
        return f"--optimizer {args.optimizer}: the run in {out} was trained with {kind}; resume it with that one"
    kept = {"lr": base_lr, "weight_decay": hyper.get("weight_decay"), "momentum": hyper.get("momentum")}
    for name, value in kept.items():
        given = getattr(args, name)
        if given is not None and given != value:
            option = "--" + name.replace("_", "-")
            return (f"{option} {given}: the run in {out} continues with its own settings ({option} {value}); leave "
                    f"{option} out to resume it, or start a new run in another --out")
    return kept["lr"], kept["weight_decay"], kept["momentum"]


def _train(args):
    import convcore as cc
    from convcore import checkpoint, training

    if args.threads:
        cc.set_num_threads(args.threads)
    if args.data is not None and not Path(args.data).is_dir():
        print(f"convcore: error: --data {args.data}: no such folder", file=sys.stderr)
        return 2
    try:
        x_train, y_train, x_test, y_test = cc.data.load_fashion_mnist(args.data)
    except (FileNotFoundError, ValueError) as e:
        print(f"convcore: error: {e}", file=sys.stderr)
        return 2
    for x in (x_train, x_test):  # in place (the same bits): new arrays took 0.1-0.9 s of page faults on 2 vCPUs
        x -= FMNIST_MEAN
        x /= FMNIST_STD
    if args.momentum is not None and args.optimizer != "sgd":
        print(f"convcore: error: --momentum {args.momentum}: applies to --optimizer sgd only", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out is not None else _default_out(args.model, args.resume)
    if not args.resume and _holds_a_run(out):  # a new run there would replace that run's checkpoint
        print(f"convcore: error: --out {out} holds the checkpoint of an earlier run: pass --resume to continue it, "
              f"or another --out to start a new run", file=sys.stderr)
        return 2
    try:  # made now: a --out that cannot be a folder fails before any training, not after the first epoch
        (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"convcore: error: --out {out}: cannot make its folder ({e.strerror or e})", file=sys.stderr)
        return 2
    defaults = OPTIMIZER_DEFAULTS[args.optimizer]
    settings = [defaults.get(name) if given is None else given
                for name, given in (("lr", args.lr), ("weight_decay", args.weight_decay), ("momentum", args.momentum))]
    if args.resume:
        resumed = _resumed_settings(args, out)
        if isinstance(resumed, str):
            print(f"convcore: error: {resumed}", file=sys.stderr)
            return 2
        settings = resumed or settings
    lr, weight_decay, momentum = settings
    builder = getattr(cc.models, args.model)
    model = builder(num_classes=10, in_channels=1, seed=args.seed)
    loss = cc.nn.CrossEntropyLoss()
    if args.optimizer == "adamw":
        optimizer = cc.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        described = f"AdamW lr {lr} weight decay {weight_decay}"
    else:
        optimizer = cc.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        described = f"SGD lr {lr} momentum {momentum} weight decay {weight_decay}"
    scheduler = cc.optim.CosineAnnealingLR(optimizer, T_max=args.epochs)
    print(f"training {args.model} on Fashion-MNIST ({len(x_train)} train / {len(x_test)} test images): "
          f"{args.epochs} epochs, batch {args.batch_size}, {described}, cosine schedule, "
          f"{cc.get_num_threads()} threads, {cc.cpu_info()['selected_isa']} kernels; output in {out}")

    def report(epoch, history):
        print(f"epoch {epoch}/{args.epochs}: train loss {history.loss[-1]:.4f} acc {history.accuracy[-1]:.4f} | "
              f"test loss {history.val_loss[-1]:.4f} acc {history.val_accuracy[-1]:.4f} | "
              f"{history.images_per_second[-1]:,.0f} img/s", flush=True)

    if args.resume and not _holds_a_run(out):
        print(f"--resume: no checkpoint in {out / 'checkpoint'} yet, starting from the beginning")
    t0 = time.perf_counter()
    try:
        history = training.fit(model, loss, optimizer, (x_train, y_train), epochs=args.epochs,
                               batch_size=args.batch_size, val_data=(x_test, y_test), seed=args.seed,
                               scheduler=scheduler, checkpoint_dir=out / "checkpoint", resume=args.resume,
                               progress=args.progress, on_epoch=report)
    except (ValueError, FileNotFoundError, ImportError) as e:  # a checkpoint it cannot resume; safetensors, tqdm
        print(f"convcore: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convcore: interrupted; " + (f"the last checkpoint in {out / 'checkpoint'} is kept: continue with "
                                            f"--resume" if _holds_a_run(out) else "no checkpoint was written yet"),
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # main's
        raise
    except (FloatingPointError, OSError) as e:  # a diverged loss; a full disk (the last checkpoint is kept)
        print(f"convcore: error: {e}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0
    _, accuracy = training.evaluate(model, x_test, y_test)
    train_speed = float(np.mean(history.images_per_second))
    print(f"test accuracy {accuracy:.4f}; training speed {train_speed:,.0f} img/s "
          f"({seconds:.1f} s in all, evaluation included); checkpoint {checkpoint.latest(out / 'checkpoint')}")
    try:
        from convcore import viz
        viz.plot_history(history, out / "curves.png")
        if any(isinstance(m, cc.nn.Conv2d) for m in model.modules()):
            viz.plot_filters(model, out / "filters.png")
            first = next(n for n, m in model.named_modules() if isinstance(m, cc.nn.Conv2d))
            viz.plot_activations(model, x_test[0], first, out / "activations.png")
        print(f"plots: {out / 'curves.png'}, {out / 'filters.png'}, {out / 'activations.png'}")
    except (ImportError, OSError) as e:  # no matplotlib; a plot's path taken by a folder
        print(f"plots skipped: {e}")
    return 0


def _summary(args):
    import convcore as cc

    options = {"seed": 0}
    if args.num_classes:
        options["num_classes"] = args.num_classes
    if args.input_shape:
        options["in_channels"] = args.input_shape[0]
    try:  # --num-classes 99999999999 or an absurd channel count: refused or out of memory building it
        model = getattr(cc.models, args.model)(**options)
    except (ValueError, MemoryError) as e:
        given = " ".join(f"{k} {v}" for k, v in (("--num-classes", args.num_classes),
                                                  ("--input-shape", args.input_shape)) if v)
        print(f"convcore: error: {given}: cannot build {args.model} ({e or 'out of memory'})", file=sys.stderr)
        return 2
    shape = args.input_shape or DEFAULT_INPUT.get(args.model, (3, 224, 224))
    try:
        cc.summary(model, shape)
    except ValueError as e:
        print(f"convcore: error: input shape {shape} does not fit {args.model}: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"convcore: error: input shape {shape} is too large to run {args.model} on in this memory",
              file=sys.stderr)
        return 2
    return 0


def benchmarks_folder() -> Path:
    """benchmarks/ of the source checkout this package runs from (absent from an installed wheel)."""
    return Path(__file__).resolve().parent.parent / "benchmarks"


def _bench(args):
    folder = benchmarks_folder()
    available = sorted(p.stem[len("bench_"):] for p in folder.glob("bench_*.py")) if folder.is_dir() else []
    if not available:
        print("convcore: error: the benchmarks live in the source repository's benchmarks/ folder, which this "
              "installation does not include; run them from a clone: python benchmarks/bench_conv.py",
              file=sys.stderr)
        return 2
    if args.name is not None and args.name not in available:
        print(f"convcore: error: no benchmark {args.name!r}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    status = 0
    for name in [args.name] if args.name is not None else available:
        print(f"== benchmarks/bench_{name}.py {' '.join(args.rest)}".rstrip(), flush=True)
        status = subprocess.call([sys.executable, str(folder / f"bench_{name}.py"), *args.rest]) or status
    return status


def _info(args):
    import convcore as cc

    if args.threads:
        cc.set_num_threads(args.threads)
    info = cc.cpu_info()
    print(f"convcore {cc.__version__} on {info['machine']}")
    print(f"  CPU instruction set : {info['detected_isa']} (compiled: {', '.join(info['compiled_isas'])})")
    print(f"  selected kernels    : {info['selected_isa']} (gemm {info['gemm_kernel']}, pool {info['pool_kernel']})"
          + (f", capped by CONVCORE_ISA={info['isa_cap']}" if info["isa_cap"] else ""))
    print(f"  threads             : {info['num_threads']}")
    # LeNet-5 conv2 on a batch of 64: 6 -> 16 channels, 5x5, 14x14 -> 10x10
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6, 14, 14), dtype=np.float32)
    w = rng.standard_normal((16, 6, 5, 5), dtype=np.float32)
    b = rng.standard_normal(16, dtype=np.float32)
    flops = 2 * 64 * 16 * 6 * 25 * 10 * 10
    cc.functional.conv2d(x, w, b)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        cc.functional.conv2d(x, w, b)
        times.append(time.perf_counter() - t0)
    best = float(np.median(times))
    print(f"  conv2d LeNet-5 conv2, batch 64 (64x6x14x14 * 16x6x5x5): {best * 1e3:.3f} ms median of "
          f"{args.repeat}, {flops / best / 1e9:.1f} GFLOP/s")
    return 0


def build_parser():
    parser = _Parser(prog="convcore", description="convcore: CPU-first convolutional neural networks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    info = sub.add_parser("info", help="CPU features, selected kernels, threads, and one timed conv layer")
    info.add_argument("--threads", type=_thread_count, default=None, help="threads to use (default: all)")
    info.add_argument("--repeat", type=_positive_int, default=20, help="timed runs of the conv layer (default 20)")
    info.set_defaults(run=_info)

    train = sub.add_parser("train", help="train a model on Fashion-MNIST, print test accuracy and img/s")
    train.add_argument("--model", choices=TRAINABLE, default="lenet5", help="model to train (default lenet5)")
    train.add_argument("--epochs", type=_positive_int, default=5, help="epochs (default 5)")
    train.add_argument("--batch-size", type=_positive_int, default=32, help="mini-batch size (default 32)")
    train.add_argument("--optimizer", choices=tuple(OPTIMIZER_DEFAULTS), default="adamw",
                       help="optimizer (default adamw); the learning rate follows a cosine schedule over the epochs")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="initial learning rate (default 0.002 for adamw, 0.05 for sgd)")
    train.add_argument("--weight-decay", type=_nonnegative_float, default=None,
                       help="weight decay (default 0.05 for adamw, decoupled; 0 for sgd)")
    train.add_argument("--momentum", type=_momentum, default=None, help="SGD momentum (default 0.9)")
    train.add_argument("--threads", type=_thread_count, default=None, help="threads (default: all cores)")
    train.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files (default: "
                       "$CONVCORE_DATA, then /usr/share/datasets/fashion-mnist)")
    train.add_argument("--out", default=None, help="output folder for the checkpoint and plots (default runs/MODEL, "
                       "or runs/MODEL-2, -3, ... where that holds an earlier run; --resume: the newest)")
    train.add_argument("--seed", type=_nonnegative_int, default=0,
                       help="seed for initialisation and data order (default 0)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar (default: when the output is a terminal)")
    train.set_defaults(run=_train)

    summ = sub.add_parser("summary", help="per-layer shapes, parameters, multiply-adds and activation memory")
    summ.add_argument("model", choices=MODELS)
    summ.add_argument("--input-shape", type=_shape, default=None, help="C,H,W (default: the model's own)")
    summ.add_argument("--num-classes", type=_positive_int, default=None, help="classes (default: the model's)")
    summ.set_defaults(run=_summary)

    bench = sub.add_parser("bench", help="run the benchmark scripts of the source checkout's benchmarks/")
    bench.add_argument("name", nargs="?", default=None, help="one benchmark (conv, gemm, pool, train, infer; "
                       "default: all of them, one after another)")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark script")
    bench.set_defaults(run=_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # the reader of the output went away (| head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush finds no pipe
        return 1
    except KeyboardInterrupt:
        print("convcore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
