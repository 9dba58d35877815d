"""The examples in the docstrings and in README.md run and print what they say."""
import doctest
import pathlib
import re

import pytest

import fobsgd_mpi.compressors
import fobsgd_mpi.native

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
