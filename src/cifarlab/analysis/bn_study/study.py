"""The bn-study driver: VGG-A / VGG-A+BN (/ noisy BN) trained by the engine, probed by callbacks.

Each training of the study is an ordinary run: a ``RunConfig`` (``run_config``) trained by ``Trainer`` with
the part's probes as callbacks (callbacks.py), in ``<out>/runs/<name>-<fingerprint>/`` — a normal run
directory that ``cifarlab eval``, ``explain`` and ``report`` understand, resumable like any run.

Layout of the output folder::

    settings.yaml, env.json          what was asked and what it ran on
    runs/<id>/                       one run directory per training (+ probes.json / ics.json of its probes)
    <part>/*.csv, <part>/*.png       the curves and figures of each part (train, band, landscape, ics, noisy)
    <part>/done.json                 written last: the part is complete (skipped on re-run if settings match)
    summary.md, summary.json         the table + generated interpretation

Runs are shared between parts through their fingerprint: e.g. the noisy-BN part reuses the train part's
VGG-A and VGG-A+BN runs at the same LR and step count instead of training them again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cifarlab.analysis.bn_study.callbacks import CurvatureProbe, Fig4Probe, ICSProbe
from cifarlab.analysis.bn_study.findings import write_findings
from cifarlab.analysis.bn_study.probes import eta_grid
from cifarlab.analysis.bn_study.settings import MODELS, PARTS, StudySettings, to_dict
from cifarlab.config import RunConfig, config_from_dict
from cifarlab.data import CifarArrays
from cifarlab.data.synthetic import synthetic_cifar
from cifarlab.engine.callbacks import Callback
from cifarlab.engine.environment import environment_info, resolve_device
from cifarlab.engine.metrics import read_csv
from cifarlab.engine.rundir import comparable
from cifarlab.errors import ConfigError
from cifarlab.io import atomic_write_json, atomic_write_text, atomic_write_yaml

Log = Callable[[str], None]


@dataclass(frozen=True)
class RunSpec:
    """One training of the study: what is trained (model, optimiser, LR, steps, seed) and what is measured."""

    model: str  # vgg_a, vgg_a_bn or vgg_a_noisy_bn
    optimizer: str
    lr: float
    steps: int
    seed: int = 0
    momentum: float = 0.0
    weight_decay: float = 0.0
    augment: bool = False
    noise: tuple[float, ...] = ()  # (n_mu, n_sigma, r_mu, r_sigma) for vgg_a_noisy_bn
    probe_every: int = 0  # Fig. 4 probes every k steps (0: none)
    etas: tuple[float, ...] = ()
    ics_every: int = 0  # Definition 2.1 every k steps (0: none)
    ics_layers: tuple[int, ...] = ()
    curvature: tuple[Any, ...] = ()  # (every, power_iters, power_tol, trace_probes, density_at, density_steps)
    activations: tuple[int, ...] = ()  # (conv unit, every): the unit's activation distribution over training
    bn_eval: bool = False  # also evaluate with batch statistics and with running statistics recomputed clean

    @property
    def name(self) -> str:
        parts = [self.model, self.optimizer, f"lr{self.lr:g}", f"{self.steps}st", f"s{self.seed}"]
        if self.noise:
            parts.insert(1, "noise" + "-".join(f"{v:g}" for v in self.noise))
        for flag, on in (("probe", self.probe_every), ("ics", self.ics_every), ("hess", self.curvature)):
            if on:
                parts.append(flag)
        return "-".join(parts)


def _model_options(spec: RunSpec, s: StudySettings) -> dict[str, Any]:
    options: dict[str, Any] = {"width_mult": s.width_mult}
    if spec.model == "vgg_a_noisy_bn":
        n_mu, n_sigma, r_mu, r_sigma = spec.noise
        options.update(n_mu=n_mu, n_sigma=n_sigma, r_mu=r_mu, r_sigma=r_sigma, noise_seed=spec.seed)
    return options


def _data_section(s: StudySettings) -> dict[str, Any]:
    d = s.data
    if d.synthetic:  # real-data sizes do not fit a tiny synthetic set: keep 1/5 for validation, use the rest
        return {"val_size": min(d.val_size, d.synthetic // 5), "split_seed": d.split_seed, "normalize": d.normalize}
    return {"dir": d.dir, "val_size": d.val_size, "subset": d.subset, "test_subset": d.test_subset,
            "split_seed": d.split_seed, "normalize": d.normalize}


def run_config(spec: RunSpec, s: StudySettings) -> RunConfig:
    """The ordinary run behind one training of the study: plain SGD/Adam at a constant LR, fp32, no tricks."""
    crop, flip = (4, True) if spec.augment else (0, False)
    return config_from_dict({
        "description": f"bn-study ({s.scale}): {spec.name}",
        "data": _data_section(s),
        "augment": {"crop_padding": crop, "flip": flip},
        "model": {"name": spec.model, "options": _model_options(spec, s)},
        "loss": {"name": "cross_entropy"},
        "optim": {"name": spec.optimizer, "lr": spec.lr, "weight_decay": spec.weight_decay,
                  **({"momentum": spec.momentum} if spec.optimizer == "sgd" else {})},
        "sched": {"name": "constant"},
        # fp32 throughout: the probes compare small differences of losses and gradients. NCHW, not
        # channels_last: on CPU oneDNN's channels_last VGG-A kernels give other sums with 1 thread than with 2
        # (loss 2.703 vs 2.736 at step 1, lr 0.5), NCHW the same; so a run does not depend on the thread count.
        "train": {"max_steps": spec.steps, "batch_size": s.batch_size, "eval_batch_size": s.eval_batch_size,
                  "seed": spec.seed, "device": s.device, "amp": "off", "log_every": 10, "channels_last": False},
    })


def spec_callbacks(spec: RunSpec) -> list[Callback]:
    from cifarlab.analysis.bn_study.noisy import ActivationRecorder, NoisyBNEvaluation

    cbs: list[Callback] = []
    if spec.probe_every:
        # Weights, optimizer state and batch saved at each probed step: `bn-study --reprobe RUN` checks them.
        cbs.append(Fig4Probe(spec.probe_every, list(spec.etas), save_points=True))
    if spec.ics_every:
        cbs.append(ICSProbe(spec.ics_every, list(spec.ics_layers)))
    if spec.curvature:
        every, iters, tol, probes, density_at, density_steps = spec.curvature
        cbs.append(CurvatureProbe(every, power_iters=iters, power_tol=tol, trace_probes=probes,
                                  density_at=tuple(density_at), density_steps=density_steps, seed=spec.seed))
    if spec.activations:
        cbs.append(ActivationRecorder(*spec.activations))
    if spec.bn_eval:
        cbs.append(NoisyBNEvaluation())
    return cbs


PROBE_FIELDS = ("probe_every", "etas", "ics_every", "ics_layers", "curvature", "activations", "bn_eval")


def fingerprint(spec: RunSpec, s: StudySettings) -> str:
    """What decides a run's files: its config (less where things are and how they are shown) and its probes."""
    # steps too: train.max_steps is resume-safe (raising it extends a run), so comparable() leaves it out.
    probes = {k: v for k, v in asdict(spec).items() if k in PROBE_FIELDS} | {"steps": spec.steps}
    text = json.dumps({"config": comparable(_config_dict(spec, s)), "probes": probes,
                       "synthetic": s.data.synthetic}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _config_dict(spec: RunSpec, s: StudySettings) -> dict[str, Any]:
    return to_dict(run_config(spec, s))


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """A finished run directory as the study's plots and summary read it; None if it has not finished."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    steps, epochs = read_csv(run_dir / "steps.csv"), read_csv(run_dir / "epochs.csv")
    result = {"status": summary["status"], "steps_done": summary["steps"], "test_acc": summary.get("test_acc"),
              "test_loss": summary.get("test_loss"), "val_acc": summary.get("final_val_acc"),
              "seconds_per_epoch": summary.get("s_per_epoch"), "train_seconds": summary.get("train_time_s"),
              "step_loss": [r["loss"] for r in steps], "step_acc": [r["acc"] for r in steps],
              "epochs": [{k: r[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")}
                         for r in epochs], "run_dir": str(run_dir), "summary": summary}
    for key, file in (("probes", "probes.json"), ("ics", "ics.json"), ("curvature", "curvature.json"),
                      ("activations", "activations.json")):
        path = run_dir / file
        result[key] = json.loads(path.read_text())["rows"] if path.is_file() else []
    return result


class Study:
    def __init__(self, s: StudySettings, out: Path, log: Log = print) -> None:
        self.s, self.out, self.log = s, Path(out), log
        try:
            self.device = resolve_device(s.device)
        except ConfigError as exc:  # its message names train.device; here the setting is bn-study's `device`
            raise ConfigError(str(exc).replace("config key 'train.device'", "bn-study setting 'device'")) from None
        self._data: CifarArrays | None = None

    def data(self) -> CifarArrays | None:
        """The synthetic set when asked for one (built once), else None: each run loads CIFAR-10 (cached)."""
        if self.s.data.synthetic and self._data is None:
            self._data = synthetic_cifar(self.s.data.synthetic, self.s.data.split_seed)
        return self._data

    def path(self, spec: RunSpec) -> Path:
        return self.out / "runs" / f"{spec.name}-{fingerprint(spec, self.s)}"

    def load(self, spec: RunSpec) -> dict[str, Any] | None:
        result = read_run(self.path(spec))
        return None if result is None else {"name": spec.name, "spec": asdict(spec), **result}

    def run(self, spec: RunSpec) -> dict[str, Any]:
        from cifarlab.engine.trainer import Trainer

        done = self.load(spec)
        if done is not None:
            self.log(f"  {spec.name}: done earlier, reusing {self.path(spec).name}")
            return done
        last = self.path(spec) / "checkpoints" / "last.pt"
        if last.is_file():
            epoch = int(torch.load(last, map_location="cpu", weights_only=True)["epoch"])
            self.log(f"  {spec.name}: resuming from epoch {epoch} ({self.path(spec).name})")
        else:
            self.log(f"  {spec.name}: training")
        trainer = Trainer(run_config(spec, self.s), self.path(spec), resume=True, data=self.data(), progress=False,
                          callbacks=spec_callbacks(spec))
        summary = trainer.fit()
        self.log(f"  {spec.name}: {summary['status']}, {summary['steps']} steps, final train loss "
                 f"{summary.get('final_train_loss', float('nan')):.4f}, {summary['train_time_s']:.1f} s")
        result = self.load(spec)
        assert result is not None
        return result

    def executor(self, pending: int) -> str:
        kind = self.s.executor.kind
        if kind != "auto":
            return kind
        from cifarlab.experiments.executors import ray_available

        if self.s.scale != "paper" or pending < 2:
            return "local"
        if not ray_available():
            self.log(f"Ray is not installed: the {pending} trainings run one after another "
                     f"(pip install 'cifarlab[ray]' to run them in parallel)")
            return "local"
        return "ray"

    def run_parallel(self, specs: list[RunSpec]) -> None:
        """Train the not-yet-finished ``specs`` as parallel Ray tasks (each writes its own run directory).

        A task that fails is reported and left unfinished; the part that needs it then trains it here and
        raises the error in plain sight.
        """
        from cifarlab.experiments.executors import ray_map

        todo = list({self.path(sp): sp for sp in specs if self.load(sp) is None}.values())
        if self.executor(len(todo)) != "ray" or not todo:
            return
        ex = self.s.executor
        gpus = ex.gpus_per_run if ex.gpus_per_run is not None else (0.25 if self.device.type == "cuda" else 0.0)
        self.log(f"[ray] {len(todo)} trainings as Ray tasks ({ex.cpus_per_run:g} CPU, {gpus:g} GPU each)"
                 + (f" on {ex.address}" if ex.address else " on this machine"))
        settings = to_dict(self.s)
        if gpus == 0 and self.device.type == "cuda":
            settings["device"] = "cpu"  # a task without a GPU share must not touch the GPU
        jobs = [(sp, (asdict(sp), settings, str(self.out.resolve()))) for sp in todo]

        def on_result(spec: RunSpec, value: Any, error: str | None) -> None:
            self.log(f"  {spec.name}: " + (f"{value}" if error is None else f"failed ({error})"))

        ray_map(train_task, jobs, on_result, address=ex.address, cpus_per_task=ex.cpus_per_run, gpus_per_task=gpus)

    def part_done(self, part: str) -> bool:
        marker = self.out / part / "done.json"
        try:
            return json.loads(marker.read_text()).get("settings") == self._part_settings(part)
        except (OSError, ValueError):
            return False

    def _part_settings(self, part: str) -> dict[str, Any]:
        return {"runs": [self.path(sp).name for sp in self.specs(part)], "part": to_dict(getattr(self.s, part))}

    def mark_done(self, part: str, seconds: float) -> None:
        atomic_write_json(self.out / part / "done.json", {"settings": self._part_settings(part),
                                                          "seconds": seconds})

    def specs(self, part: str) -> list[RunSpec]:
        if part not in PART_SPECS:
            raise ConfigError(f"unknown bn-study part '{part}'; valid: {', '.join(PARTS)}")
        return PART_SPECS[part](self.s)


# --- run lists of each part: a registry, one entry per part -----------------------------------------------


def _trained(s: StudySettings, model: str, lr: float, steps: int, seed: int, noise: tuple[float, ...] = ()) -> RunSpec:
    """A run of the train/noisy parts: its activation distribution and BN-statistics evaluation recorded (both
    only read), so the noisy part reuses the train part's runs at the same LR and step count."""
    t, n = s.train, s.noisy
    return RunSpec(model, t.optimizer, lr, steps, seed, t.momentum, t.weight_decay, t.augment, noise=noise,
                   activations=(n.activation_unit, n.activation_every), bn_eval=True)


def _train_specs(s: StudySettings) -> list[RunSpec]:
    return [_trained(s, m, lr, s.train.steps, seed) for seed in s.seeds for m in MODELS for lr in s.train.lrs]


def _band_specs(s: StudySettings) -> list[RunSpec]:
    return [RunSpec(m, s.band.optimizer, lr, s.band.steps, seed) for seed in s.seeds for m in MODELS
            for lr in s.band.lrs]


def landscape_etas(s: StudySettings) -> tuple[float, ...]:
    ls = s.landscape
    if ls.grid == "paper":
        return tuple(eta_grid(ls.lr, ls.eta_count, 0.5, 4.0))
    return tuple(eta_grid(ls.lr, ls.eta_count, ls.eta_low, ls.eta_high, spacing="log"))


def _landscape_specs(s: StudySettings) -> list[RunSpec]:
    """Fig. 4, curvature and ICS on the same runs: the proxies and the direct measures see the same weights."""
    ls, c, ic = s.landscape, s.curvature, s.ics
    density = tuple(sorted({int(f * ls.steps) // c.every * c.every for f in c.density_at})) if c.every else ()
    curv = (c.every, c.power_iters, c.power_tol, c.trace_probes, density, c.density_steps) if c.every else ()
    return [RunSpec(m, "sgd", ls.lr, ls.steps, seed, ls.momentum, probe_every=ls.probe_every,
                    etas=landscape_etas(s), ics_every=ic.every, ics_layers=tuple(ic.layers), curvature=curv)
            for seed in s.seeds for m in MODELS]


def _noisy_specs(s: StudySettings) -> list[RunSpec]:
    n = s.noisy

    def noise(k: float) -> tuple[float, ...]:
        return (n.n_mu * k, 1 + (n.n_sigma - 1) * k, n.r_mu * k, n.r_sigma * k)

    return [spec for seed in s.seeds for spec in (
        *(_trained(s, m, n.lr, n.steps, seed) for m in MODELS),
        *(_trained(s, "vgg_a_noisy_bn", n.lr, n.steps, seed, noise(k)) for k in n.strengths))]


PART_SPECS: dict[str, Callable[[StudySettings], list[RunSpec]]] = {
    "train": _train_specs, "band": _band_specs, "landscape": _landscape_specs, "ics": _landscape_specs,
    "noisy": _noisy_specs,
}


def set_threads(threads: int) -> None:
    """The study's fixed thread count (0: torch's default), so its timings say what they were measured with."""
    if threads:
        torch.set_num_threads(threads)


def _write_settings(out: Path, s: StudySettings) -> None:
    """settings.yaml: per part, the settings of its latest invocation (an invocation of some parts keeps the
    other parts' entries, so the file always describes every result in the folder)."""
    path, now = out / "settings.yaml", to_dict(s)
    try:
        import yaml

        old = yaml.safe_load(path.read_text()) or {}
    except (OSError, ValueError):
        old = {}
    merged = {**now, "parts_run": sorted(set(old.get("parts_run", [])) | set(s.parts))}
    for part in PARTS:
        if part not in s.parts and part in old:
            merged[part] = old[part]
    atomic_write_yaml(path, merged)


def train_task(spec: dict[str, Any], settings: dict[str, Any], out: str) -> str:
    """One training as a Ray task: its own data and device, files written to ``out/runs`` like a local run."""
    from cifarlab.analysis.bn_study.settings import settings_from_dict

    s = settings_from_dict(settings)
    set_threads(int(min(s.threads or 1e9, max(1, s.executor.cpus_per_run))))
    run_spec = RunSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
    result = Study(s, Path(out), log=lambda _line: None).run(run_spec)
    return f"{result['status']}, {result['steps_done']} steps, {result['train_seconds']:.0f} s"


def _completed_elsewhere(study: Study, part: str) -> list[dict[str, Any]] | None:
    """A part not asked for this time still enters the summary when an earlier invocation completed it."""
    if not study.part_done(part):
        return None
    found = [study.load(spec) for spec in study.specs(part)]
    return None if any(r is None for r in found) else [r for r in found if r is not None]


def run_study(s: StudySettings, out: str | Path, log: Log = print) -> dict[str, Any]:
    """Run the selected parts (skipping complete ones), write figures/CSVs and the summary; return the summary."""
    from cifarlab.analysis.bn_study import interpret, plots

    study = Study(s, Path(out), log)
    study.out.mkdir(parents=True, exist_ok=True)
    set_threads(s.threads)
    _write_settings(study.out, s)
    atomic_write_json(study.out / "env.json", environment_info(study.device))
    t_all = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    # Independent trainings of every part asked for go out together (Ray executor); the loop below then
    # finds them finished. With the local executor this does nothing and the loop trains them in turn.
    study.run_parallel([sp for part in PARTS if part in s.parts and not study.part_done(part)
                        for sp in study.specs(part)])
    for part in PARTS:
        if part not in s.parts:
            found = _completed_elsewhere(study, part)
            if found is not None:
                results[part] = found
            continue
        skip = study.part_done(part)
        log(f"[{part}] " + ("complete, loading results" if skip else "running"))
        t0 = time.perf_counter()
        results[part] = [study.run(spec) for spec in study.specs(part)]
        if not skip:
            plots.write_part(part, results[part], study.out / part, s)
            study.mark_done(part, time.perf_counter() - t0)
    summary = interpret.summarize(results, s)
    summary["wall_seconds"] = time.perf_counter() - t_all
    atomic_write_json(study.out / "summary.json", summary)
    write_findings(study.out / "findings.json", summary["findings"])
    atomic_write_text(study.out / "summary.md", interpret.to_markdown(summary))
    write_study_manifest(study.out, summary)
    log(interpret.to_markdown(summary))
    return summary


FIGURES = [
    ("train/curves.png", "VGG-A vs VGG-A+BN training", "Training loss and accuracy vs step at each learning rate."),
    ("band/band.png", "Loss band over learning rates", "At each step, min and max of the training loss over the "
     "learning rates (course protocol); standard VGG-A green, with BN red."),
    ("landscape/landscape.png", "Santurkar et al. Fig. 4", "Loss landscape, gradient predictiveness and effective "
     "β-smoothness along the gradient, probed every k steps."),
    ("landscape/beta_eta.png", "β and ‖Δg‖/‖g‖ at each step size", "Where on the η grid β's maximum comes "
     "from; dashed: the training LR."),
    ("landscape/curvature.png", "Top Hessian eigenvalue", "λ_max of the batch Hessian (power iteration on "
     "Hessian-vector products) vs step and vs training loss, one line per seed."),
    ("ics/ics.png", "Internal covariate shift (Def. 2.1)", "‖G − G′‖₂/‖G‖ and cos(G, G′) per probed layer."),
    ("noisy/curves.png", "Noisy BN (Algorithm 1)", "BN followed by random per-step shift/scale noise vs BN and "
     "standard VGG-A."),
    ("noisy/activations.png", "Activation distributions (the paper's Fig. 2)", "One conv unit's activations over "
     "training: standard, BN, noisy BN."),
]


def write_study_manifest(out: Path, summary: dict[str, Any]) -> None:
    """What `cifarlab report` shows of the study: interpretation, tables, figures; its runs get no sections."""
    from cifarlab.analysis.bn_study.findings import fmt_ci
    from cifarlab.analysis.bn_study.interpret import summary_tables
    from cifarlab.manifest import figure, table, text, write_manifest

    items = [text("Findings, generated from the numbers (BN − standard paired by seed; a verdict only when the "
                  "95 % CI excludes zero): " + "; ".join(summary["interpretation"]))]
    rows = [[f["claim"], fmt_ci(f["standard"]["mean"], f["standard"]["ci_low"], f["standard"]["ci_high"]),
             fmt_ci(f["bn"]["mean"], f["bn"]["ci_low"], f["bn"]["ci_high"]),
             fmt_ci(f["comparison"]["mean_diff"], f["comparison"]["ci_low"], f["comparison"]["ci_high"]),
             str(f["comparison"]["n_pairs"]), f["verdict"]] for f in summary["findings"]]
    items.append(table("Findings", "Claims of the paper tested over seeds (95 % CIs).",
                       ["claim", "standard", "BN", "BN − standard", "n", "verdict"], rows, numeric=False))
    for i, (header, body) in enumerate(summary_tables(summary)):
        items.append(table("Per model" if i == 0 else "Trained runs per arm", "Mean over seeds [95 % CI]; β = "
                           "effective smoothness; accuracies on the test set, evaluated at the end of each "
                           "training.", header, body))
    if summary["caveats"]:
        items.append(text("Caveats: " + "; ".join(summary["caveats"])))
    items += [figure(path, title, caption) for path, title, caption in FIGURES if (out / path).is_file()]
    write_manifest(out, f"BatchNorm study {{path}} ({summary['scale']} scale)", items, covers=["runs"])


__all__ = ["PART_SPECS", "RunSpec", "Study", "fingerprint", "read_run", "run_config", "run_study", "spec_callbacks",
           "train_task"]
