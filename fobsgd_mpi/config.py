"""One schema for the command line and the TOML config file: each option's type, range, choices,
default and help in one `Option`, checked in one place (`check`) whatever the value came from.

A number outside its range, NaN or Inf, a config-file value of the wrong TOML type, an unknown
key: each is refused with one line naming the option, what it must be and what it got, as a
`UsageError` (exit status 2). A numeric option must declare a finite range, so a new one cannot
slip through unchecked (tests/test_config.py feeds every numeric option of every table bad values).
"""
import argparse
import math
import os
import re
import tomllib
from dataclasses import dataclass, replace
from typing import Callable

import torch

from . import algorithms, device, models, workload
from .compressors.fo1bit import SERVER_SCALES, WORKER_SCALES
from .errors import EXIT_USAGE, UsageError
from .launcher_env import local_ranks
from .optim import OPTIMIZERS, SCHEDULES
from .transport import COLLECTIVES

BIG = 10**12  # an upper bound on counts of steps or elements that no run reaches
SEED_MAX = 2**32 - 1  # numpy's SeedSequence, torch.manual_seed and the native streams all take it


@dataclass(frozen=True)
class Kind:
    """A value type: `parse` turns flag text (or a TOML value of one of the `toml` types) into
    the value, raising ValueError for anything else."""

    name: str
    parse: Callable
    toml: tuple = ()
    numeric: bool = False
    show: Callable = str


def _servers(text):
    return "all" if text == "all" else str(int(text))


BOOL = Kind("true or false (a TOML boolean)", bool, (bool,))
INT = Kind("an integer", int, (int,), numeric=True)
FLOAT = Kind("a number", float, (int, float), numeric=True, show="{:g}".format)
STR = Kind("a string", str, (str,))
SERVERS = Kind('a number of ranks or "all"', _servers, (int, str))


@dataclass(frozen=True)
class Option:
    """One flag / config key. `bounds` (low, high) are finite and inclusive unless `ends` says
    "(" or ")"; `rule` checks what a range cannot, raising ValueError with the rest of a sentence
    that starts with the flag."""

    flag: str
    kind: Kind
    default: object = None
    help: str = ""
    choices: tuple = None
    bounds: tuple = None
    ends: str = "[]"
    rule: Callable = None
    required: bool = False

    def __post_init__(self):
        if not self.help:
            raise TypeError(f"option {self.flag} needs a help text")
        if self.kind.numeric and not (self.bounds and all(map(math.isfinite, self.bounds))):
            raise TypeError(f"numeric option {self.flag} needs finite bounds")

    def interval(self):
        (low, high), show = self.bounds, self.kind.show
        return f"{self.ends[0]}{show(low)}, {show(high)}{self.ends[1]}"

    def describe(self):
        """The help text with the range, for --help (argparse adds choices and the default)."""
        return self.help if self.bounds is None else f"{self.help}; in {self.interval()}"

    @property
    def dest(self):
        return self.flag.lstrip("-").replace("-", "_")

    def problem(self, value):
        """Why `value` is not acceptable for this option, or None."""
        if value is None:
            return f"{self.flag} needs a value" if self.required or self.default is not None else None
        if self.choices is not None and value not in self.choices:
            return f"{self.flag} must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        if self.bounds is not None:
            low, high = self.bounds
            above = low < value if self.ends[0] == "(" else low <= value
            below = value < high if self.ends[1] == ")" else value <= high
            if (isinstance(value, float) and not math.isfinite(value)) or not (above and below):
                return f"{self.flag} must lie in {self.interval()}, got {self.kind.show(value)}"
        if self.rule is not None:
            try:
                self.rule(value)
            except ValueError as exc:
                return f"{self.flag} {exc}"
        return None


def check(options, cfg):
    """Every option's value in `cfg` against its schema; UsageError naming the first bad one."""
    for option in options:
        problem = option.problem(getattr(cfg, option.dest))
        if problem:
            raise UsageError(problem)


class OneLineParser(argparse.ArgumentParser):
    """Bad flags become a UsageError, reported in one line with exit status 2. A value that starts
    with a minus and a digit is a value, units and all (`--latency -5ms` reaches the range check,
    as `--lr -1` does in argparse itself), not an unknown flag."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message):
        raise UsageError(f"{message} (see --help)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and every option's help ending with its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or action.default is argparse.SUPPRESS or action.required or not action.option_strings:
            return text
        return f"{text} (default: {'none' if action.default is None else '%(default)s'})".strip()


class ScriptParser(OneLineParser):
    """For a script whose main() does not catch UsageError: a bad flag prints one line and exits 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"error: {message} (see --help)\n")


def flag_type(kind, **checks):
    """An argparse `type` for a flag outside the option tables (a script's, or one taking several
    values): text as `kind`, then `checks` (Option's bounds, ends, rule) as for any option."""
    option = Option("", kind, help="a script's flag", **checks)
    parse = _flag_type(kind)

    def convert(text):
        value = parse(text)
        problem = option.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem.strip())
        return value

    return convert


def text_type(kind, **checks):
    """flag_type's checks, keeping the text as written (for a flag handed on to another command)."""
    check_text = flag_type(kind, **checks)

    def convert(text):
        check_text(text)
        return text

    return convert


def _flag_type(kind):
    def convert(text):
        try:
            return kind.parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.name}, got {text!r}") from None

    return convert


def make_parser(prog, description, options):
    p = OneLineParser(prog=prog, description=description, formatter_class=HelpFormatter)
    for o in options:
        common = dict(dest=o.dest, default=o.default, help=o.describe())
        if o.kind is BOOL:
            p.add_argument(o.flag, action=argparse.BooleanOptionalAction, **common)
        else:
            p.add_argument(o.flag, type=_flag_type(o.kind), choices=o.choices, required=o.required, **common)
    return p


def load_config_file(path, options):
    """{dest: value} from a TOML file, each key known and of its option's type, or a UsageError."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        why = "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read ({exc.strerror})"
        raise UsageError(f"config file {path} {why}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    by_dest = {o.dest: o for o in options if o.dest != "config"}
    values = {}
    for key, value in raw.items():
        dest = key.replace("-", "_")
        if dest not in by_dest:
            raise UsageError(f"config file {path}: unknown option(s) {key}")
        if dest in values:
            raise UsageError(f"config file {path}: {key} is given twice (as - and _)")
        option = by_dest[dest]
        try:
            if type(value) not in option.kind.toml:
                raise ValueError
            values[dest] = option.kind.parse(value)
        except ValueError:
            raise UsageError(f"config file {path}: {key} must be {option.kind.name}, got {value!r}") from None
        problem = option.problem(values[dest])
        if problem:
            raise UsageError(f"config file {path}: {problem}")
    return values


def slow_ranks(spec):
    """{rank: factor} from "3:2.0,5:1.5"; ValueError naming the bad entry."""
    out = {}
    for item in filter(None, spec.split(",")):
        try:
            rank, factor = item.split(":")
            rank, factor = int(rank), float(factor)
        except ValueError:
            raise ValueError(f"entry {item!r} is not rank:factor (e.g. 3:2.0)") from None
        if not (0 <= rank < 2**20 and 1 <= factor <= 1000) or rank in out:
            raise ValueError(f"entry {item!r} needs a rank >= 0 named once and a factor in [1, 1000]")
        out[rank] = factor
    return out


def _power_of_two(value):
    if value & (value - 1):
        raise ValueError(f"must be a power of two >= 64, got {value}")


def _servers_rule(value):
    if value != "all" and not 1 <= int(value) <= 2**20:
        raise ValueError(f"must be a number of ranks >= 1 or all, got {value}")


TRAIN = (
    Option("--config", STR, None, "TOML file of options (keys as the long flags, with - or _); flags override it"),
    Option("--algorithm", STR, "fo-sgd", "what compresses and exchanges the gradients",
           choices=tuple(algorithms.names())),
    Option("--dataset", STR, "mnist1d", f"training and test data, one of {workload.DATASET_FORMS} (nothing "
                                        "downloads: cifar10/100 read the python batches in --data-dir, imagefolder its "
                                        "train/ and val/ class folders; npz:PATH holds x_train, y_train, x_test, y_test; "
                                        "a factory returns (train, test) torch Datasets)",
           rule=workload.check_dataset_name),
    Option("--model", STR, "mlp", f"network trained on the data set, one of {models.MODEL_FORMS} (torchvision "
                                  "ResNets on inputs <= 64 px use the CIFAR stem: 3x3 stride-1 conv1, no max-pool; "
                                  "a factory gets (input_shape, n_classes) and returns an nn.Module)",
           rule=models.check_name),
    Option("--data-dir", STR, None, "folder of --dataset cifar10, cifar100 or imagefolder"),
    Option("--image-size", INT, 32, "side in pixels of synthetic-images, and of imagefolder images (resized and "
                                    "center-cropped)", bounds=(8, 4096)),
    Option("--image-classes", INT, 10, "classes of synthetic-images", bounds=(2, 10**6)),
    Option("--loader-workers", INT, 0, "DataLoader processes reading each worker's image batches (0: the worker "
                                       "itself)", bounds=(0, 256)),
    Option("--device", STR, "cpu", "where each rank computes: cpu, cuda (GPU = node-local rank mod the node's GPUs) "
                                   "or cuda:N", rule=device.device_rule),
    Option("--codec", STR, "auto", "native = numpy vectors and the C++ kernels (CPU only); torch = tensors on --device "
                                   "and the torch codec (the CUDA kernels on a GPU); auto = native on cpu, torch on "
                                   "cuda", choices=("auto", "native", "torch")),
    Option("--cuda-aware-mpi", STR, "auto", "with --codec torch, hand MPI the payload tensors themselves instead of "
                                            "pinned host copies: auto = on a GPU when the MPI library reports CUDA "
                                            "support; on (on the CPU: tensors through DLPack); off",
           choices=device.CUDA_AWARE_CHOICES),
    Option("--width", INT, 256, "hidden width (wide-mlp: 2048 gives d of about 12.7M)", bounds=(1, 2**20)),
    Option("--partition", STR, "iid", "how the training set is split over the workers", choices=("iid", "dirichlet")),
    Option("--alpha", FLOAT, 0.5, "Dirichlet concentration for --partition dirichlet", bounds=(1e-3, 1e6)),
    Option("--batch-size", INT, 32, "per worker", bounds=(1, 2**24)),
    Option("--lr", FLOAT, None, "learning rate; none: the algorithm's own, e.g. 0.05 for sgd, 0.08 for fo-sgd (its "
                                "default drive scales; eta workers take about 0.02)", bounds=(0, 1e4), ends="(]"),
    Option("--momentum", FLOAT, 0.9, "heavy-ball momentum of --optimizer sgd", bounds=(0, 1), ends="[)"),
    Option("--weight-decay", FLOAT, 0.0, "L2 penalty added to the direction", bounds=(0, 1e3)),
    Option("--lr-schedule", STR, "cosine", "learning rate over the run (step: x0.1 at each third)", choices=SCHEDULES),
    Option("--optimizer", STR, "sgd", "torch.optim optimizer every rank applies to the exchanged direction",
           choices=OPTIMIZERS),
    Option("--nesterov", BOOL, False, "Nesterov momentum (--optimizer sgd, --momentum above 0)"),
    Option("--beta1", FLOAT, 0.9, "Adam/AdamW first-moment decay", bounds=(0, 1), ends="[)"),
    Option("--beta2", FLOAT, 0.999, "Adam/AdamW second-moment decay", bounds=(0, 1), ends="[)"),
    Option("--lr-warmup-steps", INT, 0, "linear learning-rate warm-up over the first K steps (x (t+1)/(K+1)); "
                                        "not --warmup-steps, which exchanges fp32", bounds=(0, BIG)),
    Option("--epochs", FLOAT, 10.0, "passes over the training set (all workers together)", bounds=(0, 1e6), ends="(]"),
    Option("--steps", INT, None, "iterations; overrides --epochs", bounds=(1, BIG)),
    Option("--eval-every", INT, 50, "test-set evaluation period in steps", bounds=(1, BIG)),
    Option("--check-every", INT, 25, "cross-rank parameter checksum period (0: never)", bounds=(0, BIG)),
    Option("--block-size", INT, None, "flattening / bucket block, a power of two; none: each compressor's own "
                                      "(2^16 for the one-bit codecs and fp32 shards, 1024 for QSGD's bucket; "
                                      "refused by topk-ef)", bounds=(64, 2**30), rule=_power_of_two),
    Option("--eta", FLOAT, 1e-2, "FO-SGD clipping probability bound in lambda", bounds=(0, 1), ends="()"),
    Option("--lambda-rule", STR, "min", "FO-SGD scale: norm = ||x|| sqrt(2 ln(2m/eta)/m), max = max|y| (unbiased), "
                                        "min = the smaller", choices=("norm", "max", "min")),
    Option("--sign-ties", STR, "random", "sign of an exact zero and of a tied majority vote: random = a seeded +-1 "
                                          "shared by all ranks; positive = +1 (GRACE's x >= 0)",
           choices=("random", "positive")),
    Option("--sign-scale", STR, None, "scale of the scaled sign: one per model tensor, per whole vector or per "
                                      "block; unset: the algorithm's own (tensor for ef-sgd and doublesqueeze, block "
                                      "for them on a sharded server and for liec-sgd)",
           choices=("tensor", "vector", "block")),
    Option("--liec-period", INT, 32, "LIEC-SGD full-precision averaging period H", bounds=(1, BIG)),
    Option("--qsgd-levels", INT, 15, "QSGD quantization levels s", bounds=(1, 32767)),
    Option("--topk-ratio", FLOAT, 0.01, "fraction of coordinates top-k sends", bounds=(0, 1), ends="(]"),
    Option("--warmup-steps", INT, 0, "first K steps exchange fp32 (sgd)", bounds=(0, BIG)),
    Option("--min-compress-numel", INT, 0, "tensors with fewer elements (biases, norms) travel fp32, counted in the "
                                           "bytes", bounds=(0, BIG)),
    Option("--downlink", STR, "flat", "FO-SGD server: re-quantize the sum in the flattened domain; or decode it and "
                                      "re-flatten with a fresh rotation; or that with error feedback (the server "
                                      "keeps what the broadcast missed and adds it to the next step's; one server)",
           choices=("flat", "fresh-rotation", "feedback")),
    Option("--uplink", STR, None, "workers' error feedback: feedback = each keeps what its payload missed and adds "
                                  "it to the next gradient (MEM-SGD); plain = none; unset: the algorithm's own "
                                  "(feedback for ef-sgd, doublesqueeze and topk-ef; FO-SGD and dithered-sign take "
                                  "either, plain unset)", choices=("plain", "feedback")),
    Option("--server-scale", STR, None, "FO-SGD server's scale per block: eta = --lambda-rule's; mse = the scale "
                                        "minimizing the re-quantization's expected squared error (it clips: the "
                                        "direction shrinks about 2x); mse-shrink = that and a James-Stein gain <= 1; "
                                        "mse-debias = that and the gain m / unclipped count that undoes the shrink; "
                                        "drive = no dither, the signs and the scale ||v||^2 / ||v||_1 (DRIVE; the "
                                        "default; dithered-sign's: mse-debias from 8 workers, eta below)",
           choices=SERVER_SCALES),
    Option("--worker-scale", STR, None, "FO-SGD workers' scale per block: eta = --lambda-rule's (unbiased, fused with "
                                        "the transform); mse = the server's MSE-optimal scale on the flattened block; "
                                        "mse-debias = that and its gain (about 15x less squared error, unbiased to "
                                        "first order; dithered-sign's default); drive = no dither, the signs and the "
                                        "scale ||y||^2 / ||y||_1 (DRIVE: unbiased through the rotation, about 23x "
                                        "less; the default)",
           choices=WORKER_SCALES),
    Option("--server-also-works", BOOL, False, "rank 0 computes a gradient too"),
    Option("--mpi-collectives", STR, "auto", "the exchanges' MPI collectives: persistent = MPI-4's, made once and "
                                             "started every step; nonblocking = one Igatherv / Ibcast / Ialltoallw "
                                             "a step (MPI 3, e.g. Open MPI 4); auto = persistent where the library "
                                             "has them", choices=COLLECTIVES),
    Option("--servers", SERVERS, "1", "server ranks: 1 = the classic parameter server on rank 0; k or all = "
                                      "blocks dealt round-robin to ranks 0..k-1, exchanged with Alltoallw (every "
                                      "algorithm but qsgd and topk-ef)", rule=_servers_rule),
    Option("--participation", FLOAT, 1.0, "fraction of workers in each round (a seeded subset per step; the server "
                                          "averages those)", bounds=(0, 1), ends="(]"),
    Option("--slow-ranks", STR, "", "stragglers, e.g. 3:2.0,5:1.5 (rank:factor multiplies compute time)",
           rule=slow_ranks),
    Option("--seed", INT, 0, "seed of the model, data split, batches and random streams", bounds=(0, SEED_MAX)),
    Option("--out", STR, None, "HDF5 file; none: results/<algorithm>-<dataset>-<model>-n<N>-<time>.h5"),
    Option("--overwrite", BOOL, False, "replace an existing --out file"),
    Option("--save-model", STR, None, "write the final model's state_dict here (torch.save; loads without "
                                      "fobsgd_mpi into the same torch module)"),
    Option("--quiet", BOOL, False, "no progress bar or progress lines"),
    Option("--log-every", FLOAT, 10.0, "seconds between rank 0's progress lines when stderr is not a terminal "
                                       "(under mpirun); a terminal gets a progress bar", bounds=(0, 1e6)),
    Option("--checkpoint-every", INT, 0, "write an atomic per-rank checkpoint every N steps (0: never)",
           bounds=(0, BIG)),
    Option("--resume", BOOL, False, "continue the run in --out from its last checkpoint"),
    Option("--target-accuracy", FLOAT, None, "end the run at the first evaluation whose test accuracy reaches this "
                                             "(time-to-accuracy runs)", bounds=(0, 1), ends="(]"),
    Option("--stop-at", INT, None, "end cleanly after this step (to fit a job's time limit; continue later with "
                                   "--resume)", bounds=(0, BIG)),
    Option("--on-nonfinite", STR, "stop", "a NaN/Inf gradient on any rank stops the run, or skips that step on "
                                          "every rank", choices=("stop", "skip")),
)


def options_named(table, *flags, **changes):
    """Options of `table` by flag, for another front door; `changes` (dest=dict) alter one."""
    by_flag = {o.flag: o for o in table}
    return tuple(replace(by_flag[f], **changes.get(by_flag[f].dest, {})) for f in flags)


def build_parser():
    from . import train

    return make_parser("python -m fobsgd_mpi.train", train.__doc__, TRAIN)


def parse_config(argv):
    """Flags over the TOML file over the defaults; raises UsageError with a one-line reason."""
    parser = build_parser()
    cfg = parser.parse_args(argv)
    if cfg.config:
        parser.set_defaults(**load_config_file(cfg.config, TRAIN))
        cfg = parser.parse_args(argv)
    validate(cfg)
    if cfg.lr is None:
        cfg.lr = algorithms.get(cfg.algorithm).default_lr
    return cfg


def validate(cfg):
    """The schema, then what relates options to each other, the model's memory and the kernels."""
    check(TRAIN, cfg)
    if cfg.nesterov and not (cfg.optimizer == "sgd" and cfg.momentum > 0):
        raise UsageError("--nesterov needs --optimizer sgd and --momentum above 0")
    check_relations(cfg)
    device.vector_device(cfg.codec, torch.device(cfg.device))  # the native codec on a GPU: one line, exit 2
    device.select(cfg.device)  # a GPU asked for and missing: likewise
    check_memory(cfg, TRAIN_COPIES)
    from . import native

    problem = native.forced_isa_problem()
    if problem:
        raise UsageError(problem)


# the options of config.TRAIN the Python API takes as keywords (api.DistributedOptimizer): the
# exchange and the run's record; the user's own script chooses the model, data and optimizer
API_OPTIONS = ("algorithm", "block_size", "eta", "lambda_rule", "sign_ties", "sign_scale", "liec_period", "qsgd_levels",
               "topk_ratio", "warmup_steps", "min_compress_numel", "downlink", "uplink", "server_scale", "worker_scale",
               "server_also_works", "servers", "participation", "seed", "out", "overwrite", "check_every",
               "checkpoint_every", "resume", "on_nonfinite", "codec", "cuda_aware_mpi", "mpi_collectives")


def api_config(**options):
    """A run's config for the Python API: TRAIN's defaults with `options` (API_OPTIONS, by their
    Python names) over them, checked as the command line's are; UsageError naming a bad one."""
    unknown = sorted(set(options) - set(API_OPTIONS))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)}; the API takes {', '.join(API_OPTIONS)}")
    taken = tuple(o for o in TRAIN if o.dest in API_OPTIONS)
    cfg = argparse.Namespace(**{o.dest: o.default for o in taken})
    for name, value in options.items():
        setattr(cfg, name, str(value) if name == "servers" else value)
    check(taken, cfg)
    check_relations(cfg)
    return cfg


def check_relations(cfg):
    """What relates options to each other; UsageError with the first that does not hold. `cfg` holds
    the command line's options, or the API's (API_OPTIONS): an option it lacks is unset."""
    shardable = [n for n in algorithms.names() if algorithms.get(n).shardable]
    requantizing = [n for n in algorithms.names() if len(algorithms.get(n).downlinks) > 1]
    algorithm = algorithms.get(cfg.algorithm)
    paths = {flag: getattr(cfg, flag[2:].replace("-", "_"), None) for flag in ("--config", "--out", "--save-model")}
    empty = [flag for flag, path in paths.items() if path == ""]
    dataset, target_accuracy = getattr(cfg, "dataset", None), getattr(cfg, "target_accuracy", None)
    regression = dataset in DATASET_SHAPES and DATASET_SHAPES[dataset][1] == 1  # known before loading
    relations = [
        (not empty, f"{' and '.join(empty)} is an empty path; give a file name or leave the option out"),
        (not cfg.resume or cfg.out, "--resume needs the --out of the run to continue"),
        (not (cfg.resume and cfg.overwrite), "--resume continues --out and --overwrite replaces it; pass one of them"),
        (not cfg.out or not paths["--save-model"] or os.path.realpath(cfg.out) != os.path.realpath(paths["--save-model"]),
         f"--save-model {paths['--save-model']} is the --out file; the model would overwrite the results: choose "
         "another path"),
        (target_accuracy is None or not regression,
         f"--target-accuracy needs a classification data set; {dataset} is a regression, which has no accuracy "
         "to reach"),
        (cfg.servers == "1" or cfg.participation == 1, "--participation below 1 needs --servers 1"),
        (cfg.downlink in algorithm.downlinks,
         f"--downlink {cfg.downlink} is for {', '.join(requantizing)}, whose server re-quantizes the sum; "
         f"{cfg.algorithm} takes only flat: leave it out"),
        (cfg.uplink is None or cfg.uplink in algorithm.uplinks,
         f"--uplink {cfg.uplink} is not for {cfg.algorithm}, which takes {' or '.join(algorithm.uplinks)}: leave it "
         "out"),
        (cfg.downlink == "flat" or cfg.servers == "1",
         f"--downlink {cfg.downlink} decodes the whole sum on one server; use --servers 1"),
        (cfg.servers == "1" or cfg.algorithm in shardable,
         f"--servers {cfg.servers} splits the server by blocks, which {cfg.algorithm} cannot; use --servers 1 "
         f"(shardable: {', '.join(shardable)})"),
    ]
    for ok, message in relations:
        if not ok:
            raise UsageError(message)


# (features, outputs) of each data set, so a model's size is known before any data is made
# (tests/test_config.py checks them against data.load)
DATASET_SHAPES = {"mnist1d": (40, 10), "digits": (64, 10), "synthetic-logreg": (32, 4),
                  "synthetic-quadratic": (64, 1), "synthetic-sparse": (512, 1)}
# d-long float32 vectors a training rank keeps: parameters, gradients, momentum, and up to three an
# algorithm holds (error memories, the server's sum, the decoded direction)
TRAIN_COPIES = 6


def available_memory():
    """Bytes of memory available to new allocations (MemAvailable, or free pages without /proc)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(cfg, copies):
    """Refuse a model that does not fit the data set (models.check_model), or whose `copies` float32
    vectors on every rank of this node exceed the memory available, before anything is allocated."""
    shape, outputs = DATASET_SHAPES[cfg.dataset] if cfg.dataset in DATASET_SHAPES else workload.shape_of(cfg)
    try:
        d = models.check_model(cfg.model, shape, outputs, cfg.width)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    ranks = local_ranks()
    need, have = 4 * d * copies * ranks, available_memory()
    if need > have:
        raise UsageError(f"--model {cfg.model} --width {cfg.width} has {d:,} parameters: {copies} float32 copies on "
                         f"each of {ranks} rank(s) here need about {need / 1e9:,.1f} GB, but {have / 1e9:,.1f} GB is "
                         "available; lower --width or run fewer ranks per node")
