"""The option schema (fobsgd_mpi.config): every numeric option of every front door refuses values
out of range, NaN and Inf; every config-file key is type-checked; --help shows every default; a
model too large for memory is refused before it is built. Parametrized over the schema tables,
so an option added later is tested without a new test."""
import math
import re
import subprocess
import sys

import pytest

from fobsgd_mpi import config, data, ddp, launch, models, native
from fobsgd_mpi.config import BOOL, FLOAT, INT, SERVERS, STR
from fobsgd_mpi.errors import JobError, UsageError
from fobsgd_mpi.jobs import ROOT, job_env, mpirun

TABLES = {"train": config.TRAIN, "ddp": ddp.OPTIONS, "launch": launch.OPTIONS}
PARSERS = {"train": config.build_parser, "ddp": ddp.build_parser,
           "launch": launch.build_parser}
NUMERIC = [(name, o) for name, table in TABLES.items() for o in table if o.kind.numeric]
FILE_KEYS = [o for o in config.TRAIN if o.dest != "config"]
# TOML literals of the wrong type for each kind (a new kind must add its own here)
WRONG_TOML = {BOOL: ['"false"', "1", "0"], INT: ["1e23", '"3"', "true", "2.0", "[1]"],
              FLOAT: ['"0.1"', "true", "[1.0]", "{a = 1}"], STR: ["1", "false", '["a"]'],
              SERVERS: ["true", "1.5", "[2]"]}


def bad_values(option):
    """Just outside each bound, far outside, NaN and +-Inf."""
    low, high = option.bounds
    return [low if option.ends[0] == "(" else low - 1, high if option.ends[1] == ")" else high + max(1, abs(high)),
            -10 * high - 10, math.nan, math.inf, -math.inf]


def as_text(option, value):
    return option.kind.show(value) if math.isfinite(value) else str(value)


@pytest.mark.parametrize("table, option", NUMERIC, ids=[f"{t}{o.flag}" for t, o in NUMERIC])
def test_every_numeric_option_refuses_out_of_range_nan_and_inf(table, option):
    parser = PARSERS[table]()
    required = {"ddp": ["--out", "x.h5"], "launch": ["-n", "2"]}.get(table, [])  # a repeated flag: the last counts
    for value in bad_values(option):
        problem = option.problem(value)
        assert problem and problem.startswith(option.flag) and "must lie in" in problem, (value, problem)
        with pytest.raises(UsageError, match=option.flag):  # the same through the command line
            config.check(TABLES[table], parser.parse_args([*required, f"{option.flag}={as_text(option, value)}"]))
    config.check(TABLES[table], parser.parse_args(required))  # the defaults pass


@pytest.mark.parametrize("option", FILE_KEYS, ids=[o.flag for o in FILE_KEYS])
def test_every_config_key_is_type_checked(option, tmp_path):
    path = tmp_path / "run.toml"
    for literal in WRONG_TOML[option.kind]:
        path.write_text(f"{option.dest} = {literal}\n")
        with pytest.raises(UsageError) as err:
            config.parse_config(["--config", str(path)])
        message = str(err.value)
        assert str(path) in message and option.dest in message and option.kind.name in message, message
        assert "\n" not in message


@pytest.mark.parametrize("option", [o for o in FILE_KEYS if o.kind.numeric], ids=lambda o: o.flag)
def test_config_file_values_are_range_checked_naming_the_file(option, tmp_path):
    path = tmp_path / "run.toml"
    for value in bad_values(option):
        literal = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
        path.write_text(f"{option.dest} = {literal}\n")
        with pytest.raises(UsageError) as err:  # NaN and Inf for an integer key: the wrong TOML type
            config.parse_config(["--config", str(path)])
        assert str(err.value).startswith(f"config file {path}: "), str(err.value)
        assert f"{option.flag} must lie in" in str(err.value) or f"{option.dest} must be an integer" in str(err.value)


def test_config_file_problems_are_one_line_usage_errors(tmp_path):
    cases = {"overwrite = 'false'": "overwrite must be true or false", "steps = 1e23": "steps must be an integer",
             "[section]\nlr = 1": "unknown option(s) section", "config = 'other.toml'": "unknown option(s) config",
             "batch-size = 3\nbatch_size = 4": "given twice", "lr = [0.1]": "lr must be a number, got [0.1]"}
    for text, message in cases.items():
        (tmp_path / "c.toml").write_text(text + "\n")
        with pytest.raises(UsageError, match=re.escape(message)):
            config.parse_config(["--config", str(tmp_path / "c.toml")])
    with pytest.raises(UsageError, match="cannot be read"):
        config.parse_config(["--config", str(tmp_path)])  # a directory


def test_config_file_types_that_fit_and_flags_over_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('servers = 2\nlr = 1\noverwrite = true\nsteps = 7\nalgorithm = "sgd"\n')
    cfg = config.parse_config(["--config", str(path)])
    assert (cfg.servers, cfg.lr, cfg.overwrite, cfg.steps) == ("2", 1.0, True, 7) and type(cfg.lr) is float
    cfg = config.parse_config(["--config", str(path), "--no-overwrite", "--servers", "all", "--lr", "0.5"])
    assert (cfg.servers, cfg.lr, cfg.overwrite) == ("all", 0.5, False)


def test_options_need_finite_bounds_and_help():
    with pytest.raises(TypeError, match="finite bounds"):
        config.Option("--new", FLOAT, 1.0, "a new number", bounds=(0, math.inf))
    with pytest.raises(TypeError, match="help"):
        config.Option("--new", STR, "x")


@pytest.mark.parametrize("front", PARSERS)
def test_help_shows_every_default_and_range(front):
    text = " ".join(PARSERS[front]().format_help().split())
    for option in TABLES[front]:
        if not option.required:
            shown = "none" if option.default is None else str(option.default)
            assert f"(default: {shown})" in text, option.flag
        if option.bounds:
            assert f"in {option.interval()}" in text, option.flag


def test_parameter_count_and_data_set_shapes_match_the_real_ones(monkeypatch):
    """The real generators, asked for fewer rows: the shapes do not depend on the row count (the
    full MNIST-1D and the 5000-row least-squares fits took ~35 s of this test)."""
    import functools

    import mnist1d.data

    full_args = mnist1d.data.get_dataset_args

    def few_mnist1d_rows():
        args = full_args()
        args.num_samples = 100
        return args

    monkeypatch.setattr(mnist1d.data, "get_dataset_args", few_mnist1d_rows)
    monkeypatch.setattr(data, "quadratic_problem", functools.partial(data.quadratic_problem, n=100))
    for name, (features, outputs) in config.DATASET_SHAPES.items():
        ds = data.load(name)
        assert (ds.n_features, ds.n_classes or ds.y_train.shape[1]) == (features, outputs), name
    for model in models.MODELS:
        real = models.FlatModel(models.build(model, 64, 10, 48)).d
        assert models.check_model(model, 64, 10, 48) == real, model


def test_a_model_too_large_for_memory_is_refused_before_it_is_built():
    with pytest.raises(UsageError, match=r"--model wide-mlp --width 1048576 has [0-9,]+ parameters.*GB.*available"):
        config.parse_config(["--model", "wide-mlp", "--width", str(2**20)])


def test_unknown_forced_instruction_set_is_refused(monkeypatch):
    monkeypatch.setenv("FOBSGD_ISA", "sse9")
    assert "FOBSGD_ISA=sse9" in native.forced_isa_problem()
    with pytest.raises(UsageError, match="FOBSGD_ISA=sse9"):
        config.parse_config([])
    for name in native.supported_isas() + [""]:
        monkeypatch.setenv("FOBSGD_ISA", name)
        assert native.forced_isa_problem() is None


def test_usage_error_is_a_job_error_with_exit_code_2():
    assert issubclass(UsageError, JobError) and issubclass(UsageError, ValueError)
    assert (JobError("x").exit_code, UsageError("x").exit_code) == (1, 2)


def test_slow_ranks_entries():
    assert config.slow_ranks("3:2.0,5:1.5") == {3: 2.0, 5: 1.5}
    for bad in ("2:inf", "2:nan", "2:0.5", "-1:2", "x", "2:3:4", "2:1e400", "1:2,1:3"):
        with pytest.raises(ValueError, match="entry"):
            config.slow_ranks(bad)


@pytest.mark.parametrize("front, args", [("train", ["--lr", "inf"]), ("train", ["--seed", "-1"]),
                                          ("ddp", ["--out", "x.h5", "--bucket-cap-mb", "0"])])
def test_usage_errors_exit_2_in_one_line_from_rank_0_only(front, args):
    for rank, lines in (("0", 1), ("1", 0)):
        done = subprocess.run([sys.executable, "-m", f"fobsgd_mpi.{front}", *args], capture_output=True, text=True,
                              timeout=300, cwd=ROOT, env=dict(job_env(), PMI_RANK=rank, PMI_SIZE="2"))
        assert done.returncode == 2
        assert len(done.stderr.splitlines()) == lines, done.stderr
        assert done.stderr.startswith("error: " if lines else ""), done.stderr


@pytest.mark.mpi
@pytest.mark.parametrize("args, message", [(["--servers", "5"], "--servers must be 1..3"),
                                           (["--slow-ranks", "0:2"], "--slow-ranks names rank(s) [0]")])
def test_settings_only_the_job_can_judge_are_usage_errors(args, message, tmp_path):
    done = mpirun(3, "fobsgd_mpi.train", "--quiet", "--dataset", "digits", "--steps", "2", "--out",
                  tmp_path / "x.h5", *args, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [next(l for l in done.stderr.splitlines() if message in l)]
    assert not (tmp_path / "x.h5").exists()


CHOICE_KEYS = [o for o in FILE_KEYS if getattr(o, "choices", None)]


@pytest.mark.parametrize("option", CHOICE_KEYS, ids=[o.flag for o in CHOICE_KEYS])
def test_every_choice_option_refuses_a_value_outside_its_choices(option, tmp_path):
    """--sign-scale, --server-scale and the other named choices: a config file and the command line alike."""
    path = tmp_path / "run.toml"
    path.write_text(f'{option.dest} = "not-a-choice"\n')
    with pytest.raises(UsageError, match=f"{option.flag} must be one of"):
        config.parse_config(["--config", str(path)])
    with pytest.raises(UsageError, match=f"argument {option.flag}: invalid choice: .not-a-choice."):
        config.parse_config([option.flag, "not-a-choice"])


@pytest.mark.parametrize("args, message", [
    (["--algorithm", "sgd", "--downlink", "feedback"], "--downlink feedback is for dithered-sign, fo-sgd"),
    (["--downlink", "fresh-rotation", "--servers", "all"], "decodes the whole sum on one server; use --servers 1"),
    (["--algorithm", "sgd", "--uplink", "feedback"], "--uplink feedback is not for sgd, which takes plain"),
    (["--algorithm", "ef-sgd", "--uplink", "plain"], "--uplink plain is not for ef-sgd, which takes feedback")])
def test_a_link_the_algorithm_or_the_servers_cannot_take_is_refused(args, message):
    with pytest.raises(UsageError, match=message):
        config.parse_config(args)
    config.parse_config(["--downlink", "feedback", "--uplink", "feedback"])
    config.parse_config(["--algorithm", "topk-ef", "--uplink", "feedback"])
