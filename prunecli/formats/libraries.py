"""The Python code a model file needs before Keras can build it: installed model libraries
and the user's own modules.

- A class from keras_hub, keras_cv or keras_nlp (its ``registered_name`` is
  ``keras_hub>BertBackbone``, its ``module`` ``keras_hub.src...``) is known once that
  package is imported: prunecli imports the *package* the file names when it is installed,
  never a module path taken from the file (that would run code the file chooses).
- ``--import MODULE`` / ``input.imports`` import the user's modules (from the working
  directory or the Python path) first: that is how classes registered with
  ``keras.saving.register_keras_serializable`` become known. It runs the user's code, as
  ``--no-safe-mode`` runs a Lambda's.
- A class still unknown is one ``ModelLoadError`` naming it and saying how to supply it,
  before Keras fails with a message that does not name it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prunecli.errors import ModelLoadError, first_line

# import name -> the name pip installs it by
PACKAGES = {"keras_hub": "keras-hub", "keras_cv": "keras-cv", "keras_nlp": "keras-nlp"}
_UNKNOWN = re.compile(
    r"(?:Unknown layer|Could not locate class|Unknown object)[^'\"]*['\"]([\w.]+(?:>[\w.]+)?)"
)


def import_modules(names: list[str] | tuple[str, ...]) -> None:
    """Import each user module (the working directory is searched first, as ``python -m``
    does); a module that fails to import is a ModelLoadError naming it."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the user's code may raise anything while importing
            raise ModelLoadError(
                f"--import {name}: cannot import module {name!r} "
                f"({type(exc).__name__}: {first_line(exc)})"
            ) from None


# tf_keras wrote some initializers as TensorFlow's own (EfficientNetV2's
# ``tensorflow.python.ops.init_ops_v2.Constant``): Keras's own, once the Keras 2 rewrite
# (``legacy``) has moved them to keras.initializers.
KERAS_ONES_IN_TF = "tensorflow.python.ops.init_ops"


def prepare(path: Path, config: dict[str, Any], imports: list[str] | tuple[str, ...]) -> None:
    """Import what ``config`` (a stored model config) needs, then check every custom class
    in it is known; raises ModelLoadError naming the first that is not."""
    import keras

    import_modules(imports)
    for package in sorted({p for _, _, p in _custom_classes(config) if p in PACKAGES}):
        if importlib.util.find_spec(package) is None:
            raise ModelLoadError(
                f"{path}: the model is built from {package} classes; install it "
                f"(pip install {PACKAGES[package]}) and run again"
            )
        importlib.import_module(package)
    for class_name, registered, package in _custom_classes(config):
        if registered and keras.saving.get_registered_object(registered) is None:
            raise ModelLoadError(missing_class(path, class_name, package, _keras2_only(registered)))


def _keras2_only(registered: str) -> bool:
    """Whether an imported module registered ``registered`` with tf_keras (Keras 2): a Keras 2
    file's custom layer, imported as written. prunecli builds Keras 3 models, which cannot
    use a tf_keras class, so the user needs a Keras 3 version (looked up only when the user's
    code has imported tf_keras already: nothing is imported for this)."""
    tf_keras = sys.modules.get("tf_keras")
    saving = getattr(tf_keras, "saving", None)
    return saving is not None and saving.get_registered_object(registered) is not None


def missing_class(
    path: Path, class_name: str, package: str | None, keras2_only: bool = False
) -> str:
    """The one line for an unknown class, e.g. ``m.h5: the model uses class 'Scale'
    (registered by package 'zoo'), which is not known; pass --import MODULE ...``."""
    source = f" (registered by package {package!r})" if package else ""
    how = f"(package={package!r})" if package else ""
    if keras2_only:
        return (
            f"{path}: the model uses class {class_name!r}{source}, which the imported code "
            "registers with tf_keras (Keras 2) only; prunecli rebuilds the model with Keras 3: "
            "pass --import MODULE naming a module that defines a Keras 3 version with "
            f"@keras.saving.register_keras_serializable{how}"
        )
    return (
        f"{path}: the model uses class {class_name!r}{source}, which is not known; pass "
        f"--import MODULE (or input.imports in the config) naming the Python module that "
        f"defines it with @keras.saving.register_keras_serializable{how}"
    )


def explain(path: Path, exc: BaseException) -> str | None:
    """A one-line cause for a Keras load failure that names an unknown class (else None);
    ``zoo>Scale`` (a registered name) is class ``Scale`` of package ``zoo``."""
    found = _UNKNOWN.search(str(exc))
    if not found:
        return None
    package, _, name = found.group(1).rpartition(">")
    return missing_class(path, name, package or None)


def _custom_classes(node: Any) -> Iterator[tuple[str, str | None, str | None]]:
    """(class name, registered name, package) for every class in a config that is not
    Keras's own: a ``package>Name`` registration or a module outside ``keras``."""
    if isinstance(node, list):
        for item in node:
            yield from _custom_classes(item)
        return
    if not isinstance(node, dict):
        return
    class_name, registered = node.get("class_name"), node.get("registered_name")
    module = node.get("module")
    if isinstance(class_name, str) and ">" in class_name:  # Keras 2: the registered name
        registered, (package, _, class_name) = class_name, class_name.rpartition(">")
        yield class_name, registered, package
    elif isinstance(class_name, str) and class_name != "__keras_tensor__":
        package = None
        if isinstance(registered, str) and ">" in registered:
            package = registered.split(">")[0]
        elif (
            isinstance(module, str)
            and module.split(".")[0] not in ("keras", "builtins")
            and not module.startswith(KERAS_ONES_IN_TF)
        ):
            package = module.split(".")[0]
        if package is not None:
            yield class_name, registered if isinstance(registered, str) else None, package
    for key, value in node.items():
        if key != "training_config":  # Keras 2's compile config (``Custom>Adam``): compiling's
            yield from _custom_classes(value)


# keras_hub task -> the preprocessor set aside while prunecli runs it (see detach_preprocessor)
_PREPROCESSORS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def detach_preprocessor(model: Any) -> None:
    """Set a keras_hub task's preprocessor aside (``task.preprocessor = None``, keras_hub's
    documented way to turn it off). A task from a preset carries its tokenizer and runs it
    inside ``fit``/``predict``/``evaluate``; prunecli feeds the model's own inputs (token
    ids, ``padding_mask``), which a tokenizer cannot read. ``preprocessor_attached`` puts
    it back while the model is saved, so the output still takes raw strings."""
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is not None and type(model).__module__.split(".")[0] == "keras_hub":
        _PREPROCESSORS[model] = preprocessor
        model.preprocessor = None


@contextlib.contextmanager
def preprocessor_attached(model: Any) -> Iterator[None]:
    """``model`` with the preprocessor ``detach_preprocessor`` set aside, for a save."""
    preprocessor = _PREPROCESSORS.get(model)
    if preprocessor is None:
        yield
        return
    model.preprocessor = preprocessor
    try:
        yield
    finally:
        model.preprocessor = None
