"""The examples in the docstrings and in README.md run and print what they say, and every
committed reference result has one command in benchmarks/make_reference.sh that parses."""
import doctest
import pathlib
import re
import shlex

import pytest

import fobsgd_mpi.compressors
import fobsgd_mpi.native

from .test_plots import benchmark

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", [fobsgd_mpi.native, fobsgd_mpi.compressors])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert "1.0008" in capsys.readouterr().out  # the bits per coordinate the README promises


def reference_commands():
    """(script, argv) of each `run benchmarks/X.py ...` line of benchmarks/make_reference.sh."""
    text = (ROOT / "benchmarks" / "make_reference.sh").read_text().replace("\\\n", " ")
    return [(m[1], shlex.split(m[2].replace("$OUT", "results/reference")))
            for m in re.finditer(r"^run (benchmarks/\w+\.py) (.*)$", text, re.M)]


def test_every_reference_file_has_one_command_that_parses():
    made = []
    for script, argv in reference_commands():
        made.append(benchmark(pathlib.Path(script).stem).parser().parse_args(argv).out)
    assert sorted(made) == sorted(str(p.relative_to(ROOT)) for p in (ROOT / "results" / "reference").glob("*.h5"))


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "results" / "README.md"]
PATHLIKE = re.compile(r"`((?:\.\./|[\w.-]+/)[\w./-]*\.(?:py|sh|md|h5|png|toml|sbatch|pbs|txt|h|in))`")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_only_files_in_the_repository(doc):
    """Links resolve from the page, `code paths` from the repository root (but outputs a run
    makes under results/, outside results/reference/); none leaves the repository."""
    text = doc.read_text()
    links = [(doc.parent / m).resolve() for m in re.findall(r"\]\(([^)#]+)\)", text) if "://" not in m]
    paths = [(ROOT / m).resolve() for m in PATHLIKE.findall(text)
             if not m.startswith("results/") or m.startswith("results/reference/")]
    for path in links + paths:
        assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name} names {path}, not in the repository"
