"""Every bad input: exit 2, one line on stderr naming the thing, and nothing left behind.

Each case runs the real ``prunecli prune`` with its output in an empty folder and checks,
after the failure, that the folder is still empty: no model, no report, no temporary file.
"""

from __future__ import annotations

import os
import signal
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import build_cnn, core_outputs, noise_image_folder, write_config


def one_error_line(result: Any, code: int = 2) -> str:
    """The single error line of a failed run: last on stderr, no traceback, nothing on
    stdout. A bad input fails before any work, so nothing else is on stderr; a run stopped
    later may have logged progress lines ("loaded ...") before it."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("prunecli: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    if code == 2:
        assert len(lines) == 1, result.stderr
    return errors[0]


# --- the model file -------------------------------------------------------------------------


def test_missing_model_file(cli, tmp_path, image_data, out):
    missing = tmp_path / "nope.h5"
    line = one_error_line(cli("prune", missing, "--data", image_data, "-o", out / "p.keras"))
    assert str(missing) in line and "not found" in line
    assert core_outputs(out) == []


def _random_bytes(path: Path, make_model: Callable[..., Path]) -> Path:
    target = path / "random.h5"
    target.write_bytes(np.random.default_rng(0).bytes(4096))
    return target


def _truncated_keras(path: Path, make_model: Callable[..., Path]) -> Path:
    whole = make_model("cnn", ".keras", train=False).read_bytes()
    target = path / "truncated.keras"
    target.write_bytes(whole[: len(whole) // 2])
    return target


def _zip_without_config(path: Path, make_model: Callable[..., Path]) -> Path:
    target = path / "other.keras"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    return target


def _text_file(path: Path, make_model: Callable[..., Path]) -> Path:
    target = path / "model.h5"
    target.write_text("this is a text file, not a model\n")
    return target


@pytest.mark.parametrize(
    "make_bad",
    [_random_bytes, _truncated_keras, _zip_without_config, _text_file],
    ids=["random-bytes", "truncated-keras", "zip-without-config", "text"],
)
def test_file_that_is_not_a_model(cli, tmp_path, make_model, image_data, out, make_bad):
    bad = make_bad(tmp_path, make_model)
    line = one_error_line(cli("prune", bad, "--data", image_data, "-o", out / "p.keras"))
    assert str(bad) in line
    assert "model" in line.removeprefix(f"prunecli: error: {bad}")
    assert core_outputs(out) == []


def test_weights_only_h5(cli, tmp_path, image_data, out):
    weights = tmp_path / "cnn.weights.h5"
    build_cnn().save_weights(weights)
    line = one_error_line(cli("prune", weights, "--data", image_data, "-o", out / "p.keras"))
    assert str(weights) in line and "weights only" in line
    assert core_outputs(out) == []


def _lambda_model(path: Path) -> Path:
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Lambda(lambda x: x * 2.0, name="double"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    target = path / "lambda.keras"
    model.save(target)
    return target


def test_lambda_layer_refused_in_safe_mode(cli, tmp_path, image_data, out):
    model_path = _lambda_model(tmp_path)
    line = one_error_line(
        cli("prune", model_path, "--data", image_data, "-o", out / "p.keras", "--epochs", "0")
    )
    assert str(model_path) in line and "Lambda" in line and "--no-safe-mode" in line
    assert core_outputs(out) == []

    accepted = cli(
        "prune", model_path, "--data", image_data, "-o", out / "p.keras", "--epochs", "0",
        "--no-safe-mode", "--json",
    )  # fmt: skip
    assert accepted.exit_code == 0, accepted.stderr
    assert core_outputs(out) == ["p.keras", "p.report.json", "p.report.md"]


def test_inspect_refuses_lambda_and_missing_file(cli, tmp_path):
    model_path = _lambda_model(tmp_path)
    line = one_error_line(cli("inspect", model_path))
    assert "--no-safe-mode" in line
    assert cli("inspect", model_path, "--no-safe-mode").exit_code == 0
    line = one_error_line(cli("inspect", tmp_path / "nope.keras"))
    assert str(tmp_path / "nope.keras") in line


# --- the config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prune:\n  sparsty: 0.5\n", ["unknown key prune.sparsty", "did you mean prune.sparsity?"]),
        ("finetune:\n  epochs: two\n", ["finetune.epochs", "'two'"]),
        ("prune:\n  sparsity: 1.5\n", ["prune.sparsity", "less than 1", "got 1.5"]),
        ("prune:\n  scope: galaxy\n", ["prune.scope", "'layer'", "'global'", "'galaxy'"]),
        ("prune:\n  sparsity: [0.5\nseed: 1\n", ["YAML syntax error"]),
    ],
    ids=["unknown-key", "wrong-type", "out-of-range", "bad-choice", "yaml-syntax"],
)
def test_bad_config(cli, make_model, tmp_path, image_data, out, text, expected):
    model_path = make_model("cnn", ".h5", train=False)
    cfg = write_config(tmp_path / "cfg.yaml", text)
    for command in (
        ("prune", model_path, "--config", cfg, "--data", image_data, "-o", out / "p.keras"),
        ("validate", cfg),
    ):
        line = one_error_line(cli(*command))
        assert str(cfg) in line
        for part in expected:
            assert part in line, line
    assert core_outputs(out) == []


def test_yaml_syntax_error_gives_line_and_column(cli, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", "seed: 1\nprune:\n  sparsity: [0.5\n  scope: layer\n")
    line = one_error_line(cli("validate", cfg))
    assert line.startswith(f"prunecli: error: {cfg}:")
    line_number, column = line.removeprefix(f"prunecli: error: {cfg}:").split(":")[:2]
    assert int(line_number) >= 3 and int(column) >= 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--set", "prune.sparsity=2"), ["prune.sparsity", "2"]),
        (("--set", "nonsense"), ["--set", "KEY=VALUE"]),
        (("--sparsity", "-0.1"), ["prune.sparsity", "-0.1"]),
        (("--max-accuracy-drop", "5"), ["--max-accuracy-drop", "5"]),
        (("--config", "missing.yaml"), ["missing.yaml", "not found"]),
    ],
    ids=["set-range", "set-syntax", "flag-range", "gate-range", "config-missing"],
)
def test_bad_flags(cli, make_model, image_data, out, args, expected):
    model_path = make_model("cnn", ".h5", train=False)
    line = one_error_line(
        cli("prune", model_path, "--data", image_data, "-o", out / "p.keras", *args)
    )
    for part in expected:
        assert part in line, line
    assert core_outputs(out) == []


def test_no_layer_selected(cli, make_model, tmp_path, image_data, out):
    model_path = make_model("cnn", ".h5", train=False)
    for rules in ("include: ['nothing.*']", "exclude: ['.*']"):
        cfg = write_config(tmp_path / "cfg.yaml", f"prune:\n  layers:\n    {rules}\n")
        line = one_error_line(
            cli("prune", model_path, "--config", cfg, "--data", image_data, "-o", out / "p.keras")
        )
        assert "no layer selected" in line
        assert "conv, hidden, out" in line  # what could have been selected
        assert core_outputs(out) == []


# --- the data -------------------------------------------------------------------------------


def _missing_dir(tmp_path: Path) -> tuple[list[Any], str]:
    return ["--data", tmp_path / "nowhere"], str(tmp_path / "nowhere")


def _empty_dir(tmp_path: Path) -> tuple[list[Any], str]:
    (tmp_path / "empty").mkdir()
    return ["--data", tmp_path / "empty"], str(tmp_path / "empty")


def _empty_class_folders(tmp_path: Path) -> tuple[list[Any], str]:
    for name in ("a", "b"):
        (tmp_path / "hollow" / name).mkdir(parents=True)
    return ["--data", tmp_path / "hollow"], "no images"


def _one_class(tmp_path: Path) -> tuple[list[Any], str]:
    root = noise_image_folder(tmp_path / "single", classes=1)
    return ["--data", root], "one class"


def _class_count(tmp_path: Path) -> tuple[list[Any], str]:
    root = noise_image_folder(tmp_path / "two", classes=2)
    return ["--data", root], "2 classes"


def _too_many_classes(tmp_path: Path) -> tuple[list[Any], str]:
    root = noise_image_folder(tmp_path / "four", classes=4)
    return ["--data", root], "4 classes"


def _undecodable(tmp_path: Path) -> tuple[list[Any], str]:
    root = noise_image_folder(tmp_path / "broken")
    bad = root / "class_1" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return ["--data", root], str(bad)


def _npz_without_xy(tmp_path: Path) -> tuple[list[Any], str]:
    path = tmp_path / "bad.npz"
    np.savez(path, features=np.zeros((4, 8, 8, 1), np.float32), labels=np.arange(4) % 3)
    return ["--set", f"data.train={path}"], "expected arrays named x and y"


def _npz_wrong_shape(tmp_path: Path) -> tuple[list[Any], str]:
    path = tmp_path / "big.npz"
    np.savez(path, x=np.zeros((6, 10, 10, 1), np.float32), y=np.arange(6) % 3)
    return ["--set", f"data.train={path}"], "(10, 10, 1)"


def _image_size_wrong(tmp_path: Path) -> tuple[list[Any], str]:
    root = noise_image_folder(tmp_path / "imgs")
    return ["--data", root, "--set", "data.image_size=[10, 10]"], "(8, 8, 1)"


def _csv_without_label(tmp_path: Path) -> tuple[list[Any], str]:
    path = tmp_path / "nolabel.csv"
    path.write_text("f0,f1,target\n1,2,0\n3,4,1\n")
    return ["--set", f"data.train={path}"], "'label'"


def _csv_non_numeric(tmp_path: Path) -> tuple[list[Any], str]:
    path = tmp_path / "words.csv"
    path.write_text("f0,f1,label\n1,2,0\n3,abc,1\n")
    return ["--set", f"data.train={path}"], "'abc'"


DATA_CASES = {
    "missing-dir": _missing_dir,
    "empty-dir": _empty_dir,
    "empty-class-folders": _empty_class_folders,
    "one-class": _one_class,
    "class-count": _class_count,
    "too-many-classes": _too_many_classes,
    "undecodable-image": _undecodable,
    "npz-without-xy": _npz_without_xy,
    "npz-wrong-shape": _npz_wrong_shape,
    "image-size-wrong": _image_size_wrong,
    "csv-without-label": _csv_without_label,
    "csv-non-numeric": _csv_non_numeric,
}


@pytest.mark.parametrize("case", list(DATA_CASES), ids=list(DATA_CASES))
def test_bad_data(cli, make_model, tmp_path, out, case):
    model_path = make_model("cnn", ".h5", train=False)
    args, expected = DATA_CASES[case](tmp_path)
    if case.startswith("csv"):  # tabular data goes with the tabular model
        model_path = make_model("dense", ".h5", train=False)
    line = one_error_line(cli("prune", model_path, *args, "-o", out / "p.keras", "--epochs", "1"))
    assert expected in line, line
    assert core_outputs(out) == []


def test_data_train_missing_from_config(cli, make_model, tmp_path, out):
    model_path = make_model("cnn", ".h5", train=False)
    cfg = write_config(tmp_path / "cfg.yaml", "data:\n  train: no/such/folder\n")
    line = one_error_line(cli("prune", model_path, "--config", cfg, "-o", out / "p.keras"))
    assert str(tmp_path / "no" / "such" / "folder") in line and "not found" in line
    assert core_outputs(out) == []


def test_csv_features_not_matching_dense_input(cli, make_model, tmp_path, out):
    model_path = make_model("dense", ".h5", train=False)
    path = tmp_path / "narrow.csv"
    path.write_text("f0,f1,label\n1,2,0\n3,4,1\n5,6,2\n")
    line = one_error_line(
        cli("prune", model_path, "--set", f"data.train={path}", "-o", out / "p.keras")
    )
    assert str(path) in line and "(2,)" in line and "(6)" in line
    assert core_outputs(out) == []


# --- the output -----------------------------------------------------------------------------


def test_output_folder_missing(cli, make_model, image_data, tmp_path):
    model_path = make_model("cnn", ".h5", train=False)
    target = tmp_path / "absent" / "p.keras"
    line = one_error_line(cli("prune", model_path, "--data", image_data, "-o", target))
    assert str(target.parent) in line and "does not exist" in line
    assert not target.parent.exists()


def test_output_parent_is_a_file(cli, make_model, image_data, tmp_path):
    model_path = make_model("cnn", ".h5", train=False)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    line = one_error_line(cli("prune", model_path, "--data", image_data, "-o", blocker / "p.keras"))
    assert str(blocker) in line
    assert blocker.read_text() == "x"


def test_output_folder_not_writable(cli, make_model, image_data):
    # Tests may run as root, for whom chmod does not stop writes; sysfs refuses new files
    # to everyone.
    folder = Path("/sys")
    if not folder.is_dir():
        pytest.skip("no /sys on this system")
    before = core_outputs(folder)
    model_path = make_model("cnn", ".h5", train=False)
    line = one_error_line(cli("prune", model_path, "--data", image_data, "-o", folder / "p.keras"))
    assert str(folder) in line and "not writable" in line
    assert core_outputs(folder) == before


def test_output_exists_needs_force(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".h5", train=False)
    existing = out / "p.keras"
    existing.write_bytes(b"precious")
    args = ("prune", model_path, "--data", image_data, "-o", existing, "--epochs", "0")

    line = one_error_line(cli(*args))
    assert str(existing) in line and "--force" in line
    assert existing.read_bytes() == b"precious"
    assert core_outputs(out) == ["p.keras"]

    # --force replaces prunecli's own kind of output only, never foreign bytes
    line = one_error_line(cli(*args, "--force"))
    assert str(existing) in line and "not a Keras archive" in line
    assert existing.read_bytes() == b"precious"

    existing.unlink()
    assert cli(*args).exit_code == 0
    forced = cli(*args, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert zipfile.is_zipfile(existing)
    assert core_outputs(out) == ["p.keras", "p.report.json", "p.report.md"]


def test_existing_report_needs_force(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".h5", train=False)
    report = out / "p.report.json"
    report.write_text("{}")
    line = one_error_line(cli("prune", model_path, "--data", image_data, "-o", out / "p.keras"))
    assert str(report) in line and "--force" in line
    assert core_outputs(out) == ["p.report.json"] and report.read_text() == "{}"


@pytest.mark.parametrize("force", [(), ("--force",)], ids=["plain", "force"])
def test_output_same_as_input_refused(cli, make_model, image_data, force):
    model_path = make_model("cnn", ".keras", train=False)
    original = model_path.read_bytes()
    folder = model_path.parent
    before = core_outputs(folder)
    relative = Path("..") / folder.name / model_path.name  # another spelling of the same file
    for target in (model_path, folder / relative):
        line = one_error_line(
            cli("prune", model_path, "--data", image_data, "-o", target, "--epochs", "0", *force)
        )
        assert "replace the input" in line
    assert model_path.read_bytes() == original
    assert core_outputs(folder) == before


def test_output_hard_link_to_input_refused(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".keras", train=False)
    link = out / "p.keras"
    try:
        link.hardlink_to(model_path)
    except OSError:
        pytest.skip("hard links not supported here")
    line = one_error_line(
        cli("prune", model_path, "--data", image_data, "-o", link, "--epochs", "0", "--force")
    )
    assert "replace the input" in line
    assert core_outputs(out) == ["p.keras"]


def test_unsupported_output_suffix(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".h5", train=False)
    line = one_error_line(cli("prune", model_path, "--data", image_data, "-o", out / "p.onnx"))
    assert "p.onnx" in line and ".keras" in line and ".h5" in line
    assert core_outputs(out) == []


def test_failed_save_leaves_nothing(cli, make_model, image_data, out, monkeypatch):
    """A failure while writing (here: the model save) removes every staged file."""
    from prunecli.formats import model_io

    model_path = make_model("cnn", ".h5", train=False)
    real_save = model_io.save
    calls = []

    def failing_save(model: Any, path: Path) -> None:
        calls.append(path)
        if path.parent == out:  # the 'before' size is measured in a temp dir: let it pass
            real_save(model, path)
            raise OSError(f"cannot save model to {path}: disk full")
        real_save(model, path)

    monkeypatch.setattr(model_io, "save", failing_save)
    result = cli("prune", model_path, "--data", image_data, "-o", out / "p.keras", "--epochs", "0")
    assert result.exit_code != 0
    assert "disk full" in result.stderr and "Traceback" not in result.stderr
    assert any(path.parent == out for path in calls)
    assert core_outputs(out) == []


# --- interrupted runs (in process; test_cli_process.py sends real signals to a child) ----------


def test_interrupt_while_saving_leaves_nothing(cli, make_model, image_data, out, monkeypatch):
    from prunecli.formats import model_io

    model_path = make_model("cnn", ".h5", train=False)
    real_save = model_io.save

    def interrupted_save(model: Any, path: Path) -> None:
        real_save(model, path)
        if path.parent == out:
            raise KeyboardInterrupt

    monkeypatch.setattr(model_io, "save", interrupted_save)
    result = cli("prune", model_path, "--data", image_data, "-o", out / "p.keras", "--epochs", "0")
    assert one_error_line(result, code=130) == "prunecli: error: interrupted; no output was written"
    assert core_outputs(out) == []


def test_interrupt_between_renames_takes_back_the_first(
    cli, make_model, image_data, out, monkeypatch
):
    model_path = make_model("cnn", ".h5", train=False)
    real_replace = os.replace
    renamed: list[Path] = []

    def replace(source: Any, target: Any) -> None:
        if Path(target).parent == out:
            if renamed:
                raise KeyboardInterrupt
            renamed.append(Path(target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    result = cli("prune", model_path, "--data", image_data, "-o", out / "p.keras", "--epochs", "0")
    one_error_line(result, code=130)
    assert renamed == [out / "p.keras"]  # one output was in place when the interrupt came
    assert core_outputs(out) == []


def test_signal_whose_interrupt_was_swallowed_still_stops_the_run(
    cli, make_model, image_data, out, monkeypatch
):
    """A SIGTERM handled inside code that discards its KeyboardInterrupt (as TF's C++ does
    with a ``__len__``) must still end the run with 130 before anything is renamed."""
    from prunecli.formats import model_io

    model_path = make_model("cnn", ".h5", train=False)
    real_save = model_io.save
    swallowed: list[bool] = []

    def save_then_swallow(model: Any, path: Path) -> None:
        real_save(model, path)
        if path.parent == out:
            try:
                signal.raise_signal(signal.SIGTERM)
            except KeyboardInterrupt:
                swallowed.append(True)

    monkeypatch.setattr(model_io, "save", save_then_swallow)
    result = cli("prune", model_path, "--data", image_data, "-o", out / "p.keras", "--epochs", "0")
    one_error_line(result, code=130)
    assert swallowed == [True]
    assert core_outputs(out) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the CLI put it back


def test_signal_during_finetune_stops_before_the_next_step(
    cli, make_model, image_data, out, monkeypatch
):
    import keras

    from prunecli.training import finetune

    model_path = make_model("cnn", ".h5", train=False)
    steps: list[int] = []
    raised_in_step: list[bool] = []

    class SendSignal(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            steps.append(batch)
            if batch == 1:  # still inside fit's loop, as a real signal would be
                try:
                    signal.raise_signal(signal.SIGTERM)
                    raised_in_step.append(False)
                except KeyboardInterrupt:
                    raised_in_step.append(True)

    real_run = finetune.run

    def run(*args: Any, callbacks: Any = (), **kwargs: Any) -> Any:
        return real_run(*args, callbacks=[SendSignal(), *callbacks], **kwargs)

    monkeypatch.setattr(finetune, "run", run)
    result = cli(
        "prune",
        model_path,
        "--data",
        image_data,
        "-o",
        out / "p.keras",
        "--epochs",
        "3",
        "--set",
        "finetune.batch_size=4",
        "--set",
        "finetune.steps_per_execution=1",  # callbacks between every two steps
    )
    one_error_line(result, code=130)
    assert raised_in_step == [False]  # deferred: only recorded inside the train loop
    assert steps == [0, 1]  # and no step ran after it
    assert core_outputs(out) == ["p.ckpt"]  # only the checkpoint written on the signal
    assert core_outputs(out / "p.ckpt") == ["checkpoint.npz"]


def test_a_signal_of_one_command_does_not_outlive_it():
    """After a command stopped on a signal, the same process goes on (a library caller,
    the next test): ``check`` outside the command raises nothing."""
    from prunecli import interrupts

    with pytest.raises(KeyboardInterrupt), interrupts.installed():
        signal.raise_signal(signal.SIGTERM)
        interrupts.check()
    interrupts.check()  # raised before: the first command's signal leaked
    assert not interrupts.requested()
