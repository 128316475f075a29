from pathlib import Path

import pytest
from hypothesis import given

from crystalscope.config import (
    RESOLVED_CONFIG_NAME,
    ComputeConfig,
    RunConfig,
    load_config,
    write_resolved_config,
)
from crystalscope.errors import ConfigError, CrystalscopeError, FormatError
from crystalscope.io.atomic import atomic_write
from fuzzing import FUZZ_SETTINGS, assert_only_format_errors, mutations


def test_error_message_names_file_line_and_field() -> None:
    err = FormatError("cannot parse number", path="a/b.geom", field="clen", line=12)
    assert str(err) == "a/b.geom:12: field 'clen': cannot parse number"
    assert isinstance(err, CrystalscopeError)
    assert str(CrystalscopeError("plain")) == "plain"


def test_config_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "run.yaml"
    src.write_text("beam:\n  voltage_kv: 300\ncompute:\n  n_workers: 2\n")
    cfg = load_config(src)
    assert cfg.beam.to_beam() is not None
    assert cfg.beam.to_beam().wavelength == pytest.approx(0.019687, abs=1e-6)  # type: ignore[union-attr]
    out = write_resolved_config(cfg, tmp_path / "out")
    assert out.name == RESOLVED_CONFIG_NAME
    again = load_config(out)
    assert again == cfg
    assert again.output.overwrite is False  # defaults are written out


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("beam:\n  voltge_kv: 200\n", "beam.voltge_kv", "unknown key"),
        ("compute:\n  n_workers: zero\n", "compute.n_workers", "integer"),
        ("compute:\n  scheduler: mpi\n", "compute.scheduler", "threads"),
        ("beam:\n  voltage_kv: -3\n", "beam.voltage_kv", "greater than 0"),
        ("beam:\n  voltage_kv: 200\n  energy_kev: 12\n", "beam", "only one"),
        ("typo_section: 1\n", "typo_section", "unknown key"),
    ],
)
def test_config_errors_name_key_and_file(tmp_path: Path, text: str, field: str, words: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.field == field
    assert "bad.yaml" in str(info.value)
    assert words in str(info.value)


def test_config_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("beam:\n  voltage_kv: [200\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(p)
    assert info.value.line is not None


def test_config_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_empty_config_gives_defaults(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_config(p) == RunConfig()
    assert ComputeConfig().scheduler == "threads"


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("precious")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "precious"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_refuses_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("precious")
    with pytest.raises(CrystalscopeError, match="exists"), atomic_write(target, overwrite=False):
        pass
    assert target.read_text() == "precious"
    with atomic_write(target) as fh:
        fh.write("new")
    assert target.read_text() == "new"


_CONFIG_SEED = """\
input:
  - run1/*.h5
  - run2.lst
beam:
  voltage_kv: 200
detector:
  geometry: detector.geom
  distance_mm: 1100.5
compute:
  scheduler: distributed
  address: tcp://10.0.0.1:8786
  n_workers: 4
  progress: false
output:
  directory: processed
  overwrite: true
"""


@FUZZ_SETTINGS
@given(text=mutations(_CONFIG_SEED))
def test_fuzzed_config_raises_only_config_errors(
    text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "run.yaml"
    assert_only_format_errors(load_config, text, path)
