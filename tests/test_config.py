"""config.py: defaults, every kind of bad value and its message, paths, --set, dump."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml
from helpers import CONFIG_SECTIONS, write_config

from prunecli import config
from prunecli.config import Config
from prunecli.core.granularity import Pattern, parse_granularity
from prunecli.errors import ConfigError


def load_text(tmp_path: Path, text: str, overrides: dict | None = None, name: str = "cfg.yaml"):
    return config.load(write_config(tmp_path / name, text), overrides)


def config_error(overrides: dict, path: Path | None = None) -> str:
    """The one-line ``ConfigError`` of ``config.load(path, overrides)``."""
    with pytest.raises(ConfigError) as info:
        config.load(path, overrides)
    return str(info.value)


def error_of(tmp_path: Path, text: str, overrides: dict | None = None) -> str:
    """The ``ConfigError`` of a config file holding ``text`` (plus ``overrides``)."""
    return config_error(overrides or {}, write_config(tmp_path / "cfg.yaml", text))


# --- defaults ---------------------------------------------------------------------------


def test_no_file_means_every_key_takes_its_default():
    cfg = config.load(None)
    assert cfg == Config()
    assert cfg.version == 1
    assert cfg.seed == 0
    assert cfg.prune.method == "magnitude"
    assert cfg.prune.granularity == "unstructured"
    assert cfg.prune.scope == "layer"
    assert 0 <= cfg.prune.sparsity < 1
    assert cfg.prune.min_layer_density == 0.02
    assert cfg.prune.layers.include == [".*"]
    assert cfg.prune.layers.exclude == []
    assert cfg.prune.layers.overrides == {}
    assert cfg.prune.schedule.type == "one_shot"
    assert cfg.prune.schedule.frequency == 100
    assert cfg.finetune.optimizer == "adam"
    assert cfg.data.train is None
    assert cfg.data.validation is None
    assert cfg.data.label_column == "label"
    assert cfg.output.path is None
    assert cfg.output.report is None


def test_empty_file_is_all_defaults(tmp_path):
    assert load_text(tmp_path, "") == Config()
    assert load_text(tmp_path, "# only a comment\n") == Config()


def test_values_from_the_file_replace_defaults_and_others_stay(tmp_path):
    cfg = load_text(
        tmp_path,
        "seed: 7\nprune:\n  sparsity: 0.8\n  scope: global\n"
        "  schedule:\n    type: polynomial\n    end_epoch: 1.5\n"
        "finetune:\n  epochs: 3\n  optimizer: sgd\n  momentum: 0.9\n"
        "data:\n  image_size: [28, 28]\n",
    )
    assert cfg.seed == 7
    assert cfg.prune.sparsity == 0.8
    assert cfg.prune.scope == "global"
    assert cfg.prune.schedule.type == "polynomial"
    assert cfg.prune.schedule.end_epoch == 1.5
    assert cfg.prune.schedule.power == Config().prune.schedule.power
    assert cfg.finetune.epochs == 3
    assert cfg.finetune.momentum == 0.9
    assert cfg.data.image_size == (28, 28)
    assert cfg.prune.min_layer_density == Config().prune.min_layer_density


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(Exception, match="frozen"):
        cfg.prune.sparsity = 0.9  # type: ignore[misc]


# --- unknown keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prune:\n  sparsty: 0.9\n", "unknown key prune.sparsty (did you mean prune.sparsity?)"),
        ("prnue:\n  sparsity: 0.9\n", "unknown key prnue (did you mean prune?)"),
        (
            "prune:\n  schedule:\n    frequncy: 3\n",
            "unknown key prune.schedule.frequncy (did you mean prune.schedule.frequency?)",
        ),
        (
            "prune:\n  layers:\n    exlude: [out]\n",
            "unknown key prune.layers.exlude (did you mean prune.layers.exclude?)",
        ),
        (
            "finetune:\n  learning-rate: 0.1\n",
            "unknown key finetune.learning-rate (did you mean finetune.learning_rate?)",
        ),
    ],
)
def test_unknown_key_names_dotted_path_and_suggests_closest(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert message == f"{tmp_path / 'cfg.yaml'}: {expected}"


def test_unknown_key_without_a_close_match_lists_the_valid_keys(tmp_path):
    message = error_of(tmp_path, "output:\n  zzzzzz: 1\n")
    assert "unknown key output.zzzzzz" in message
    assert "path" in message and "report" in message


def test_unknown_key_from_an_override_is_reported_too():
    with pytest.raises(
        ConfigError,
        match=r"unknown key prune\.sparsty \(did you mean "
        r"prune\.sparsity\?\)",
    ):
        config.load(None, {"prune.sparsty": 0.9})


# --- wrong types and out-of-range values -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("prune:\n  sparsity: high\n", "prune.sparsity", "'high'"),
        ("finetune:\n  epochs: 2.5\n", "finetune.epochs", "2.5"),
        ("finetune:\n  batch_size: [32]\n", "finetune.batch_size", "[32]"),
        ("prune:\n  layers:\n    include: conv\n", "prune.layers.include", "'conv'"),
        ("prune:\n  scope: everywhere\n", "prune.scope", "'everywhere'"),
        ("finetune:\n  optimizer: adamw\n", "finetune.optimizer", "'adamw'"),
    ],
)
def test_wrong_type_names_key_and_value(tmp_path, text, key, value):
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'cfg.yaml'}: {key}: ")
    assert message.endswith(f"got {value}")
    assert "\n" not in message


def test_wrong_literal_lists_what_is_allowed(tmp_path):
    message = error_of(tmp_path, "prune:\n  scope: everywhere\n")
    assert "'layer'" in message and "'global'" in message


def test_a_section_that_is_not_a_mapping(tmp_path):
    message = error_of(tmp_path, "prune: 5\n")
    assert message.startswith(f"{tmp_path / 'cfg.yaml'}: prune: ")
    assert "dictionary" in message and message.endswith("got 5")


@pytest.mark.parametrize(
    ("text", "key", "value", "bound"),
    [
        ("prune:\n  sparsity: 1.5\n", "prune.sparsity", "1.5", "less than 1"),
        ("prune:\n  sparsity: 1\n", "prune.sparsity", "1", "less than 1"),
        ("prune:\n  sparsity: -0.1\n", "prune.sparsity", "-0.1", "greater than or equal to 0"),
        ("prune:\n  min_layer_density: 0\n", "prune.min_layer_density", "0", "greater than 0"),
        ("finetune:\n  epochs: -1\n", "finetune.epochs", "-1", "greater than or equal to 0"),
        ("finetune:\n  batch_size: 0\n", "finetune.batch_size", "0", "greater than or equal to 1"),
        ("finetune:\n  learning_rate: 0\n", "finetune.learning_rate", "0", "greater than 0"),
        ("data:\n  validation_split: 1.0\n", "data.validation_split", "1.0", "less than 1"),
        (
            "prune:\n  schedule:\n    frequency: 0\n",
            "prune.schedule.frequency",
            "0",
            "greater than or equal to 1",
        ),
    ],
)
def test_out_of_range_names_key_value_and_allowed_range(tmp_path, text, key, value, bound):
    message = error_of(tmp_path, text)
    assert message == f"{tmp_path / 'cfg.yaml'}: {key}: input should be {bound}, got {value}"


def test_override_sparsity_out_of_range_names_the_pattern_and_value(tmp_path):
    message = error_of(tmp_path, "prune:\n  layers:\n    overrides: {'conv.*': 1.2}\n")
    assert "prune.layers.overrides" in message
    assert "'conv.*'" in message and "1.2" in message and ">= 0 and < 1" in message


def test_version_other_than_1_is_refused(tmp_path):
    message = error_of(tmp_path, "version: 2\n")
    assert message.endswith("version: input should be 1, got 2")


def test_custom_validator_message_echoes_the_value_once(tmp_path):
    message = error_of(tmp_path, "data:\n  image_size: [0, 4]\n")
    assert "data.image_size" in message
    assert message.count("got [0, 4]") == 1


# --- YAML syntax and shape ---------------------------------------------------------------


def test_yaml_syntax_error_gives_file_line_and_column(tmp_path):
    # line 3, column 16 is the second ':' of "  sparsity: 0.5: 3"
    message = error_of(tmp_path, "version: 1\nprune:\n  sparsity: 0.5: 3\n")
    assert message.startswith(f"{tmp_path / 'cfg.yaml'}:3:16: YAML syntax error")
    assert "mapping values are not allowed here" in message
    assert "\n" not in message


def test_yaml_syntax_error_in_a_flow_list(tmp_path):
    message = error_of(tmp_path, "seed: 1\nprune:\n  layers:\n    include: [conv, 'x\n")
    assert message.startswith(f"{tmp_path / 'cfg.yaml'}:")
    line = int(message.split(":")[1])
    assert line >= 4
    assert "YAML syntax error" in message


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("3\n", "int")]
)
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    message = error_of(tmp_path, text)
    expected = f"the top level must be a mapping of keys, got {kind}"
    assert message == f"{tmp_path / 'cfg.yaml'}: {expected}"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found") as info:
        config.load(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)


# --- schedule consistency and regexes ----------------------------------------------------


@pytest.mark.parametrize(("start", "end"), [(1, 1), (1.5, 0.5)])
def test_polynomial_end_epoch_must_follow_start_epoch(tmp_path, start, end):
    message = error_of(
        tmp_path,
        f"finetune:\n  epochs: 5\nprune:\n  schedule:\n    type: polynomial\n"
        f"    start_epoch: {start}\n    end_epoch: {end}\n",
    )
    assert "prune.schedule" in message
    assert f"end_epoch ({float(end)}) must be greater than start_epoch ({float(start)})" in message


def test_end_epoch_equal_start_epoch_is_fine_for_other_schedules(tmp_path):
    cfg = load_text(
        tmp_path, "prune:\n  schedule:\n    type: constant\n    start_epoch: 1\n    end_epoch: 1\n"
    )
    assert cfg.prune.schedule.type == "constant"


def test_polynomial_end_epoch_after_the_last_epoch_is_an_error(tmp_path):
    message = error_of(
        tmp_path,
        "finetune:\n  epochs: 2\nprune:\n  schedule:\n    type: polynomial\n    end_epoch: 3\n",
    )
    assert "prune.schedule.end_epoch (3.0) must be <= finetune.epochs (2)" in message


def test_polynomial_end_epoch_equal_to_epochs_and_fractional_is_fine(tmp_path):
    cfg = load_text(
        tmp_path,
        "finetune:\n  epochs: 2\nprune:\n  schedule:\n    type: polynomial\n"
        "    start_epoch: 0.25\n    end_epoch: 2\n",
    )
    assert (cfg.prune.schedule.start_epoch, cfg.prune.schedule.end_epoch) == (0.25, 2.0)


def test_epochs_zero_skips_the_schedule_window_checks(tmp_path):
    cfg = load_text(
        tmp_path,
        "finetune:\n  epochs: 0\nprune:\n  schedule:\n    type: polynomial\n    end_epoch: 3\n",
    )
    assert cfg.finetune.epochs == 0


def test_schedule_that_never_starts_is_an_error(tmp_path):
    message = error_of(
        tmp_path,
        "finetune:\n  epochs: 2\nprune:\n  schedule:\n    type: constant\n    start_epoch: 2\n",
    )
    assert "prune.schedule.start_epoch (2.0) must be less than finetune.epochs (2)" in message


@pytest.mark.parametrize("key", ["include", "exclude"])
def test_bad_regex_names_key_and_pattern(tmp_path, key):
    message = error_of(tmp_path, f"prune:\n  layers:\n    {key}: ['conv(']\n")
    assert f"prune.layers.{key}" in message
    assert "'conv(' is not a valid regular expression" in message


def test_bad_regex_in_overrides(tmp_path):
    message = error_of(tmp_path, "prune:\n  layers:\n    overrides: {'[a-': 0.5}\n")
    assert "prune.layers.overrides" in message
    assert "'[a-' is not a valid regular expression" in message


# --- paths -------------------------------------------------------------------------------


def config_away_from_cwd(tmp_path: Path, monkeypatch, text: str) -> Path:
    """``tmp_path/configs/cfg.yaml`` holding ``text``, run from ``tmp_path/work``."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return write_config(tmp_path / "configs" / "cfg.yaml", text)


def test_relative_paths_in_a_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    path = config_away_from_cwd(tmp_path, monkeypatch, (
        "data:\n  train: data/train\n  validation: ../val\n"
        "output:\n  path: out/pruned.keras\n  report: r.json\n"
    ))  # fmt: skip
    folder = path.parent
    cfg = config.load(path)
    assert cfg.data.train == folder / "data" / "train"
    assert cfg.data.validation == tmp_path / "val"
    assert cfg.output.path == folder / "out" / "pruned.keras"
    assert cfg.output.report == folder / "r.json"


def test_relative_config_path_is_taken_from_cwd_then_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "cfg.yaml").write_text("data:\n  train: train\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cfg = config.load(Path("configs/cfg.yaml"))
    assert cfg.data.train == folder / "train"


def test_absolute_paths_are_kept(tmp_path):
    target = tmp_path / "abs" / "train"
    cfg = load_text(tmp_path, f"data:\n  train: {target}\n")
    assert cfg.data.train == target


def test_override_paths_are_relative_to_cwd(tmp_path, monkeypatch):
    text = "data:\n  train: in_file/train\noutput:\n  path: a.keras\n"
    path = config_away_from_cwd(tmp_path, monkeypatch, text)
    folder, cwd = path.parent, tmp_path / "work"
    cfg = config.load(path, {"data.train": "cli/train", "output.report": "r.json"})
    assert cfg.data.train == cwd / "cli" / "train"
    assert cfg.output.report == cwd / "r.json"
    assert cfg.output.path == folder / "a.keras"  # untouched by overrides: from the file


def test_override_paths_without_file_are_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None, {"data.train": "d", "output.path": "o.h5"})
    assert cfg.data.train == tmp_path / "d"
    assert cfg.output.path == tmp_path / "o.h5"


def test_overrides_win_over_the_file(tmp_path):
    cfg = load_text(
        tmp_path,
        "seed: 1\nprune:\n  sparsity: 0.5\n  scope: global\n",
        {"prune.sparsity": 0.9, "seed": 3, "prune.layers.exclude": ["out"]},
    )
    assert cfg.prune.sparsity == 0.9
    assert cfg.seed == 3
    assert cfg.prune.scope == "global"  # not overridden: kept from the file
    assert cfg.prune.layers.exclude == ["out"]


def test_override_bad_value_is_validated(tmp_path):
    message = error_of(tmp_path, "seed: 1\n", {"prune.sparsity": 1.5})
    assert "prune.sparsity: input should be less than 1, got 1.5" in message


def test_override_into_a_non_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="seed is not a section"):
        load_text(tmp_path, "seed: 1\n", {"seed.value": 3})


# --- parse_set ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("prune.sparsity=0.9", ("prune.sparsity", 0.9)),
        ("finetune.epochs=3", ("finetune.epochs", 3)),
        ("prune.scope=global", ("prune.scope", "global")),
        ("prune.layers.include=[conv, 'hid.*']", ("prune.layers.include", ["conv", "hid.*"])),
        ("prune.layers.overrides={out: 0.3}", ("prune.layers.overrides", {"out": 0.3})),
        ("finetune.learning_rate=1.0e-3", ("finetune.learning_rate", 0.001)),
        ("data.image_size=[28, 28]", ("data.image_size", [28, 28])),
        ("data.train=data/train", ("data.train", "data/train")),
        ("data.label_column='7'", ("data.label_column", "7")),
        ("output.path=a=b.keras", ("output.path", "a=b.keras")),
        (" seed =5", ("seed", 5)),
        ("data.validation=", ("data.validation", None)),
    ],
)
def test_parse_set_parses_the_value_as_yaml(assignment, expected):
    key, value = config.parse_set(assignment)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize("assignment", ["prune.sparsity", "=0.9", "  =1"])
def test_parse_set_without_key_or_equals_is_an_error(assignment):
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE") as info:
        config.parse_set(assignment)
    assert repr(assignment) in str(info.value)


def test_parse_set_with_invalid_yaml_names_the_assignment():
    with pytest.raises(
        ConfigError,
        match=r"--set 'prune.layers.include=\[conv,': value is not "
        r"valid YAML",
    ):
        config.parse_set("prune.layers.include=[conv,")


def test_parse_set_invalid_yaml_message_is_one_line():
    with pytest.raises(ConfigError) as info:
        config.parse_set("prune.layers.include=[conv,")
    assert "\n" not in str(info.value)


# --- dump --------------------------------------------------------------------------------


def test_dump_prints_every_key():
    dumped = yaml.safe_load(config.dump(Config()))
    assert set(dumped) == CONFIG_SECTIONS
    assert set(dumped["prune"]["schedule"]) == {
        "type",
        "start_epoch",
        "end_epoch",
        "initial_sparsity",
        "power",
        "frequency",
        "steps",
    }
    assert dumped["data"]["train"] is None


def test_dump_round_trips_through_load(tmp_path):
    original = load_text(
        tmp_path,
        "seed: 11\nprune:\n  sparsity: 0.85\n  scope: layer\n  min_layer_density: 0.05\n"
        "  layers:\n    include: ['base/.*', out]\n    exclude: ['.*bn']\n"
        "    overrides: {'base/conv': 0.3}\n"
        "  schedule:\n    type: polynomial\n    start_epoch: 0.5\n    end_epoch: 2.5\n"
        "    power: 2\n    frequency: 7\n"
        "finetune:\n  epochs: 3\n  learning_rate: 1.0e-4\n  optimizer: sgd\n  momentum: 0.9\n"
        "data:\n  train: data/train\n  image_size: [28, 20]\n  color_mode: rgb\n"
        "  rescale: 0.5\n"
        "output:\n  path: out/p.h5\n",
        name="first.yaml",
    )
    dumped = tmp_path / "elsewhere" / "dumped.yaml"
    dumped.parent.mkdir()
    dumped.write_text(config.dump(original), encoding="utf-8")
    again = config.load(dumped)
    assert again == original
    assert again.data.train == tmp_path / "data" / "train"  # absolute in the dump
    assert config.dump(again) == config.dump(original)


def test_section_defaults_are_the_sections_own_defaults():
    # a section left out is validated from {} by Config's own validator
    defaults = config.Config()
    assert defaults.prune == config.Prune() and defaults.output == config.Output()
    assert defaults.prune.layers == config.LayerSelection()
    assert defaults.output.tflite == config.TFLite()
    assert defaults.prune is not config.Config().prune  # each config has its own


def test_load_leaves_the_pydantic_plugin_switch_as_it_found_it(tmp_path, monkeypatch):
    path = tmp_path / "cfg.yaml"
    path.write_text("prune:\n  sparsity: 0.7\n", encoding="utf-8")
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    assert config.load(path).prune.sparsity == 0.7
    assert "PYDANTIC_DISABLE_PLUGINS" not in os.environ
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "someplugin")
    assert config.load(path).prune.sparsity == 0.7
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "someplugin"


def test_loading_config_does_not_import_tensorflow(tmp_path):
    import subprocess

    path = tmp_path / "cfg.yaml"
    path.write_text("prune:\n  sparsity: 0.7\n", encoding="utf-8")
    code = (
        "import sys; from pathlib import Path; from prunecli import config; "
        f"c = config.load(Path({str(path)!r})); config.dump(c); "
        "assert c.prune.sparsity == 0.7; "
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
        "print(','.join(bad) or 'clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "clean"


# --- the README's config reference -------------------------------------------------------


def readme_defaults() -> dict[str, str]:
    """``{dotted key: default cell}`` from the README's config reference table."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) >= 2 and cells[0].startswith("`") and cells[0].endswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def leaves(node: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and key != "overrides":
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_readme_config_reference_lists_every_key_with_its_real_default():
    documented = readme_defaults()
    actual = leaves(Config().model_dump(mode="json"))
    assert set(actual) <= set(documented), set(actual) - set(documented)
    for key, value in actual.items():
        cell = documented[key]
        if value is None:
            continue  # documented in words: "none", "model input", "1/255", "beside the input"
        assert cell.startswith("`") and cell.endswith("`"), (key, cell)
        assert yaml.safe_load(cell.strip("`")) == value, (key, cell, value)
    assert documented["data.train"] == "none"


# --- granularity and method checks (issue 6) -------------------------------------------


def test_nm_with_a_disagreeing_sparsity_names_both_keys():
    message = config_error({"prune.granularity": "2:4", "prune.sparsity": 0.8})
    assert "prune.sparsity (0.8)" in message
    assert "prune.granularity '2:4'" in message
    assert "0.5" in message


def test_nm_without_sparsity_sets_it():
    assert config.load(None, {"prune.granularity": "2:4"}).prune.sparsity == 0.5
    assert config.load(None, {"prune.granularity": "1:4"}).prune.sparsity == 0.75
    # an explicit sparsity that agrees is fine
    assert config.load(None, {"prune.granularity": "2:4", "prune.sparsity": 0.5}).prune


def test_nm_with_global_scope_is_refused():
    message = config_error({"prune.granularity": "2:4", "prune.scope": "global"})
    assert "prune.scope global" in message and "prune.granularity '2:4'" in message


@pytest.mark.parametrize("schedule", ["one_shot", "constant"])
def test_movement_needs_a_gradual_schedule(schedule):
    message = config_error({"prune.method": "movement", "prune.schedule.type": schedule})
    assert "prune.schedule.type" in message
    assert repr(schedule) in message


def test_movement_with_its_default_schedule_is_refused():
    assert "prune.schedule.type" in config_error({"prune.method": "movement"})


def test_movement_needs_fine_tuning():
    message = config_error(
        {"prune.method": "movement", "prune.schedule.type": "iterative", "finetune.epochs": 0}
    )
    assert "finetune.epochs must be > 0" in message


@pytest.mark.parametrize("kind", ["polynomial", "iterative"])
def test_movement_with_a_gradual_schedule_is_valid(kind):
    overrides = {"prune.method": "movement", "prune.schedule.type": kind}
    assert config.load(None, overrides).prune.method == "movement"


def test_unquoted_nm_in_yaml_gives_the_quoting_hint(tmp_path):
    path = write_config(tmp_path / "cfg.yaml", "prune:\n  granularity: 2:4\n")
    message = config_error({}, path)
    assert message.startswith(f"{path}: prune.granularity: ")
    assert 'write N:M in quotes, e.g. "2:4"' in message
    assert "124" in message


def test_quoted_nm_in_yaml_is_fine(tmp_path):
    path = write_config(tmp_path / "cfg.yaml", "prune:\n  granularity: '2:4'\n")
    assert config.load(path).prune.granularity == "2:4"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"block": [0, 4]}, "both sides must be from 1 to 65536, got [0, 4]"),
        ({"block": [1]}, "prune.granularity: {block: [rows, cols]}"),
        ({"block": [1, 4], "size": 2}, "prune.granularity: {block: [rows, cols]}"),
        ("4:2", 'must be unstructured, channel, "N:M" with 0 < N < M'),
        ("0:4", "got '0:4'"),
        ("structured", "got 'structured'"),
    ],
    ids=["zero-side", "one-side", "extra-key", "n-above-m", "n-zero", "unknown-word"],
)
def test_bad_granularity_is_refused(value, fragment):
    message = config_error({"prune.granularity": value})
    assert message.startswith("prune.granularity: ")
    assert fragment in message


def test_block_granularity_round_trips():
    cfg = config.load(None, {"prune.granularity": {"block": [4, 1]}, "prune.sparsity": 0.7})
    assert cfg.prune.granularity == config.Block(block=(4, 1))
    assert parse_granularity(cfg.prune.granularity) == Pattern("block", block=(4, 1))
    assert "block:\n    - 4\n    - 1" in config.dump(cfg)


def test_overrides_with_global_scope_are_refused():
    message = config_error({"prune.scope": "global", "prune.layers.overrides": {"dense.*": 0.3}})
    assert "prune.layers.overrides" in message and "prune.scope layer" in message


def test_score_batches_and_iterative_steps_are_checked():
    assert "prune.score_batches" in config_error({"prune.score_batches": 0})
    assert "prune.schedule.steps" in config_error({"prune.schedule.steps": 0})
    cfg = config.load(None, {"prune.method": "taylor"})
    assert cfg.prune.score_batches == 16


def test_distill_settings_are_checked():
    cfg = config.load(None, {"finetune.distill": {}})
    assert cfg.finetune.distill == config.Distill(alpha=0.5, temperature=4.0)
    assert config.load(None, {}).finetune.distill is None
    assert "finetune.distill.alpha" in config_error({"finetune.distill": {"alpha": 1.5}})
    assert "finetune.distill.temperature" in config_error({"finetune.distill": {"temperature": 0}})
