"""Numbers on the command line, checked before any work: counts (``--threads``, ``--workers``,
``--epochs`` ...) must be at least 1 and ``--max-time`` / ``--tol`` positive finite numbers, each
refused in one line when parsed (train's counts by the config check), naming the option."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from andersonn.cli import main
from andersonn.cli.options import positive_float
from andersonn.errors import ConfigError
from andersonn.training import TrainConfig

from helpers import assert_refused_when_parsed

# --- counts: at least 1 -----------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "option"), [
    (["calibrate", "RUN", "--threads", "0"], "--threads"),
    (["evaluate", "RUN", "--threads", "-2"], "--threads"),
    (["predict", "RUN", "CCO", "--threads", "0"], "--threads"),
    (["explain", "RUN", "CCO", "--threads", "0"], "--threads"),
    (["explain", "RUN", "CCO", "--steps", "0"], "--steps"),
    (["predict", "RUN", "CCO", "--workers", "0"], "--workers"),
    (["evaluate", "RUN", "--workers", "-3"], "--workers"),
    (["predict", "RUN", "CCO", "--max-iter", "0"], "--max-iter"),
    (["data", "build", "polarity", "--workers", "0"], "--workers"),
    (["demo", "--threads", "0"], "--threads"),
    (["demo", "--epochs", "0"], "--epochs"),
    (["image", "CCO", "--out", "img", "--record", "0"], "--record"),
])
def test_non_positive_counts_fail_in_one_line_before_any_work(
        argv: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused_when_parsed(argv, capsys,
                               f"error: argument {option}: must be at least 1, got {argv[-1]}")


def test_train_counts_are_refused_by_the_config_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """train's counts go through TrainConfig (as a --config file's do): one line, exit 2."""
    assert main(["train", "polarity", "--workers", "0", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "andersonn: error: workers must be >= 1 (got 0)"


@pytest.mark.parametrize("command", [["predict", "RUN", "CCO"], ["evaluate", "RUN"]])
def test_conformers_below_one_fail_when_parsed(command: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:  # before any run is opened
        main([*command, "--conformers", "0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().endswith(
        "error: argument --conformers: must be at least 1, got 0 "
        f"(`andersonn {command[0]} --help` lists the options)")


# --- positive numbers ------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "option"), [
    (["train", "polarity", "--max-time", "0"], "--max-time"),
    (["train", "polarity", "--max-time", "-5"], "--max-time"),
    (["train", "polarity", "--max-time", "nan"], "--max-time"),
    (["train", "polarity", "--tol", "0"], "--tol"),
    (["train", "polarity", "--tol", "-0.001"], "--tol"),
    (["predict", "RUN", "CCO", "--tol", "0"], "--tol"),
    (["evaluate", "RUN", "--tol", "-1"], "--tol"),
    (["bench", "speedup", "polarity", "--tol", "0"], "--tol"),
])
def test_non_positive_numbers_fail_in_one_line_when_parsed(
        argv: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused_when_parsed(
        argv, capsys, f"error: argument {option}: must be a positive number, got {argv[-1]}")


def test_a_tolerance_that_is_not_a_number_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "RUN", "CCO", "--tol", "tight"])
    assert capsys.readouterr().err.strip() == ("andersonn predict: error: argument --tol: 'tight' "
                                               "is not a number (`andersonn predict --help` "
                                               "lists the options)")


def test_positive_float_says_why_a_number_is_refused() -> None:
    for text, why in (("inf", "a finite number"), ("1e-400", "rounds to 0"),
                      ("-1", "a positive number"), ("0", "a positive number, got 0")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            positive_float(text)
    assert positive_float("1e-3") == 1e-3


def test_a_config_names_the_setting_that_is_not_positive() -> None:
    with pytest.raises(ConfigError, match=r"^tol must be positive \(got 0"):
        TrainConfig(task="polarity", tol=0.0).validate()


def test_a_file_the_system_will_not_write_is_one_line(monkeypatch, capsys) -> None:
    import errno

    import andersonn.cli.engine as engine
    from andersonn.cli import main

    def read_only(args):
        raise OSError(errno.EROFS, "Read-only file system", "/cache/datasets")

    monkeypatch.setattr(engine, "_bench_solvers", read_only)
    assert main(["bench", "solvers", "--quick"]) == 2
    assert capsys.readouterr().err == ("andersonn: error: /cache/datasets: Read-only file "
                                       "system\n")

    def defect(args):
        raise OSError("no file involved")

    monkeypatch.setattr(engine, "_bench_solvers", defect)
    with pytest.raises(OSError, match="no file involved"):  # a defect keeps its traceback
        main(["bench", "solvers", "--quick"])


@pytest.mark.parametrize("argv, message", [
    (["train", "polarity", "--tol", "-1e-3"], "--tol: must be a positive number, got -1e-3"),
    (["predict", "RUN", "CCO", "--tol", "-2.5E-4"],
     "--tol: must be a positive number, got -2.5E-4"),
    (["data", "build", "crystal-gap", "--insulator-gap", "-inf"],
     "--insulator-gap: must be a finite number, got -inf"),
])
def test_negative_numbers_in_any_notation_reach_the_options_own_check(argv, message, capsys):
    assert_refused_when_parsed(argv, capsys, message)


def test_an_unknown_dash_word_is_still_an_unknown_option(capsys):
    assert_refused_when_parsed(["train", "polarity", "--tol", "-x"],
                               capsys, "argument --tol: expected one argument")


def test_train_says_where_the_run_went_without_a_test_split(tmp_path, capsys):
    # evaluate_test off (or an empty test split): no test line, but the run is named
    dipoles = Path(__file__).parent / "fixtures" / "labelled" / "qm9_dipoles.csv"
    config = tmp_path / "c.json"
    config.write_text('{"evaluate_test": false}')
    out = tmp_path / "run"
    assert main(["train", str(dipoles), "--bins", "2.5",
                 "--epochs", "1", "--threads", "1", "--workers", "1", "--no-progress",
                 "--hidden", "8", "--config", str(config), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "best validation accuracy" in line and "not tested (evaluate_test is off)" in line
    assert line.endswith(f"→ {out}")


@pytest.mark.parametrize(("argv", "command", "extras"), [
    (["train", "polarity", "--bogus"], "andersonn train", "--bogus"),
    (["bench", "solvers", "--tol", "x"], "andersonn bench solvers", "--tol x"),
    (["data", "info", "polarity", "--zz"], "andersonn data info", "--zz")])
def test_an_unknown_option_is_one_line_naming_its_command(argv, command, extras, capsys):
    # argparse printed the top-level usage ("usage: andersonn [-h] ...") before the error
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == (f"{command}: error: unrecognized arguments: {extras} "
                   f"(`{command} --help` lists the options)\n")


@pytest.mark.parametrize(("rank", "printed"), [("0", True), ("1", False)])
def test_a_usage_mistake_is_printed_by_rank_0_only(
        rank: str, printed: bool, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # under torchrun every rank parses the same command line: one error line, not one per rank
    monkeypatch.setenv("RANK", rank)
    with pytest.raises(SystemExit) as stop:
        main(["train", "polarity", "--bogus"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert ("unrecognized arguments: --bogus" in err) is printed
    assert err.count("error:") == (1 if printed else 0)
