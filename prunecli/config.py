"""YAML config -> validated, frozen pydantic models.

All validation lives here, so code deeper down trusts its inputs. Loading never imports
TensorFlow: ``prunecli validate`` stays fast. Error messages name the dotted key, echo the
value received and say what is allowed, e.g.::

    prune.sparsity: must be < 1, got 1.5
    unknown key prune.sparsty (did you mean prune.sparsity?)
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from prunecli import safe_yaml
from prunecli.core import catalog
from prunecli.core.granularity import UNSTRUCTURED, Pattern, parse_granularity
from prunecli.errors import ConfigError

# Keys whose values are filesystem paths. In a file they are relative to the file's folder;
# on the command line (--set, --data, -o, --report) relative to the working directory.
PATH_KEYS = (
    "data.train",
    "data.validation",
    "data.cache",
    "output.path",
    "output.report",
    "finetune.checkpoint_dir",
)


# Upper bounds: far beyond any real run, low enough that no value makes prunecli allocate or
# loop without end (``prune.schedule.steps: 1e20``, ``finetune.epochs: 1000000``).
MAX_EPOCHS = 10_000
MAX_STEPS = 10**9  # optimizer steps (schedule frequency, checkpoint_steps)
MAX_ROUNDS = 10_000  # iterative prune-retrain rounds
MAX_BATCHES = 100_000
MAX_BATCH_SIZE = 65_536
MAX_LEARNING_RATE = 10.0
MAX_SEED = 2**32 - 1
MAX_SIDE = 65_536  # block sides, image sides, feature dimensions
MAX_FEATURE_VALUES = 2**28  # values in one TFRecord feature
MAX_PIXELS = 2**26  # pixels in one image, read or resized to (data.image_size)
QUOTE = 200  # characters of a value an error message repeats

# Numbers and switches are taken as YAML typed them: ``epochs: true`` is not 1 epoch and
# ``sparsity: "0.5"`` (quoted) is text, so pydantic's lax coercions are off for them.
# Strict floats still take integers (``learning_rate: 1`` is 1.0).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]


class _Section(BaseModel):
    # allow_inf_nan: a NaN or inf anywhere (learning_rate: .inf) would reach the model.
    # defer_build: a model's validator is made when first used, not at import; the
    # sections' defaults are validated through their parent (``_section``), so ``validate``
    # builds one validator, Config's, instead of one per section plus Config's.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


def _section() -> Any:
    """The default of a nested section: {} validated by the parent's own validator (every
    key at its default), e.g. ``Config().prune == Prune()``."""
    return Field(default_factory=dict, validate_default=True)


class LayerSelection(_Section):
    """Which layers get a mask. Regexes are matched with ``re.fullmatch`` on layer paths."""

    include: list[str] = [".*"]
    exclude: list[str] = []
    overrides: dict[str, Float] = {}

    @field_validator("include", "exclude")
    @classmethod
    def _regexes_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            _check_regex(pattern)
        return patterns

    @field_validator("overrides")
    @classmethod
    def _overrides_valid(cls, overrides: dict[str, float]) -> dict[str, float]:
        for pattern, sparsity in overrides.items():
            _check_regex(pattern)
            if not 0.0 <= sparsity < 1.0:
                raise ValueError(f"sparsity for {pattern!r} must be >= 0 and < 1, got {sparsity}")
        return overrides


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None


class Schedule(_Section):
    """When the masks reach which sparsity; epochs may be fractional."""

    type: Literal[catalog.SCHEDULES] = "one_shot"  # type: ignore[valid-type]
    start_epoch: Float = Field(0.0, ge=0, le=MAX_EPOCHS)
    end_epoch: Float = Field(1.0, ge=0, le=MAX_EPOCHS)
    initial_sparsity: Float = Field(0.0, ge=0, lt=1)
    power: Float = Field(3.0, gt=0, le=100)
    frequency: Int = Field(100, ge=1, le=MAX_STEPS)
    steps: Int = Field(3, ge=1, le=MAX_ROUNDS)  # iterative: prune-retrain rounds

    @model_validator(mode="after")
    def _ordered(self) -> Schedule:
        if self.type == "polynomial" and self.end_epoch <= self.start_epoch:
            raise ValueError(
                f"end_epoch ({self.end_epoch}) must be greater than "
                f"start_epoch ({self.start_epoch})"
            )
        return self


class Block(_Section):
    """``{block: [rows, cols]}``: whole blocks over the kernel's last two axes."""

    block: tuple[Int, Int]

    @field_validator("block")
    @classmethod
    def _positive(cls, block: tuple[int, int]) -> tuple[int, int]:
        if min(block) < 1 or max(block) > MAX_SIDE:
            raise ValueError(f"both sides must be from 1 to {MAX_SIDE}, got {list(block)}")
        return block


class Prune(_Section):
    method: Literal[tuple(catalog.ALL_METHODS)] = "magnitude"  # type: ignore[valid-type]
    granularity: str | Block = "unstructured"
    scope: Literal["layer", "global"] = "layer"
    # "auto": per-layer targets from a sensitivity scan within max_accuracy_drop (analysis)
    sparsity: float | Literal["auto"] = 0.5
    # The --max-accuracy-drop gate in the config; with sparsity auto also the scan's budget.
    max_accuracy_drop: Float | None = Field(None, ge=0, le=1)
    # One full prune + fine-tune per target (``--sweep``), plus one combined report.
    sweep: list[Float] | None = None
    min_layer_density: Float = Field(0.02, gt=0, le=1)
    # taylor: batches of training data whose gradients score the weights
    score_batches: Int = Field(16, ge=1, le=MAX_BATCHES)
    layers: LayerSelection = _section()
    schedule: Schedule = _section()
    round_to: Int = Field(8, ge=1)  # channel: kept counts stay multiples of this (1 = off)
    heads: Bool = True  # channel: MultiHeadAttention loses whole heads

    @field_validator("granularity", mode="before")
    @classmethod
    def _known_granularity(cls, value: Any) -> str | Block:
        """Parse here rather than through the union, so errors name the key plainly."""
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(
                f'write N:M in quotes, e.g. "2:4": YAML reads 2:4 unquoted as the number '
                f"{value} (base 60), got {value}"
            )
        if isinstance(value, dict | Block):
            try:
                return Block.model_validate(value)
            except ValidationError as exc:
                raise ValueError(f"{{block: [rows, cols]}}: {_describe(exc, Block)}") from None
        if value == catalog.CHANNEL:
            return value
        parse_granularity(value)  # raises with what is allowed
        return value

    @field_validator("sparsity", mode="before")
    @classmethod
    def _number_or_auto(cls, value: Any) -> Any:
        """A number in [0, 1) or ``auto``; one message either way (no union noise)."""
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number >= 0 and < 1, or auto, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"input should be a finite number, got {value}")
        if value < 0:
            raise ValueError(f"input should be greater than or equal to 0, got {value}")
        if value >= 1:
            raise ValueError(f"input should be less than 1, got {value}")
        return float(value)

    @field_validator("sweep")
    @classmethod
    def _sweep_targets(cls, sweep: list[float] | None) -> list[float] | None:
        if sweep is not None:
            _check_levels(sweep, "target")
        return sweep

    @property
    def needs(self) -> catalog.Needs:
        """What the chosen method needs (gradients, training statistics)."""
        if self.granularity == catalog.CHANNEL:
            return catalog.CHANNEL_METHODS[self.method]
        return catalog.METHODS[self.method]

    @property
    def pattern(self) -> Pattern:
        """The granularity parsed once, for every stage that masks or checks kernels.
        ``channel`` puts no layout on single weights (whole channels go, see
        ``prunecli.structured``): unstructured for the stages that check kernels."""
        if self.granularity == catalog.CHANNEL:
            return UNSTRUCTURED
        return parse_granularity(self.granularity)

    @model_validator(mode="before")
    @classmethod
    def _nm_sets_sparsity(cls, data: Any) -> Any:
        """N:M fixes the sparsity at 1 - N/M: fill it in when the user left it out."""
        if isinstance(data, dict) and "sparsity" not in data:
            with contextlib.suppress(ValueError, TypeError):  # bad values fail on the field
                fixed = parse_granularity(data.get("granularity", "unstructured")).fixed_sparsity
                if fixed is not None:
                    data = {**data, "sparsity": fixed}
        return data

    @model_validator(mode="after")
    def _combination_valid(self) -> Prune:
        fixed = self.pattern.fixed_sparsity
        _check_auto(self, fixed is not None)
        if fixed is not None:
            if abs(self.sparsity - fixed) > 1e-9:
                raise ValueError(
                    f"prune.sparsity ({self.sparsity}) disagrees with prune.granularity "
                    f"{self.granularity!r}, which fixes it at {fixed:g}; drop one of the two"
                )
            if self.scope == "global":
                raise ValueError(
                    f"prune.granularity {self.granularity!r} fixes every layer's sparsity; "
                    "prune.scope global has nothing to share: use scope layer"
                )
        self._channel_methods_valid()
        gradual = catalog.GRADUAL_SCHEDULES
        if self.needs.training and self.schedule.type not in gradual:
            raise ValueError(
                f"prune.method {self.method} scores weights by how fine-tuning moves them, so "
                f"it needs a gradual prune.schedule.type ({' or '.join(gradual)}), "
                f"got {self.schedule.type!r}"
            )
        if self.scope == "global" and self.layers.overrides:
            raise ValueError(
                "prune.layers.overrides sets per-layer targets, which only scope layer has; "
                "remove them or use prune.scope layer"
            )
        return self

    def _channel_methods_valid(self) -> None:
        """Channel scores and weight scores do not mix: say which granularity a method needs."""
        channel = catalog.CHANNEL_METHODS
        if self.granularity == catalog.CHANNEL and self.method not in channel:
            raise ValueError(
                f"prune.method {self.method} scores single weights; prune.granularity channel "
                f"takes {', '.join(m for m in channel if m != 'magnitude')}"
            )
        if self.granularity != catalog.CHANNEL and self.method not in catalog.METHODS:
            raise ValueError(
                f"prune.method {self.method} scores whole channels: set prune.granularity "
                f"channel (or use magnitude for {self.granularity!r})"
            )


def _check_levels(levels: list[float], what: str) -> None:
    """Sparsities for a scan or a sweep: each in [0, 1), none twice, at least one."""
    if not levels:
        raise ValueError(f"needs at least one {what}, got []")
    for level in levels:
        if not 0.0 <= level < 1.0:
            raise ValueError(f"every {what} must be >= 0 and < 1, got {level}")
    if len(set(levels)) != len(levels):
        raise ValueError(f"a {what} is repeated, got {levels}")


def _check_auto(prune: Prune, nm: bool) -> None:
    """``sparsity: auto`` picks one target per layer (per channel group under
    ``granularity: channel``) within ``max_accuracy_drop``."""
    if prune.sparsity != "auto":
        return
    if prune.max_accuracy_drop is None:
        raise ValueError(
            "prune.sparsity auto needs an accuracy budget: set prune.max_accuracy_drop "
            "(or pass --max-accuracy-drop), e.g. 0.01 for one point"
        )
    clash = (
        "prune.granularity N:M fixes every layer's sparsity"
        if nm
        else "prune.scope global shares one threshold"
        if prune.scope == "global"
        else "prune.layers.overrides sets targets by hand"
        if prune.layers.overrides
        else "prune.sweep sets the targets"
        if prune.sweep
        else None
    )
    if clash:
        raise ValueError(f"prune.sparsity auto picks a target per layer, but {clash}")


class Distill(_Section):
    """Knowledge distillation from the unpruned input model (Hinton et al. 2015):
    loss = (1 - alpha) * task + alpha * T^2 * KL(teacher || student) at temperature T."""

    alpha: Float = Field(0.5, ge=0, le=1)
    temperature: Float = Field(4.0, gt=0, le=1000)


class Finetune(_Section):
    epochs: Int = Field(2, ge=0, le=MAX_EPOCHS)
    batch_size: Int = Field(32, ge=1, le=MAX_BATCH_SIZE)
    learning_rate: Float = Field(1e-4, gt=0, le=MAX_LEARNING_RATE)
    optimizer: Literal[catalog.OPTIMIZERS] = "adam"  # type: ignore[valid-type]
    momentum: Float = Field(0.0, ge=0, lt=1)
    distill: Distill | None = None
    # Needed when the input model carries no compile config; any Keras loss / metric name.
    loss: str | None = None
    metrics: list[str] = []
    # Batch jobs: distribution, precision, XLA, preemption-safe checkpoints.
    strategy: Literal[catalog.STRATEGIES] = "auto"  # type: ignore[valid-type]
    mixed_precision: Bool = False
    jit_compile: Literal["auto"] | Bool = "auto"
    steps_per_execution: Literal["auto"] | Int = "auto"
    checkpoint_dir: Path | None = None
    checkpoint_steps: Int | None = Field(None, ge=1, le=MAX_STEPS)
    # Frozen layers (trainable=False) that are pruned: unfreeze them for the fine-tune
    # (they are saved back frozen); false leaves them as pruned, with a warning.
    train_frozen: Bool = False

    @field_validator("steps_per_execution")
    @classmethod
    def _positive_steps(cls, steps: Literal["auto"] | int) -> Literal["auto"] | int:
        if steps != "auto" and not 1 <= steps <= MAX_ROUNDS:
            raise ValueError(f"must be auto or an integer from 1 to {MAX_ROUNDS}, got {steps}")
        return steps


class Feature(_Section):
    """One ``tf.train.Example`` feature: ``float32``/``int64`` hold a flat list of the
    shape's values; ``string`` holds encoded image bytes (PNG or JPEG) decoded to the shape."""

    dtype: Literal["float32", "int64", "string"]
    shape: list[Int] = []

    @field_validator("shape")
    @classmethod
    def _positive_dims(cls, shape: list[int]) -> list[int]:
        if any(not 1 <= d <= MAX_SIDE for d in shape):
            raise ValueError(f"every dimension must be from 1 to {MAX_SIDE}, got {shape}")
        if math.prod(shape) > MAX_FEATURE_VALUES:
            raise ValueError(f"more than {MAX_FEATURE_VALUES:,} values, got shape {shape}")
        return shape


class TFRecord(_Section):
    """How to read TFRecord files: the features by name (the label is ``data.label_column``)."""

    features: dict[str, Feature]


class Data(_Section):
    train: Path | None = None
    validation: Path | None = None
    validation_split: Float = Field(0.1, ge=0, lt=1)
    image_size: tuple[Int, Int] | None = None
    color_mode: Literal["grayscale", "rgb", "rgba"] | None = None
    # auto: 1 when the model begins with its own Rescaling/Normalization, else 1/255
    rescale: Literal["auto"] | Float | None = "auto"
    label_column: str = "label"
    cache: Bool | Path = False  # tf.data cache: true = memory, a path = files there
    tfrecord: TFRecord | None = None

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and (min(size) < 1 or max(size) > MAX_SIDE):
            raise ValueError(f"both sides must be from 1 to {MAX_SIDE}, got {list(size)}")
        if size is not None and size[0] * size[1] > MAX_PIXELS:  # each image is resized to it
            raise ValueError(
                f"{size[0]} x {size[1]} is more than {MAX_PIXELS:,} pixels per image, "
                f"got {list(size)}"
            )
        return size


class TFLite(_Section):
    sparse: Bool = True  # tf.lite.Optimize.EXPERIMENTAL_SPARSITY: pruned weights stored sparse
    quantize: Literal["none", "dynamic", "float16", "int8"] = "none"


class Analyze(_Section):
    """``prunecli analyze`` (and ``prune.sparsity: auto``): the sensitivity scan."""

    levels: list[Float] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    samples: Int | None = Field(None, ge=1)  # validation samples evaluated; None: all

    @field_validator("levels")
    @classmethod
    def _valid_levels(cls, levels: list[float]) -> list[float]:
        _check_levels(levels, "level")
        return sorted(levels)


class Output(_Section):
    path: Path | None = None
    html: Bool = True  # an HTML report (plots embedded) beside the Markdown one
    report: Path | None = None
    export: list[Literal["savedmodel", "tflite", "keras", "h5"]] = []
    tflite: TFLite = _section()
    # ``Path`` drops a trailing separator, which is how a user says "a SavedModel folder"
    # for a name with a dot in it (``model.v2/``): it is remembered here, before parsing.
    _folder: bool = PrivateAttr(False)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_folder(cls, data: Any, handler: Any) -> Output:
        output = handler(data)
        raw = data.get("path") if isinstance(data, dict) else None
        output._folder = isinstance(raw, str) and raw.endswith(("/", os.sep))
        return output

    @property
    def folder(self) -> bool:
        """True when ``path`` was written with a trailing ``/``: a SavedModel folder."""
        return self._folder


class Input(_Section):
    """How to load the input model: ``imports`` are Python modules imported first (user
    code that registers custom layers with ``keras.saving.register_keras_serializable``)."""

    imports: list[str] = []

    @field_validator("imports")
    @classmethod
    def _module_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
                raise ValueError(f"must be Python module names such as my_layers, got {name!r}")
        return names


class Config(_Section):
    """The whole resolved configuration of one run."""

    version: Literal[1] = 1
    seed: Int = Field(0, ge=0, le=MAX_SEED)  # numpy and TensorFlow take 32-bit seeds
    input: Input = _section()
    prune: Prune = _section()
    finetune: Finetune = _section()
    data: Data = _section()
    output: Output = _section()
    analyze: Analyze = _section()

    @model_validator(mode="after")
    def _schedule_fits_training(self) -> Config:
        schedule, epochs = self.prune.schedule, self.finetune.epochs
        if epochs > 0 and schedule.type != "one_shot" and schedule.start_epoch >= epochs:
            raise ValueError(
                f"prune.schedule.start_epoch ({schedule.start_epoch}) must be less than "
                f"finetune.epochs ({epochs}), or the schedule never starts"
            )
        if self.prune.needs.training and epochs == 0:
            raise ValueError(
                f"prune.method {self.prune.method} needs fine-tuning to measure movement: "
                "finetune.epochs must be > 0"
            )
        if epochs > 0 and schedule.type == "polynomial" and schedule.end_epoch > epochs:
            raise ValueError(
                f"prune.schedule.end_epoch ({schedule.end_epoch}) must be <= finetune.epochs "
                f"({epochs}), or the target sparsity is never reached"
            )
        return self


def load(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read, merge and validate a config.

    ``path`` None means every key takes its default. ``overrides`` maps dotted keys to values
    (from ``--set`` and the dedicated flags) and wins over the file; its relative paths are
    taken from the working directory, the file's from the file's folder.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(path)
        _resolve_paths(raw, path.parent)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    _resolve_paths(raw, Path.cwd())
    try:
        with _without_pydantic_plugins():
            return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_origin(exc, path, overrides or {}) + _describe(exc)) from None


def _origin(exc: ValidationError, path: Path | None, overrides: dict[str, Any]) -> str:
    """Where the bad value came from, as the message's prefix: the file, or the command
    line when ``--set``/a flag wrote the key (or a section holding it), e.g.
    ``--set prune.foo.bar=1`` -> ``command line: unknown key prune.foo``; both when a
    section's rule mixes the two (``cfg.yaml + command line: prune: ...``)."""
    dotted = ".".join(str(part) for part in exc.errors()[0]["loc"])
    ours = any(dotted == key or dotted.startswith(key + ".") for key in overrides)
    created = exc.errors()[0]["type"] == "extra_forbidden" and any(
        key.startswith(dotted + ".") for key in overrides
    )
    mixed = any(not dotted or key.startswith(dotted + ".") for key in overrides)
    if path is None:
        return ""
    if ours or created:
        return "command line: "
    return f"{path} + command line: " if mixed else f"{path}: "


@contextlib.contextmanager
def _without_pydantic_plugins() -> Iterator[None]:
    """While the first validation builds Config's validator, pydantic looks for plugins
    by scanning every installed package's entry points (TensorFlow's venv: hundreds),
    a noticeable share of ``prunecli validate``. prunecli's own config has no use for
    them: ``PYDANTIC_DISABLE_PLUGINS`` (pydantic's documented switch) is set for the
    build unless the user set it, then restored."""
    if "PYDANTIC_DISABLE_PLUGINS" in os.environ:
        yield
        return
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
    try:
        yield
    finally:
        os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)


def parse_set(assignment: str) -> tuple[str, Any]:
    """``"prune.sparsity=0.9"`` -> ``("prune.sparsity", 0.9)``: the value is parsed as YAML."""
    key, sep, text = assignment.partition("=")
    if not sep or not all(part.strip() for part in key.split(".")):
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. prune.sparsity=0.9")
    try:
        value = safe_yaml.load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"--set {assignment!r}: value is not valid YAML ({problem})") from None
    return ".".join(part.strip() for part in key.split(".")), value


def dump(config: Config) -> str:
    """The resolved config as YAML, every key present (``validate --print``)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = safe_yaml.read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    try:
        data = safe_yaml.load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {quote(str(exc))}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    return data


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part} is not a section")
        node = child
    node[leaf] = value


def _absolute(value: Path, base: Path) -> Path:
    """``value`` made absolute against ``base``, its folders resolved but never its last
    component: ``out/p.keras`` that is a symlink stays ``/cwd/out/p.keras``, so the output
    checks see (and refuse) the link instead of the file it points at."""
    path = value if value.is_absolute() else base / value
    if path.name in ("", ".", ".."):
        return path.resolve()
    return path.parent.resolve() / path.name


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make every relative path value absolute against ``base`` (in place)."""
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            value = Path(node[key]).expanduser()
            resolved = str(value if value.is_absolute() else _absolute(value, base))
            # keep a trailing separator: output.path ``name/`` means a SavedModel folder
            trailing = os.sep if node[key].endswith(("/", os.sep)) and resolved != os.sep else ""
            node[key] = resolved.rstrip("/" + os.sep) + trailing if trailing else resolved


def _describe(exc: ValidationError, root: type[BaseModel] | None = None) -> str:
    """One line for the first error pydantic found (the user fixes one thing at a time);
    ``root``: the model that was validated (Config unless a field validates its own)."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    dotted = ".".join(loc)
    if error["type"] == "extra_forbidden":
        valid = _fields_at(loc[:-1], root or Config)
        import difflib  # only for a misspelt key: not on every start-up

        close = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = (
            f"did you mean {'.'.join([*loc[:-1], close[0]])}?"
            if close
            else (f"valid keys here: {', '.join(valid)}")
        )
        return f"unknown key {dotted} ({hint})"
    message = error["msg"]
    message = message.removeprefix("Value error, ")
    message = message[0].lower() + message[1:]
    if not loc:
        return message
    # Our own validators' messages already echo the value they received.
    if error["type"] in ("missing", "value_error") or isinstance(error["input"], dict):
        return f"{dotted}: {message}"
    return f"{dotted}: {message}, got {quote(repr(error['input']))}"


def quote(text: str) -> str:
    """At most ``QUOTE`` characters of a value for an error message, on one line:
    ``quote("x" * 10**6)`` is 200 x's and ``... (1,000,000 characters)``."""
    flat = " ".join(text.split())
    if len(flat) <= QUOTE:
        return flat
    return f"{flat[:QUOTE]}... ({len(text):,} characters)"


def _fields_at(loc: list[str], model: type[BaseModel]) -> list[str]:
    """The valid keys of the section at ``loc`` below ``model`` (for "did you mean")."""
    for part in loc:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
