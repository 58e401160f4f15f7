"""``prunecli prune`` from start to end: load, measure, prune, fine-tune, measure, save, report.

Each stage lives in its own module; this one only sequences them, times them and collects
the report. Every check that needs no TensorFlow (output paths, data presence) runs before
the model is loaded, so a bad command line fails in a fraction of a second.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from rich.console import Console

from prunecli import __version__, data, interrupts, runtime
from prunecli.config import Config
from prunecli.core import coverage, schedules
from prunecli.errors import ConfigError
from prunecli.formats import compiling, exporting, model_io, savedmodel, staging
from prunecli.pruning import selection
from prunecli.pruning.pruner import Pruner
from prunecli.reporting import evaluate, measure, report
from prunecli.training import checkpoints, distribute, finetune


@dataclass(frozen=True)
class Request:
    """One ``prune`` run: the input model, the resolved config and the CLI-only switches."""

    model: Path
    config: Config
    force: bool = False
    safe_mode: bool = True
    max_accuracy_drop: float | None = None
    resume: bool = False  # continue from the checkpoint of an interrupted run


@dataclass(frozen=True)
class Targets:
    model: Path
    report: Path
    markdown: Path
    artifacts: tuple[exporting.Artifact, ...] = ()  # the model (first) and output.export extras


def targets(request: Request) -> Targets:
    """Where the outputs go: ``output.path`` (default ``<input stem>.pruned.keras`` beside
    the input) and ``output.report`` (default ``<output stem>.report.json`` beside it)."""
    out = request.config.output
    signature_only = model_io.detect_format(request.model) == savedmodel.FORMAT
    model = out.path or (
        savedmodel.default_output(request.model)
        if signature_only
        else request.model.with_name(f"{request.model.stem}.pruned.keras")
    )
    artifacts = exporting.plan(model, out.folder, out.export)
    if signature_only:
        savedmodel.check_request(
            request.model, request.config.prune.layers, [a.format for a in artifacts]
        )
    stem = model.name if artifacts[0].folder else model.stem
    json_path = out.report or model.with_name(f"{stem}.report.json")
    return Targets(model, json_path, json_path.with_suffix(".md"), tuple(artifacts))


def preflight(request: Request) -> Targets:
    """All checks that need no TensorFlow: the model file exists and is a model, outputs
    writable and not clobbering, data given."""
    paths = targets(request)  # reads the input's format first: a missing model is named first
    for artifact in paths.artifacts:
        staging.check_target(
            artifact.path, force=request.force, inputs=(request.model,), folder=artifact.folder
        )
    for path in (paths.report, paths.markdown):
        staging.check_target(path, force=request.force, inputs=(request.model,))
    settings = request.config
    tflite = any(artifact.format == "tflite" for artifact in paths.artifacts)
    if tflite and settings.output.tflite.quantize == "int8" and settings.data.train is None:
        raise ConfigError(
            "output.tflite.quantize int8 calibrates on training data: set data.train or --data"
        )
    if request.resume and settings.finetune.epochs == 0:
        raise ConfigError("--resume: nothing to resume, finetune.epochs is 0")
    if settings.finetune.epochs > 0:
        checkpoints.preflight(
            checkpoint_folder(request, paths), resume=request.resume, force=request.force
        )
    if settings.finetune.epochs > 0 and settings.data.train is None:
        raise ConfigError(
            "fine-tuning needs training data: set data.train or pass --data "
            "(or --epochs 0 to prune without fine-tuning)"
        )
    if settings.prune.needs.gradients and settings.data.train is None:
        raise ConfigError(
            f"prune.method {settings.prune.method} scores weights by their gradients: "
            "set data.train or --data"
        )
    if (
        request.max_accuracy_drop is not None
        and settings.data.train is None
        and (settings.data.validation is None)
    ):
        raise ConfigError(
            "--max-accuracy-drop needs validation data: set data.validation or --data"
        )
    return paths


def run(request: Request, console: Console | None) -> dict[str, Any]:
    """Prune ``request.model``; write the model and reports atomically; return the report.

    Everything from loading the model on runs in ``finetune.strategy``'s scope, so the
    model's, the masks' and the optimizer's variables are all mirrored (see ``distribute``).
    """
    job = distribute.start(
        request.config.finetune.strategy, request.config.finetune.mixed_precision
    )
    with distribute.outputs_for(job, request) as own, job.strategy.scope():
        return _run(own, console, job)


def _run(request: Request, console: Console | None, job: distribute.Job) -> dict[str, Any]:
    started = time.perf_counter()
    paths = preflight(request)
    cfg = request.config
    timing = _Timer()
    with timing("load_s"):
        model, fmt = model_io.load(request.model, safe_mode=request.safe_mode)
    input_sha256 = _BACKGROUND.submit(measure.sha256, request.model)  # report and checkpoints
    distribute.adopt(model)
    user_compile = model_io.compile_config(model)
    model_io.reset_training_state(model, user_compile)
    splits = data.load(cfg.data, tuple(model.input_shape[1:]), cfg.seed)
    labelled = splits.train or splits.validation
    task = evaluate.infer_task(model, labelled, cfg.data.train) if labelled else None
    if request.max_accuracy_drop is not None and splits.validation is None:
        raise ConfigError("--max-accuracy-drop needs validation data (data.validation_split is 0)")
    if request.max_accuracy_drop is not None and (task is None or task.kind == "regression"):
        raise ConfigError("--max-accuracy-drop needs a classifier: this model has no accuracy")
    compile_args = _training_compile_args(user_compile, task, cfg)
    layers = selection.select(model, cfg.prune)
    _say(
        console,
        f"loaded {request.model} ({fmt}, {model.count_params():,} parameters); "
        f"{_data_line(splits, task)}; {sum(info.selected for info in layers)} layers selected",
    )
    with timing("evaluate_s"):
        before = report.model_stats(model, layers) | _metrics(model, splits, task, compile_args)
    with timing("save_s"):
        deployed_before = exporting.measure_input(
            model, paths.artifacts, cfg.output.tflite, splits, task
        )
        main = deployed_before.get(paths.artifacts[0].format)
        before_size = (
            _done({key: main[key] for key in ("size_bytes", "size_gzip_bytes")})
            if main
            else _size_as(model, paths.model.suffix, input_sha256.result())
        )

    spe = (
        finetune.steps_per_epoch(len(splits.train.y), cfg.finetune.batch_size)
        if splits.train
        else 1
    )
    teacher = _teacher(model, splits, task, cfg)
    gradients = None
    if cfg.prune.needs.gradients:
        gradients = finetune.gradient_source(
            model, splits.train, compile_args["loss"],
            cfg.prune.score_batches, cfg.finetune.batch_size, cfg.seed,
        )  # fmt: skip
    pruner = Pruner(
        layers, cfg.prune, _schedule_factory(cfg, spe), seed=cfg.seed, gradients=gradients
    )
    schedule = _schedule_factory(cfg, spe)(cfg.prune.sparsity)
    if note := coverage.warning(schedule, spe * cfg.finetune.epochs):
        _say(console, note)
    # The prune phase's own update (before step 0) belongs in the report's mask_updates too:
    # without it a schedule's curve, e.g. polynomial from initial_sparsity, starts mid-way.
    pruned: list[dict[str, float]] = []
    with timing("prune_s"):
        if cfg.finetune.epochs == 0:
            pruned.append({"step": 0, "sparsity": pruner.finish()})
        elif pruner.updates_at(0):
            pruned.append({"step": 0, "sparsity": pruner.update(0)})
    tuned = finetune.Result()
    with timing("finetune_s"):
        if cfg.finetune.epochs > 0:
            # A signal stops training before the next step.
            with interrupts.deferred(), distribute.precision(model, job.precision):
                tuned = finetune.run(
                    model, pruner, splits.train, cfg.finetune, compile_args,
                    console, callbacks=[_StopOnSignal()], teacher=teacher, seed=cfg.seed,
                    checkpoint=_tracker(request, paths, console, input_sha256.result()),
                )  # fmt: skip
    model_io.reset_training_state(model, user_compile or _plain_compile(model, compile_args))
    with timing("evaluate_s"):
        after = report.model_stats(model, layers) | _metrics(model, splits, task, compile_args)

    with staging.Staging() as stage:
        with timing("save_s"):
            staged, exports = exporting.stage_all(
                model, paths.artifacts, stage, cfg.output.tflite, splits, task, deployed_before
            )
        after_size = _BACKGROUND.submit(measure.sizes, staged)
        output_sha256 = measure.sha256(staged)
        size, gzipped = after_size.result()
        after |= {"size_bytes": size, "size_gzip_bytes": gzipped}
        before |= before_size.result()
        timing.seconds["total_s"] = time.perf_counter() - started
        result = {
            "schema_version": report.SCHEMA_VERSION,
            "prunecli_version": __version__,
            "environment": runtime.environment() | job.environment(),
            "config": cfg.model_dump(mode="json"),
            "input": {
                "path": str(request.model),
                "format": fmt,
                "sha256": input_sha256.result(),
            },
            "output": {
                "path": str(paths.model),
                "format": paths.artifacts[0].format,
                "sha256": output_sha256,
            },
            "exports": exports,
            "before": before,
            "after": after,
            "layers": report.layer_rows(layers, cfg.prune.pattern),
            "finetune": {
                "epochs": tuned.epochs,
                "steps": tuned.steps,
                "loss": report.loss_name(compile_args.get("loss")),
                "distill": teacher and cfg.finetune.distill.model_dump(),
                "mask_updates": pruned + tuned.updates,
            },
            "data": _data_summary(splits, task),
            "timing": {key: round(value, 4) for key, value in timing.seconds.items()},
            "gate": _gate(request.max_accuracy_drop, before, after),
        }
        stage.write_text(paths.report, report.to_json(result))
        stage.write_text(paths.markdown, report.to_markdown(result))
        stage.commit()
    checkpoints.remove(checkpoint_folder(request, paths))
    written = ", ".join(str(artifact.path) for artifact in paths.artifacts)
    _say(console, f"wrote {written}, {paths.report} and {paths.markdown}")
    return result


def checkpoint_folder(request: Request, paths: Targets | None = None) -> Path:
    """Where fine-tuning keeps its checkpoint (``finetune.checkpoint_dir``, or
    ``<output stem>.ckpt/`` beside the output model)."""
    output = (paths or targets(request)).model
    return checkpoints.folder(request.config.finetune.checkpoint_dir, output)


def _tracker(
    request: Request, paths: Targets, console: Console | None, input_sha256: str
) -> checkpoints.Tracker:
    cfg = request.config
    return checkpoints.Tracker(
        checkpoint_folder(request, paths),
        checkpoints.fingerprint(cfg, input_sha256),
        seed=cfg.seed,
        every=cfg.finetune.checkpoint_steps,
        resume=request.resume,
        console=console,
    )


def _say(console: Console | None, message: str) -> None:
    """A progress line on stderr (nothing when quiet)."""
    if console is not None:
        console.print(message, highlight=False, soft_wrap=True)


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


def _plain_compile(model: Any, compile_args: dict[str, Any]) -> dict[str, Any]:
    """The compile config an input saved without one leaves with: fine-tuning's optimizer
    settings and the task's loss and metrics, never the distillation loss (a closure no
    other program could load). Empty when nothing was fine-tuned."""
    if not getattr(model, "compiled", False) or not compile_args.get("loss"):
        return {}
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # no loss scale
    return {
        key: keras.saving.serialize_keras_object(value)
        for key, value in (
            ("optimizer", optimizer),
            ("loss", compile_args["loss"]),
            ("metrics", compile_args.get("metrics")),
        )
    }


def _training_compile_args(
    user_compile: dict[str, Any], task: evaluate.Task | None, cfg: Config
) -> dict[str, Any]:
    """Loss and metrics to fine-tune and evaluate with: ``finetune.loss``/``metrics`` when
    set, else the model's own, else inferred from the data."""
    explicit = compiling.from_names(cfg.finetune.loss, cfg.finetune.metrics)
    if user_compile.get("loss"):
        config = keras.saving.deserialize_keras_object(user_compile)
        found = {
            key: config.get(key) for key in ("loss", "loss_weights", "metrics", "weighted_metrics")
        }
    elif task is not None:
        found = task.compile_args()
    elif cfg.finetune.epochs > 0 and "loss" not in explicit:
        raise ConfigError(
            "fine-tuning needs a loss: the model was saved without a compile config; "
            "set finetune.loss (e.g. mse, sparse_categorical_crossentropy)"
        )
    else:
        found = {}
    return found | explicit


def _metrics(
    model: Any, splits: data.Splits, task: evaluate.Task | None, compile_args: dict[str, Any]
) -> dict[str, float | None]:
    if splits.validation is None or task is None:
        return {"accuracy": None, "loss": None}
    loss = keras.losses.get(compile_args["loss"])
    accuracy, mean_loss = evaluate.evaluate(model, splits.validation, task, loss)
    return {"accuracy": accuracy, "loss": mean_loss}


# Sizes and digests of big files run beside the main thread: zlib and hashlib release the
# GIL; gzip at level 6 still takes seconds per 100 MB (see reporting.measure).
_BACKGROUND = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="prunecli")


def _done(value: dict[str, int]) -> concurrent.futures.Future[dict[str, int]]:
    future: concurrent.futures.Future[dict[str, int]] = concurrent.futures.Future()
    future.set_result(value)
    return future


def _size_as(
    model: Any, suffix: str, digest: str
) -> concurrent.futures.Future[dict[str, int]]:
    """The input model saved in the output's format, the fair 'before' size: saved now
    (pruning changes the weights next), measured in the background; remembered by the
    input's digest, so a rerun on the same file skips the save and the deflate."""
    key = f"{digest}|{suffix}|keras {keras.__version__}|prunecli {__version__}"
    known = measure.recall(key)
    if known is not None:
        return _done(known)
    folder = Path(tempfile.mkdtemp(prefix="prunecli-"))
    path = folder / f"before{suffix}"
    try:
        model_io.save(model, path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

    def measured() -> dict[str, int]:
        try:
            size, gzipped = measure.sizes(path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        measure.remember(key, {"size_bytes": size, "size_gzip_bytes": gzipped})
        return {"size_bytes": size, "size_gzip_bytes": gzipped}

    return _BACKGROUND.submit(measured)


def _schedule_factory(cfg: Config, spe: int) -> Callable[[float], schedules.Schedule]:
    """Builds each layer's schedule (layers differ only in their final target)."""
    settings = cfg.prune.schedule
    plan = schedules.Plan(
        spe,
        spe * cfg.finetune.epochs,
        start_epoch=settings.start_epoch,
        end_epoch=settings.end_epoch,
        initial=settings.initial_sparsity,
        power=settings.power,
        frequency=settings.frequency,
        rounds=settings.steps,
    )
    return functools.partial(schedules.build, settings.type, plan=plan)


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


class _Timer:
    """Accumulates wall-clock seconds per stage name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(
            ("load_s", "prune_s", "finetune_s", "evaluate_s", "save_s", "total_s"), 0.0
        )

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
