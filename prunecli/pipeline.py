"""``prunecli prune`` as a list of stages: load, prepare, measure, prune, fine-tune,
measure, save, report.

``run`` reads top to bottom as those stages; each is a short function returning a small
typed result the next stages and the report consume. Every check that needs no TensorFlow
(output paths, data presence) runs in ``preflight``, before the model is loaded, so a bad
command line fails in a fraction of a second. The report is built from the stages' results
by ``report.build``; ``timing`` has one entry per stage, and they sum to ``total_s``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from prunecli import __version__, data, interrupts, runtime
from prunecli.analysis import figures, hooks
from prunecli.config import Config
from prunecli.core import catalog, schedule_coverage, schedules
from prunecli.errors import ConfigError
from prunecli.formats import compiling, exporting, model_io, safety, staging
from prunecli.formats.base import InputFormat
from prunecli.progress import Reporter
from prunecli.pruning import coverage, selection
from prunecli.pruning.pruner import Pruner
from prunecli.reporting import evaluate, flops, latency, measure, report, sizes
from prunecli.structured import stage as structured
from prunecli.training import checkpoints, distribute, finetune, frozen, guards, labels


@dataclass(frozen=True)
class Request:
    """One ``prune`` run: the input model, the resolved config and the CLI-only switches."""

    model: Path
    config: Config
    force: bool = False
    safe_mode: bool = True
    max_accuracy_drop: float | None = None
    resume: bool = False  # continue from the checkpoint of an interrupted run
    config_file: Path | None = None  # an input too: no output may replace it


@dataclass(frozen=True)
class Targets:
    model: Path
    report: Path
    markdown: Path
    artifacts: tuple[exporting.Artifact, ...] = ()  # the model (first) and output.export extras


@dataclass
class Loaded:
    """The load stage: the model, its input kind, its compile config, its digest."""

    model: Any
    source: InputFormat
    user_compile: dict[str, Any]
    sha256: concurrent.futures.Future[str]


@dataclass
class Prepared:
    """The prepare stage: data, task, the loss to train with, the layers and their targets."""

    splits: data.Splits
    task: evaluate.Task | None
    compile_args: dict[str, Any]
    layers: list[selection.LayerInfo]
    rescale: float | None = None  # data.rescale as used (auto resolved)
    warnings: list[str] = dataclasses.field(default_factory=list)
    timers: latency.Timers = dataclasses.field(default_factory=latency.Timers)  # before/after


@dataclass
class Measured:
    """A measure stage: the model's figures, its size (``size()``: computed beside the
    main thread from the moment the file is written; the caller helps finish it) and,
    before pruning, each deployable format's figures."""

    stats: dict[str, Any]
    size: Callable[[], dict[str, int]]
    deployed: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def targets(request: Request) -> Targets:
    """Where the outputs go: ``output.path`` (default: the input kind's, e.g. ``<input
    stem>.pruned.keras`` beside the input) and ``output.report`` (default ``<output
    stem>.report.json`` beside it). The input kind refuses what it cannot serve."""
    out = request.config.output
    source = model_io.detect(request.model)
    model = out.path or source.default_output(request.model)
    artifacts = exporting.plan(model, out.folder, out.export)
    source.check_request(request.model, request.config.prune.layers, [a.format for a in artifacts])
    stem = model.name if artifacts[0].folder else model.stem
    json_path = out.report or model.with_name(f"{stem}.report.json")
    return Targets(model, json_path, json_path.with_suffix(".md"), tuple(artifacts))


def preflight(request: Request) -> Targets:
    """All checks that need no TensorFlow: the model file exists and is a model, outputs
    writable and not clobbering, data given where the config needs it."""
    paths = targets(request)  # reads the input's format first: a missing model is named first
    staging.check_outputs(
        paths.artifacts, (paths.report, paths.markdown),
        checkpoint_folder(request, paths) if request.config.finetune.epochs > 0 else None,
        inputs=staging.run_inputs(request.model, request.config, request.config_file),
        force=request.force,
    )  # fmt: skip
    hooks.preflight(request.config, paths.markdown, request.force, request.model, paths.report)
    _check_data_needs(request)
    if request.config.finetune.epochs > 0:
        checkpoints.preflight(
            checkpoint_folder(request, paths), resume=request.resume, force=request.force
        )
    return paths


def _check_data_needs(request: Request) -> None:
    """Each feature that needs data, or fine-tuning, says so before any work."""
    settings, train = request.config, request.config.data.train
    tflite = settings.output.tflite.quantize == "int8" and (
        "tflite" in settings.output.export
        or (settings.output.path is not None and settings.output.path.suffix == ".tflite")
    )
    needs = (
        (tflite and train is None, "output.tflite.quantize int8 calibrates on training data: "
         "set data.train or --data"),
        (request.resume and settings.finetune.epochs == 0,
         "--resume: nothing to resume, finetune.epochs is 0"),
        (settings.finetune.epochs > 0 and train is None,
         "fine-tuning needs training data: set data.train or pass --data "
         "(or --epochs 0 to prune without fine-tuning)"),
        (settings.prune.needs.gradients and train is None,
         f"prune.method {settings.prune.method} scores weights by their gradients: "
         "set data.train or --data"),
        (request.max_accuracy_drop is not None and train is None
         and settings.data.validation is None,
         "--max-accuracy-drop needs validation data: set data.validation or --data"),
    )  # fmt: skip
    for failed, message in needs:
        if failed:
            raise ConfigError(message)


def run(request: Request, reporter: Reporter) -> dict[str, Any]:
    """Prune ``request.model``; write the model and reports atomically; return the report.

    Everything from loading the model on runs in ``finetune.strategy``'s scope, so the
    model's, the masks' and the optimizer's variables are all mirrored (see ``distribute``).
    A worker that is not the chief writes into a scratch folder that is then removed.
    """
    job = distribute.start(
        request.config.finetune.strategy, request.config.finetune.mixed_precision
    )
    with distribute.scratch_folder(job) as scratch, job.strategy.scope():
        return _stages(_in_scratch(request, scratch), reporter, job)


@dataclass
class Run:
    """What the last stages (save, report) read of a run and never change: the request,
    its output paths, the loaded model, the prepared data, the stage clock and the job."""

    request: Request
    paths: Targets
    loaded: Loaded
    prepared: Prepared
    clock: _Clock
    job: distribute.Job


def _stages(request: Request, reporter: Reporter, job: distribute.Job) -> dict[str, Any]:
    clock = _Clock()
    cfg = request.config
    with clock("load_s"):
        paths = preflight(request)
        loaded = _load(request)
        prepared = _prepare(request, loaded)
    _say_loaded(reporter, request, loaded, prepared)
    with clock("prune_s"):  # sparsity auto: scan, allocate, select with the targets
        request, auto = hooks.auto(request, loaded.model, prepared, reporter)
        cfg = request.config
    with clock("measure_s"):  # first: its size is deflated while the rest runs
        before = _measure_input(loaded, prepared, paths, cfg)
    with clock("evaluate_s"):
        before.stats = _figures(loaded.model, prepared)
    _warn(reporter, prepared, [n for n in [flops.null_note(loaded.model, before.stats)] if n])
    with clock("finetune_s"):  # the unpruned model's outputs, when distilling
        teacher = _teacher(loaded.model, prepared.splits, prepared.task, cfg)
    with clock("prune_s"):
        pruner = _pruner(loaded.model, prepared, cfg)
        _warn_schedule(reporter, prepared, cfg)
        updates = _prune(pruner, cfg)
        _warn(reporter, prepared, structured.warnings(pruner))
        _rebuilt(pruner, loaded, prepared)  # channel, one_shot: the narrower model now
    losses = figures.LossHistory()  # the loss plot's points
    with clock("finetune_s"):
        tuned = _finetune(
            request, paths, loaded, prepared, pruner, reporter, job, teacher, losses.callback()
        )
        _rebuilt(pruner, loaded, prepared)  # channel, gradual schedules: after the last step
        _leave_training(loaded, prepared)
    result = _save(Run(request, paths, loaded, prepared, clock, job),
                   before=before, updates=updates + tuned.updates,
                   tuned=tuned, extras={"losses": losses.rows, "auto": auto},
                   pruner=pruner)  # fmt: skip
    checkpoints.remove(checkpoint_folder(request, paths))
    written = ", ".join(str(artifact.path) for artifact in paths.artifacts)
    reporter.say("wrote", f"wrote {written}, {paths.report} and {paths.markdown}")
    return result


def _leave_training(loaded: Loaded, prepared: Prepared) -> None:
    """Recompile with what the saved file should keep: the user's compile config, or for an
    input saved without one, fine-tuning's optimizer and the task's loss."""
    leaving = loaded.user_compile or compiling.saved_compile(loaded.model, prepared.compile_args)
    loaded.source.reset_training_state(loaded.model, leaving)


def _in_scratch(request: Request, scratch: Path | None) -> Request:
    """The request itself, or (a non-chief worker) one writing into ``scratch``; only the
    chief checks for existing outputs, so the copy has ``force`` on."""
    if scratch is None:
        return request
    main = request.config.output.path
    output = request.config.output.model_copy(
        update={
            "path": scratch / f"model{main.suffix if main is not None else '.keras'}",
            "report": scratch / "report.json",
        }
    )
    config = request.config.model_copy(update={"output": output})
    return dataclasses.replace(request, config=config, force=True)


def _load(request: Request) -> Loaded:
    model, source = model_io.load(
        request.model, safe_mode=request.safe_mode, imports=request.config.input.imports
    )
    safety.finite_weights(model, request.model)  # NaN in must not become NaN out
    sha256 = _background().submit(measure.sha256, request.model)  # report and checkpoints
    distribute.adopt(model)
    structured.check(model, request.config.prune)  # channel: a subclassed model is refused
    user_compile = model_io.compile_config(model)
    source.reset_training_state(model, user_compile)
    return Loaded(model, source, user_compile, sha256)


def _prepare(request: Request, loaded: Loaded) -> Prepared:
    """Read the data, infer the task, choose the loss, select the layers."""
    cfg, model = request.config, loaded.model
    splits, settings = data.for_model(cfg.data, model, cfg.seed)
    labelled = splits.train or splits.validation
    activation = loaded.source.output_activation(model)
    task = evaluate.infer_task(model, labelled, cfg.data.train, activation) if labelled else None
    if request.max_accuracy_drop is not None and splits.validation is None:
        raise ConfigError("--max-accuracy-drop needs validation data (data.validation_split is 0)")
    if request.max_accuracy_drop is not None and (task is None or task.kind == "regression"):
        raise ConfigError("--max-accuracy-drop needs a classifier: this model has no accuracy")
    inferred = task.compile_args() if task is not None else None
    compile_args = compiling.training_args(loaded.user_compile, inferred, cfg.finetune)
    splits, task = labels.reconcile(splits, task, compile_args)  # one-hot for a sparse loss
    layers = selection.select(model, cfg.prune)
    frozen_stay = cfg.finetune.epochs > 0 and not cfg.finetune.train_frozen
    warnings = coverage.warnings(layers, model.count_params(), frozen_stay)
    rescale = data.rescale_used(splits, settings.rescale)  # what the samples were read with
    return Prepared(splits, task, compile_args, layers, rescale, warnings)


def _say_loaded(reporter: Reporter, request: Request, loaded: Loaded, prepared: Prepared) -> None:
    total = loaded.model.count_params()
    reporter.say(
        "loaded",
        f"loaded {request.model} ({loaded.source.name}, {total:,} "
        f"parameters); {_data_line(prepared.splits, prepared.task)}; "
        f"{coverage.line(prepared.layers, total)}",
    )
    for warning in prepared.warnings:
        reporter.say("warning", f"warning: {warning}")


def _figures(model: Any, prepared: Prepared) -> dict[str, Any]:
    """Parameter counts, sparsity, accuracy, loss, FLOPs and batch-1 latency of the model
    as it is now."""
    stats = report.model_stats(model, prepared.layers)
    metrics = _metrics(model, prepared.splits, prepared.task, prepared.compile_args)
    with sizes.paused():  # latency uses every core: no deflate beside it
        return stats | metrics | latency.performance(model, prepared.timers)


def _measure_input(loaded: Loaded, prepared: Prepared, paths: Targets, cfg: Config) -> Measured:
    """The unpruned model exported as every deployable output is, and its size in the
    output's format (the fair 'before'); sizes are computed beside the main thread. The
    model's own figures (``stats``) are filled in by the caller."""
    deployed = exporting.measure_input(
        loaded.model, loaded.source, paths.artifacts, cfg.output.tflite,
        prepared.splits, prepared.task,
    )  # fmt: skip
    main = deployed.get(paths.artifacts[0].format)
    if main:
        size = _done({key: main[key] for key in ("size_bytes", "size_gzip_bytes")})
    else:
        size = _size_as(loaded.model, paths.model.suffix, loaded.sha256.result())
    return Measured({}, size, deployed)


def _pruner(model: Any, prepared: Prepared, cfg: Config) -> Any:
    """The pruner of ``prune.granularity``: masks on weights (``Pruner``), or on whole
    channels (``structured``'s ``ChannelPruner``, same interface)."""
    spe = (
        finetune.steps_per_epoch(len(prepared.splits.train.y), cfg.finetune.batch_size)
        if prepared.splits.train
        else 1
    )
    gradients = None
    if cfg.prune.needs.gradients:
        gradients = finetune.gradient_source(
            model, prepared.splits.train, prepared.compile_args["loss"],
            cfg.prune.score_batches, cfg.finetune.batch_size, cfg.seed,
        )  # fmt: skip
    schedule_for = schedules.factory(cfg.prune.schedule, spe, cfg.finetune.epochs)
    if cfg.prune.granularity == catalog.CHANNEL:
        return structured.pruner(model, cfg, schedule_for, gradients)
    return Pruner(prepared.layers, cfg.prune, schedule_for, seed=cfg.seed, gradients=gradients)


def _rebuilt(pruner: Any, loaded: Loaded, prepared: Prepared) -> None:
    """Swap in the narrower model once a channel pruner's masks are final (no-op else)."""
    loaded.model, prepared.layers = structured.rebuilt(pruner, loaded.model, prepared.layers)


def _warn(reporter: Reporter, prepared: Prepared, notes: list[str]) -> None:
    """Say each note on the console and keep it in the report's warnings."""
    for note in notes:
        prepared.warnings.append(note)
        reporter.say("warning", f"warning: {note}")


def _warn_schedule(reporter: Reporter, prepared: Prepared, cfg: Config) -> None:
    """Say so when fewer than ~10% of the fine-tuning steps run at the final sparsity."""
    if cfg.finetune.epochs == 0 or prepared.splits.train is None:
        return
    if cfg.prune.sparsity == "auto":  # per-layer targets from the scan
        return
    spe = finetune.steps_per_epoch(len(prepared.splits.train.y), cfg.finetune.batch_size)
    schedule = schedules.factory(cfg.prune.schedule, spe, cfg.finetune.epochs)
    note = schedule_coverage.warning(schedule(cfg.prune.sparsity), spe * cfg.finetune.epochs)
    if note:
        prepared.warnings.append(note)  # in the report's warnings too
        reporter.say("warning", f"warning: {note}")


def _prune(pruner: Pruner, cfg: Config) -> list[dict[str, float]]:
    """The prune phase's own update (before step 0): without it in the report's
    ``mask_updates`` a schedule's curve, e.g. polynomial from initial_sparsity, starts
    mid-way. Without fine-tuning every mask goes straight to its target."""
    if cfg.finetune.epochs == 0:
        return [{"step": 0, "sparsity": pruner.finish()}]
    if pruner.updates_at(0):
        return [{"step": 0, "sparsity": pruner.update(0)}]
    return []


def _finetune(
    request: Request,
    paths: Targets,
    loaded: Loaded,
    prepared: Prepared,
    pruner: Pruner,
    reporter: Reporter,
    job: distribute.Job,
    teacher: finetune.Teacher | None,
    *callbacks: keras.callbacks.Callback,
) -> finetune.Result:
    cfg = request.config
    if cfg.finetune.epochs == 0:
        return finetune.Result()
    tracker = _tracker(request, paths, reporter, loaded.sha256.result())
    # A signal stops training before the next step.
    with (
        interrupts.deferred(),
        distribute.precision(loaded.model, job.precision),
        frozen.unfrozen(loaded.model, cfg.finetune.train_frozen),
    ):
        return finetune.run(
            loaded.model, pruner, prepared.splits.train, cfg.finetune, prepared.compile_args,
            reporter, teacher=teacher, seed=cfg.seed, callbacks=[
                _StopOnSignal(),
                guards.FiniteLoss(cfg.finetune, checkpoint_folder(request, paths)),
                *callbacks,
            ],
            checkpoint=tracker,
        )  # fmt: skip


def _save(
    run: Run,
    *,
    before: Measured,
    updates: list[dict[str, float]],
    tuned: finetune.Result,
    extras: dict[str, Any],
    pruner: Any,
) -> dict[str, Any]:
    """Stage every artifact, measure them and the pruned model, build and stage the
    reports, rename all. The model is written before its figures are taken, so the
    file's deflate runs beside the evaluation and latency runs."""
    paths, loaded, prepared, clock = run.paths, run.loaded, run.prepared, run.clock
    cfg = run.request.config
    with staging.Staging() as stage:
        with clock("save_s"):
            staged, exports = exporting.stage_all(
                loaded.model, loaded.source, paths.artifacts, stage, cfg.output.tflite,
                prepared.splits, prepared.task, before.deployed,
            )  # fmt: skip
            after_size = sizes.Pending(staged, sizes.background_workers())
            output_sha256 = _background().submit(measure.sha256, staged)
        with clock("evaluate_s"):
            after = _figures(loaded.model, prepared)
        with clock("measure_s"):
            after |= _size_fields(after_size.result())
            before.stats |= before.size()
            files = {"input": loaded.sha256.result(), "output": output_sha256.result()}
        with clock("save_s"):
            tuning = _tuning(prepared, cfg, tuned, updates, extras["losses"])
            result = _report(
                run, before.stats, after,
                files=files, exports=exports, pruner=pruner, finetune=tuning,
            )  # fmt: skip
            hooks.add_auto(result, extras["auto"])
            stage.write_text(paths.report, report.to_json(result))
            figures.stage(
                stage, result, paths.markdown, report.to_markdown(result), cfg.output.html
            )
            stage.commit()
    return result


def _report(
    run: Run,
    before: dict[str, Any],
    after: dict[str, Any],
    *,
    files: dict[str, str],
    exports: list[dict[str, Any]],
    pruner: Any,
    finetune: dict[str, Any],
) -> dict[str, Any]:
    """The report of a finished run (``files``: the input's and output's SHA-256)."""
    request, paths, loaded, prepared = run.request, run.paths, run.loaded, run.prepared
    cfg = request.config
    return report.build(
        config=cfg,
        environment=runtime.environment() | run.job.environment(),
        input={"path": str(request.model), "format": loaded.source.name,
               "sha256": files["input"]},
        output={"path": str(paths.model), "format": paths.artifacts[0].format,
                "sha256": files["output"]},
        exports=exports,
        before=before,
        after=after,
        layers=structured.layer_rows(
            pruner, report.layer_rows(prepared.layers, cfg.prune.pattern)
        ),
        groups=structured.group_rows(pruner),
        speedup=latency.speedup(before["latency_ms"], after["latency_ms"]),
        latency_backend=latency.BACKEND,
        finetune=finetune,
        data=_data_summary(prepared.splits, prepared.task) | {"rescale": prepared.rescale},
        warnings=prepared.warnings,
        timing=run.clock.finish(),
        gate=_gate(request.max_accuracy_drop, before, after),
    )  # fmt: skip


def _tuning(
    prepared: Prepared,
    cfg: Config,
    tuned: finetune.Result,
    updates: list[dict[str, float]],
    losses: list[dict[str, float]],
) -> dict[str, Any]:
    """The report's ``finetune`` section."""
    return {
        "epochs": tuned.epochs,
        "steps": tuned.steps,
        "distill": _distill(prepared, cfg),
        "loss": labels.loss_name(prepared.compile_args.get("loss")),
        "loss_history": losses,
        "train_frozen": cfg.finetune.train_frozen,
        "mask_updates": updates,
    }


def _distill(prepared: Prepared, cfg: Config) -> dict[str, Any] | None:
    """The distillation settings when fine-tuning distilled (the report's ``distill``)."""
    if cfg.finetune.distill is None or cfg.finetune.epochs == 0:
        return None
    return cfg.finetune.distill.model_dump()


def checkpoint_folder(request: Request, paths: Targets | None = None) -> Path:
    """Where fine-tuning keeps its checkpoint (``finetune.checkpoint_dir``, or
    ``<output stem>.ckpt/`` beside the output model)."""
    output = (paths or targets(request)).model
    return checkpoints.folder(request.config.finetune.checkpoint_dir, output)


def _tracker(
    request: Request, paths: Targets, reporter: Reporter, input_sha256: str
) -> checkpoints.Tracker:
    cfg = request.config
    return checkpoints.Tracker(
        checkpoint_folder(request, paths),
        checkpoints.fingerprint(cfg, input_sha256),
        seed=cfg.seed,
        every=cfg.finetune.checkpoint_steps,
        resume=request.resume,
        reporter=reporter,
    )


def _data_line(splits: data.Splits, task: evaluate.Task | None) -> str:
    summary = _data_summary(splits, task)
    if not summary["train_samples"] and not summary["validation_samples"]:
        return "no data (prune only, no accuracy)"
    return (
        f"data: {summary['train_samples']:,} train / {summary['validation_samples']:,} "
        f"validation samples ({summary['task']})"
    )


def _teacher(
    model: Any, splits: data.Splits, task: evaluate.Task | None, cfg: Config
) -> finetune.Teacher | None:
    """The unpruned model's outputs on the training data, when distillation is on."""
    if cfg.finetune.distill is None or cfg.finetune.epochs == 0:
        return None
    if task is None or task.kind != "sparse":
        raise ConfigError(
            "finetune.distill needs a classifier with one output unit per class "
            f"(this model and data look like {task.kind if task else 'no task'})"
        )
    # in the source's order (no shuffle): finetune zips them beside the labels
    outputs = model.predict(splits.train.dataset(evaluate.PREDICT_BATCH, cache=False), verbose=0)
    return finetune.Teacher(outputs, task.from_logits)


def _metrics(
    model: Any, splits: data.Splits, task: evaluate.Task | None, compile_args: dict[str, Any]
) -> dict[str, float | None]:
    if splits.validation is None or task is None:
        return {"accuracy": None, "loss": None}
    loss = keras.losses.get(compile_args["loss"])
    accuracy, mean_loss = evaluate.evaluate(model, splits.validation, task, loss)
    return {"accuracy": accuracy, "loss": mean_loss}


# Sizes and digests of big files run beside the main thread: zlib and hashlib release the
# GIL. Made on first use: importing prunecli starts no threads.
@functools.cache
def _background() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="prunecli")


def _done(value: dict[str, int]) -> Callable[[], dict[str, int]]:
    return lambda: value


def _size_as(model: Any, suffix: str, digest: str) -> Callable[[], dict[str, int]]:
    """The input model saved in the output's format, the fair 'before' size: saved now
    (pruning changes the weights next), deflated beside the main work from this moment;
    remembered by the input's digest, so a rerun on the same file skips the save and the
    deflate."""
    key = f"{digest}|{suffix}|keras {keras.__version__}|prunecli {__version__}"
    known = sizes.recall(key)
    if known is not None:
        return _done(known)
    folder = Path(tempfile.mkdtemp(prefix="prunecli-"))
    path = folder / f"before{suffix}"
    try:
        model_io.save(model, path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

    def done(figures: tuple[int, int] | None) -> None:  # in whichever thread ends it
        shutil.rmtree(folder, ignore_errors=True)
        if figures is not None:
            sizes.remember(key, _size_fields(figures))

    pending = sizes.Pending(path, sizes.background_workers(), on_done=done)
    return lambda: _size_fields(pending.result())


def _size_fields(figures: tuple[int, int]) -> dict[str, int]:
    return {"size_bytes": figures[0], "size_gzip_bytes": figures[1]}


def _data_summary(splits: data.Splits, task: evaluate.Task | None) -> dict[str, Any]:
    return {
        "train_samples": len(splits.train.y) if splits.train else 0,
        "validation_samples": len(splits.validation.y) if splits.validation else 0,
        "task": task.kind if task else None,
    }


def _gate(
    limit: float | None, before: dict[str, Any], after: dict[str, Any]
) -> dict[str, Any] | None:
    if limit is None:
        return None
    drop = before["accuracy"] - after["accuracy"]
    return {"max_accuracy_drop": limit, "accuracy_drop": drop, "passed": drop <= limit}


class _StopOnSignal(keras.callbacks.Callback):
    """Raise a signal recorded during a train step before the next one, outside TF's C++.

    Batch begin, not batch end: a callback with its own ``on_train_batch_end`` turns off
    Keras's asynchronous batch-end dispatch and would add a host sync to every step.
    """

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        interrupts.check()


class _Clock:
    """Wall-clock seconds per stage; ``finish`` adds ``total_s`` (the stages sum to it,
    give or take the few milliseconds between them)."""

    STAGES = ("load_s", "prune_s", "finetune_s", "evaluate_s", "measure_s", "save_s")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = dict.fromkeys(self.STAGES, 0.0)
        self.running: tuple[str, float] | None = None  # the stage open now, since when

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self.running = (name, start)
        try:
            yield
        finally:
            self.running = None
            self.seconds[name] += time.perf_counter() - start

    def finish(self) -> dict[str, float]:
        """The seconds so far; the stage still open (the report is built inside
        ``save_s``) counts up to now, as ``total_s`` does."""
        now = time.perf_counter()
        seconds = dict(self.seconds)
        if self.running is not None:
            seconds[self.running[0]] += now - self.running[1]
        total = {"total_s": now - self.started}
        return {key: round(value, 4) for key, value in (seconds | total).items()}
