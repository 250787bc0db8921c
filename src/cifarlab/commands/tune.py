"""``cifarlab tune``: parser and handler (heavy imports inside the handler: ``cifarlab --help`` stays torch-free).

Returns 0 when the tune finished with a best trial, 1 when no trial completed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys

TUNE_EPILOG = """\
FILE is a tune YAML (see docs/tune.md) or the name of a shipped tune preset:
  cifarlab tune cnn3 --data-dir ../shared/datasets            # quick scale: minutes on a CPU
  cifarlab tune cnn3 --jobs 2                                 # two local worker processes on one study
  cifarlab tune my_tune.yaml --storage postgresql://user@db/tunes   # machines sharing one study
  cifarlab tune my_tune.yaml --executor ray --jobs 8 --gpus-per-trial 0.5
Re-running the same command resumes the study: finished trials are kept, a killed trial is re-enqueued and its
run resumed. Trials never see the test set; the best config is retrained once and tested (TUNE/final/).
tune presets: {presets}
"""


def add_tune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from cifarlab.commands.flags import add_spec_command
    from cifarlab.experiments.tune_spec import list_tune_presets

    p = add_spec_command(subparsers, "tune", "hyper-parameter search on the validation split (Optuna; resumable, "
                         "parallel), then one test", TUNE_EPILOG.format(presets=", ".join(list_tune_presets()) or
                                                                         "none"),
                         "tune YAML, or a tune preset name", "runs/tune", "tune folders")
    p.add_argument("--n-trials", type=int, help="override the file's n_trials")
    p.add_argument("--timeout", type=float, help="override the file's timeout (seconds of search)")
    p.add_argument("--storage", help="SQLAlchemy URL of the study database [default: sqlite TUNE/study.db]")
    p.add_argument("--jobs", type=int, default=1, help="trials in parallel: local processes, or Ray tasks [1]")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="where trials run [local]")
    p.add_argument("--ray-address", help="join this Ray cluster [default: start a local Ray instance]")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPU threads/Ray CPUs per trial [1]")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="Ray: GPUs per trial, may be fractional [0]")
    p.add_argument("--no-final", action="store_true", help="search only: no retrain/test of the best config")
    p.add_argument("--data-dir", help="where CIFAR-10 is [default: the config's data.dir, $CIFARLAB_DATA, ...]")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return p


def cmd_tune(args: argparse.Namespace) -> int:
    import dataclasses

    from cifarlab.errors import ConfigError
    from cifarlab.experiments.tune import run_tune, tune_dir_for
    from cifarlab.experiments.tune_spec import load_tune_spec

    spec = load_tune_spec(args.file, scale=args.scale)
    if args.n_trials is not None or args.timeout is not None:
        if (args.n_trials is not None and args.n_trials < 1) or (args.timeout is not None and args.timeout <= 0):
            raise ConfigError("tune: --n-trials must be >= 1 and --timeout > 0")
        spec = dataclasses.replace(spec, n_trials=args.n_trials if args.n_trials is not None else spec.n_trials,
                                   timeout=args.timeout if args.timeout is not None else spec.timeout)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        result = run_tune(spec, args.out, data_dir=args.data_dir, storage=args.storage, jobs=args.jobs,
                          executor=args.executor, ray_address=args.ray_address, cpus_per_trial=args.cpus_per_trial,
                          gpus_per_trial=args.gpus_per_trial, progress=False if args.quiet else None, log=log,
                          final=not args.no_final)
    except KeyboardInterrupt:
        print(f"\ninterrupted; re-run the same command to resume (tune folder: {tune_dir_for(spec, args.out)})",
              file=sys.stderr)
        return 130
    if result.best_trial is None:
        print(f"tune {spec.name}: no trial completed; see {result.tune_dir / 'trials.csv'}", file=sys.stderr)
        return 1
    final = result.final or {}
    test = f", test_acc {100 * final['test_acc']:.2f} % (retrained once)" if final.get("test_acc") is not None else ""
    print(f"tune {spec.name}: best trial {result.best_trial}, {spec.objective} {spec.show(result.best_value)}{test}; "
          f"config: {result.tune_dir / 'best_config.yaml'}")
    return 0
