"""The ``anyoptim`` command: the lesson's experiments.

Subcommands
-----------
compare
    Train the lesson's network on the moons data with GD, Momentum, RMSprop and
    Adam, then with the stepped learning-rate decay; print a table, write the
    loss curves and a decision boundary per optimizer.
trajectories
    Paths of GD, Momentum, RMSprop and Adam on an ill-conditioned quadratic and
    on the Rosenbrock function, drawn on contour plots.
batch-sizes
    Batch, mini-batch and stochastic gradient descent on the same problem.
train
    Any optimizer of the library on a generated data set or a user's .npz/.csv file
    (``--save FILE`` writes a checkpoint, ``--resume`` continues from it).
predict
    Apply a network saved by ``train --save`` to the inputs in a .csv/.npz file.

Bad input ends the command with one line ``anyoptim: error: ...`` on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..engines.numpy import KernelBuildError
from ..nn.files import shown
from ..nn.mlp import ACTIVATIONS
from .arguments import ArgumentParser as _Parser
from .arguments import UsageError, add_file_arguments, file_options
from .arguments import non_negative_float as _non_negative_float
from .arguments import positive_int as _positive_int
from .arguments import seed as _seed
from .arguments import widths as _widths
from .backends import BACKENDS, DTYPES
from .batch_sizes import BATCH_SIZE_LEARNING_RATE, BATCH_SIZE_STEPS, run_batch_sizes, step_noise
from .launch import only_rank_0_speaks
from .problem import DEFAULT_SEED, LESSON, lesson_problem
from .saved import add_predict_parser, run_predict_command
from .seeds import SEED_COLUMNS, run_seeds, seed_list, table_rows
from .training import DATASETS, OPTIMIZER_NAMES, OUTPUT_CHOICES, SCHEDULES, run_training
from .trajectories import SURFACES, reversals, run_trajectories

__all__ = ["main"]

PROG = "anyoptim"


#: The loss each output layer is trained with (anyoptim.nn), for figure labels.
_LOSS_NAMES = {
    "sigmoid": "mean binary cross-entropy",
    "softmax": "mean categorical cross-entropy",
    "identity": "mean squared error",
}


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="figures", metavar="DIR", help="folder for the PNG figures (default: figures)")
    parser.add_argument("--no-plots", action="store_true", help="print the table only, write no figures")


def _add_training(parser: argparse.ArgumentParser, *, epochs: int | None) -> None:
    parser.add_argument("--backend", default="numpy", choices=BACKENDS, help="array library (default: numpy)")
    parser.add_argument(
        "--device", default=None, help="device of that library, e.g. cpu, cuda:0 (default: its default)"
    )
    parser.add_argument("--dtype", default="float64", choices=DTYPES, help="floating-point type (default: float64)")
    if epochs is not None:
        parser.add_argument(
            "--epochs", type=_positive_int, default=epochs, help=f"passes over the data (default: {epochs})"
        )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=DEFAULT_SEED,
        help=f"seed of the data, initial weights and shuffling (default: {DEFAULT_SEED})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``anyoptim`` command and its subcommands."""
    parser = _Parser(prog=PROG, description="First-order optimizers written once for every Array API library.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    compare = commands.add_parser(
        "compare",
        help="the lesson's optimizer comparison on the moons data",
        description="Train the lesson's 2-5-2-1 network on 300 moons samples with GD, Momentum, RMSprop "
        "and Adam (lr 0.0007), then GD, Momentum (lr0 0.1) and Adam (lr0 0.01) with the stepped decay "
        "lr0 / (1 + floor(epoch / 1000)).",
    )
    _add_training(compare, epochs=LESSON.epochs)
    compare.add_argument(
        "--seeds", type=_positive_int, default=1, help="initialization seeds --seed, --seed + 1, ... (default: 1)"
    )
    _add_output(compare)

    trajectories = commands.add_parser(
        "trajectories",
        help="optimizer paths on an ill-conditioned quadratic and the Rosenbrock function",
        description="Follow GD, Momentum, RMSprop and Adam on two 2-D surfaces and draw their paths.",
    )
    _add_output(trajectories)

    batch_sizes = commands.add_parser(
        "batch-sizes",
        help="batch, mini-batch and stochastic gradient descent on the moons data",
        description="Plain gradient descent with the whole data set, mini-batches of 64 and single examples.",
    )
    _add_training(batch_sizes, epochs=None)
    batch_sizes.add_argument(
        "--steps",
        type=_positive_int,
        default=BATCH_SIZE_STEPS,
        help=f"gradient-descent steps of each run (default: {BATCH_SIZE_STEPS})",
    )
    _add_output(batch_sizes)

    train = commands.add_parser(
        "train",
        help="train an MLP on a generated data set or your own .npz/.csv file",
        description="Train a network with any optimizer of the library on a generated data set or a file "
        "(.npz with arrays X and y; .csv: delimiter, header and label column detected, or set with the options).",
    )
    train.add_argument(
        "--data",
        default="moons",
        metavar="NAME|FILE",
        help=f"{', '.join(DATASETS)}, or a .npz/.csv file (default: moons)",
    )
    train.add_argument("--samples", type=_positive_int, default=300, help="size of a generated data set (default: 300)")
    train.add_argument(
        "--noise", type=_non_negative_float, default=0.2, help="noise of a generated data set (default: 0.2)"
    )
    train.add_argument("--hidden", type=_widths, default=(5, 2), help="hidden layer widths, e.g. 5,2 (default: 5,2)")
    train.add_argument("--activation", default="relu", choices=ACTIVATIONS, help="hidden activation (default: relu)")
    train.add_argument(
        "--output", default="auto", choices=OUTPUT_CHOICES, help="output layer (default: from the labels)"
    )
    train.add_argument("--optimizer", default="adam", choices=tuple(OPTIMIZER_NAMES), help="(default: adam)")
    train.add_argument(
        "--learning-rate",
        type=_non_negative_float,
        default=None,
        help="(default: the optimizer's own: 0.001 for Adam, 1.0 for Adadelta, ...)",
    )
    train.add_argument("--batch-size", type=_positive_int, default=64, help="examples per step (default: 64)")
    _add_training(train, epochs=1000)
    _add_output(train)
    train.add_argument("--save", metavar="FILE", help="write the trained network and optimizer state (.safetensors)")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --save FILE")
    add_file_arguments(train, SCHEDULES)

    add_predict_parser(commands)
    return parser


# --------------------------------------------------------------------------- output helpers


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with right-aligned numbers and left-aligned words."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for cell, width in zip(cells, widths, strict=True):
            numeric = cell[:1].isdigit() or (cell[:1] in "-+." and cell[1:2].isdigit())
            parts.append(cell.rjust(width) if numeric else cell.ljust(width))
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _output_folder(args: argparse.Namespace) -> Path | None:
    """The folder for the figures, checked (not yet created) so that a bad --out fails before any training.

    None when no figures are wanted or matplotlib is missing (then a note says how to install it).
    """
    if args.no_plots:
        return None
    from . import plots

    try:
        plots.require_matplotlib()
    except plots.MatplotlibMissing as missing:
        print(f"{PROG}: {missing}; printing the tables only", file=sys.stderr)
        return None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out!r} is a file, not a folder")
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the figures to --out {args.out!r}: {existing} is not writable")
    try:  # written to now, not after the training (os.access knows no read-only file system); nothing is left
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise UsageError(f"cannot write the figures to --out {args.out!r}: {error.strerror}") from None
    return out


def _create(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the folder --out {str(out)!r}: {error.strerror}") from None
    return out


def _print_written(paths: Sequence[Path]) -> None:
    if paths:
        print("\nfigures:")
        for path in paths:
            print(f"  {path}")


def _slug(label: str) -> str:
    return label.lower().replace(" + ", "_").replace(" ", "_").replace("(", "").replace(")", "")


# --------------------------------------------------------------------------- the subcommands


def _compare(args: argparse.Namespace) -> int:
    out = _output_folder(args)
    problem = lesson_problem(args.backend, device=args.device, dtype=args.dtype, seed=args.seed)
    seeds = seed_list(args.seed, args.seeds)
    print(
        f"moons: {LESSON.n_samples} samples, noise {LESSON.noise}; "
        f"network {list(LESSON.layer_dims)}; mini-batch {LESSON.batch_size}; "
        f"{args.epochs} epochs; {args.backend} {args.dtype}; seed {args.seed}"
        + (" (one seed: --seeds N for the spread)\n" if args.seeds == 1 else f", initialization seeds {seeds}\n")
    )
    summaries, rows = run_seeds(seeds, args.epochs, problem=problem)
    decay_text = f"lr0/(1+floor(epoch/{LESSON.decay_interval}))"
    if len(seeds) > 1:
        print(_table(SEED_COLUMNS, table_rows(summaries, decay_text)))
        print(f"\nmedian and range over {len(seeds)} seeds; boundaries drawn for seed {args.seed}")
    else:
        print(
            _table(
                ["optimizer", "learning rate", "decay", "final cost", "train accuracy", "wall time"],
                [
                    [
                        row.optimizer,
                        f"{row.learning_rate:g}",
                        decay_text if row.decay else "none",
                        f"{row.final_cost:.4f}",
                        f"{100 * row.train_accuracy:.1f} %",
                        f"{row.wall_time:.2f} s",
                    ]
                    for row in rows
                ],
            )
        )
    if args.epochs <= LESSON.decay_interval:  # floor(epoch / interval) is 0 for every epoch run
        print(f"\nthe decay steps every {LESSON.decay_interval} epochs: within {args.epochs} epochs it keeps lr0")
    print(f"\ntotal training time: {sum(sum(s.wall_times) for s in summaries):.1f} s")
    if out is not None:
        from . import plots

        _create(out)
        title = f"Cost per epoch: moons, 2-5-2-1 network, mini-batch 64 ({args.backend} {args.dtype}, seed {args.seed})"
        curves = {row.label: row.history.cost for row in rows}
        if len(seeds) == 1:
            written = [plots.plot_loss_curves(curves, out / "loss_curves.png", title=title)]
        else:
            title = title.replace(f"seed {args.seed}", f"median and range over seeds {seeds[0]}-{seeds[-1]}")
            bands = {s.label: s.band() for s in summaries}
            written = [plots.plot_loss_bands(bands, out / "loss_curves.png", title=title)]
        for row in rows:
            rate = f"lr0 {row.learning_rate:g}" if row.decay else f"lr {row.learning_rate:g}"
            title = f"{row.label} ({rate}): train accuracy {100 * row.train_accuracy:.1f} %"
            written.append(
                plots.plot_decision_boundary(
                    problem.model,
                    row.params,
                    problem.X,
                    problem.y,
                    out / f"boundary_{_slug(row.label)}.png",
                    title=title,
                )
            )
        _print_written(written)
    return 0


def _trajectories(args: argparse.Namespace) -> int:
    out = _output_folder(args)
    paths = run_trajectories()
    print(
        _table(
            [
                "surface",
                "optimizer",
                "learning rate",
                "steps",
                "final point",
                "distance to minimum",
                "final value",
                "reversals",
            ],
            [
                [
                    p.surface,
                    p.optimizer,
                    f"{p.learning_rate:g}",
                    str(len(p.points) - 1),
                    f"({p.points[-1][0]:.3f}, {p.points[-1][1]:.3f})",
                    f"{p.final_distance:.3g}",
                    f"{p.values[-1]:.3g}",
                    str(reversals(p.points)),
                ]
                for p in paths
            ],
        )
    )
    print("\nreversals: steps that turn back on the previous one (zig-zag across a valley)")
    if out is not None:
        from . import plots

        _create(out)
        written = [
            plots.plot_trajectories(
                surface, [p for p in paths if p.surface == surface.name], out / f"trajectories_{surface.name}.png"
            )
            for surface in SURFACES
        ]
        _print_written(written)
    return 0


def _batch_sizes(args: argparse.Namespace) -> int:
    out = _output_folder(args)
    problem = lesson_problem(args.backend, device=args.device, dtype=args.dtype, seed=args.seed)
    curves = run_batch_sizes(steps=args.steps, seed=args.seed, problem=problem)
    n_samples = int(problem.X.shape[0])
    print(
        f"plain gradient descent, learning rate {BATCH_SIZE_LEARNING_RATE:g}, "
        f"{args.steps} steps each; {args.backend} {args.dtype}; seed {args.seed}\n"
    )
    print(
        _table(
            ["method", "batch size", "epochs", "final cost (whole set)", "step-to-step change", "wall time"],
            [
                [
                    c.label,
                    str(c.batch_size),
                    f"{len(c.batch_costs) * c.batch_size / n_samples:.4g}",
                    f"{c.full_costs[-1]:.4f}",
                    f"{step_noise(c.batch_costs):.4f}",
                    f"{c.wall_time:.2f} s",
                ]
                for c in curves
            ],
        )
    )
    print("\nstep-to-step change: mean |cost(step k+1) - cost(step k)| of the steps' batches: how noisy each curve is")
    if out is not None:
        from . import plots

        _create(out)
        _print_written([plots.plot_batch_sizes(curves, out / "batch_sizes.png")])
    return 0


TRAIN_COLUMNS = (
    "data",
    "samples",
    "layers",
    "optimizer",
    "learning rate",
    "batch",
    "epochs",
    "final cost",
    "train accuracy",
    "wall time",
)


def _train(args: argparse.Namespace) -> int:
    out = _output_folder(args)
    run = run_training(
        args.backend,
        args.device,
        args.dtype,
        data=args.data,
        n_samples=args.samples,
        noise=args.noise,
        hidden=args.hidden,
        activation=args.activation,
        output=args.output,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=args.seed,
        save=args.save,
        resume=args.resume,
        **file_options(args),
    )
    layers = ",".join(str(w) for w in run.model.layer_dims)
    history = run.result.history
    print(
        _table(
            TRAIN_COLUMNS,
            [
                [
                    shown(Path(args.data).name),
                    str(int(run.X.shape[0])),
                    f"{layers} ({run.model.hidden_activation}, {run.model.output})",
                    type(run.optimizer).__name__,
                    f"{run.optimizer.learning_rate_at(0):g}",
                    str(args.batch_size),
                    str(len(history.cost)),
                    f"{history.cost[-1]:.4f}",
                    "-" if run.train_accuracy is None else f"{100 * run.train_accuracy:.1f} %",
                    f"{run.wall_time:.2f} s",
                ]
            ],
        )
    )
    if run.notes:  # how the file was read, the label mapping, the validation score
        print("\n" + "\n".join(run.notes))
    if out is not None:
        from . import plots

        _create(out)
        label = type(run.optimizer).__name__
        written = [
            plots.plot_loss_curves(
                {label: history.cost},
                out / "train_loss.png",
                title=f"Cost per epoch: {shown(args.data)}",
                loss=_LOSS_NAMES[run.model.output],
            )
        ]
        if run.train_accuracy is not None and int(run.X.shape[1]) == 2:
            title = f"{label} on {shown(Path(args.data).name)}: train accuracy {100 * run.train_accuracy:.1f} %"
            written.append(
                plots.plot_decision_boundary(
                    run.model, run.result.params, run.X, run.y, out / "train_boundary.png", title=title
                )
            )
        _print_written(written)
    return 0


_COMMANDS = {"compare": _compare, "trajectories": _trajectories, "batch-sizes": _batch_sizes, "train": _train}
_COMMANDS["predict"] = run_predict_command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``anyoptim`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help and --version end here
            return 0 if done.code is None else int(done.code)
        if args.command is None:
            raise UsageError(f"choose a command: {', '.join(_COMMANDS)} (see anyoptim --help)")
        with only_rank_0_speaks(args):  # under mpiexec: every process trains, rank 0 prints
            return _COMMANDS[args.command](args)
    except (UsageError, ValueError, ImportError, KernelBuildError) as error:
        # ValueError: the library's own checks (anyoptim raises it for bad input before changing anything);
        # KernelBuildError: ANYOPTIM_NUMPY_KERNELS=c where no kernel can be built.
        message = " ".join(str(error).split())  # one line, whatever the message held
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
