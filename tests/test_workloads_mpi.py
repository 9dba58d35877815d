"""The user's own models and data end to end under mpirun: a torchvision model on a generated image
folder, a batch that no worker's shard can fill refused before training, an unreadable image."""
import re

import h5py
import pytest
import torch

from fobsgd_mpi import models
from tests.data_files import write_image_folder
from tests.mpi_helpers import mpirun, train


@pytest.mark.mpi
def test_torchvision_resnet18_trains_on_an_image_folder_and_saves_the_model(tmp_path):
    folder = write_image_folder(tmp_path / "images", classes=("cat", "dog"), per_class=6, size=10)
    saved = tmp_path / "m.pt"
    _, summary = train(3, tmp_path, "--model", "torchvision:resnet18", "--dataset", "imagefolder", "--data-dir", folder,
                       "--image-size", 8, "--batch-size", 4, "--steps", 3, "--save-model", saved,
                       timeout=600)  # three ranks importing torchvision: 124 s on a busy machine
    assert summary["steps"] == 3 and 0 <= summary["final_test_accuracy"] <= 1
    module = models.build("torchvision:resnet18", (3, 8, 8), 2)
    assert module.conv1.kernel_size == (3, 3)  # the CIFAR stem for small inputs
    state = torch.load(saved)
    assert not torch.equal(state["bn1.running_var"], torch.ones(64))  # the workers' batch-norm statistics
    module.load_state_dict(state)
    assert module.eval()(torch.zeros(1, 3, 8, 8)).shape == (1, 2)


@pytest.mark.mpi
def test_a_batch_larger_than_a_workers_shard_is_refused_in_one_line(tmp_path):
    done = mpirun(3, "fobsgd_mpi.train", "--quiet", "--dataset", "synthetic-logreg", "--batch-size", "3000", "--steps", "2",
                  "--out", tmp_path / "x.h5", timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "error: --batch-size 3000 exceeds the 2500 training samples of worker rank 1 (2 workers share 5000); "
        "lower --batch-size or use fewer workers"]


@pytest.mark.mpi
@pytest.mark.parametrize("loader_workers", [0, 1])
def test_an_unreadable_image_ends_every_rank_in_one_line_and_keeps_the_steps_before(loader_workers, tmp_path):
    folder = write_image_folder(tmp_path / "images", classes=("cat", "dog"), per_class=6, size=10)
    (folder / "train" / "cat" / "3.png").write_bytes(b"not a png")
    out = tmp_path / "x.h5"
    done = mpirun(3, "fobsgd_mpi.train", "--quiet", "--model", "mlp", "--width", 16, "--dataset", "imagefolder",
                  "--data-dir", folder, "--image-size", 8, "--batch-size", 2, "--steps", 20, "--out", out,
                  "--loader-workers", loader_workers, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    failure = re.fullmatch(r"error: rank [12] could not compute its gradient at step (\d+): ValueError: cannot read the "
                           rf"image {folder}/train/cat/3.png \(cannot identify image file .*\); remove or replace it; "
                           rf"{out} holds the steps before it\n", done.stderr)
    assert failure, done.stderr[-2000:]
    with h5py.File(out) as f:
        assert f.attrs["status"] == "failed"
        assert list(f["iterations/step"][:]) == list(range(int(failure.group(1))))
