#!/bin/bash
# Remakes every committed reference result in results/reference/ from the current commit: one
# benchmark command per HDF5 file (its PNGs beside it), each file recording the commit in its
# git_commit attribute. README's figures come from these files. Needs root (shaped links) and
# several hours on a 2-core machine. `make reference` calls it; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=results/reference
if [ "${1:-}" != "--force" ] && ! git diff --quiet HEAD; then
    echo "error: uncommitted changes; commit first so git_commit names the code (or pass --force)" >&2
    exit 2
fi
run() { echo "+ $*" >&2; "$PYTHON" "$@"; }

# Throughput against link speed, d = 1,032,404, 9 ranks (-throughput.png, -speedup.png)
run benchmarks/bandwidth_sweep.py --algorithms fo-sgd sgd signsgd-mv liec-sgd \
    --bandwidths 10mbit 100mbit 1gbit 10gbit none --widths 580 --ranks 9 --servers 1 all --steps 5 \
    --out $OUT/bandwidth_sweep.h5
# Time per iteration against n at 100 Mbit (-scaling.png)
run benchmarks/bandwidth_sweep.py --algorithms fo-sgd sgd --bandwidths 100mbit --widths 580 \
    --ranks 3 5 9 17 --servers 1 all --steps 5 --out $OUT/bandwidth_sweep_ranks.h5
# d = 25,171,904, 9 ranks
run benchmarks/bandwidth_sweep.py --algorithms fo-sgd sgd --bandwidths 100mbit 1gbit --widths 2890 \
    --ranks 9 --servers 1 all --steps 3 --out $OUT/bandwidth_sweep_25m.h5
# The exchange alone against n, d = 2^20, at each link speed (sgd left out at 10 Mbit: hours)
run benchmarks/exchange_scaling.py --algorithms fo-sgd signsgd-mv sgd --ranks 2 4 8 16 --reps 10 \
    --bandwidth 100mbit --out $OUT/exchange_scaling.h5
run benchmarks/exchange_scaling.py --algorithms fo-sgd signsgd-mv --ranks 2 4 8 16 --reps 10 \
    --bandwidth 10mbit --out $OUT/exchange_scaling_10mbit.h5
run benchmarks/exchange_scaling.py --algorithms fo-sgd signsgd-mv sgd --ranks 2 4 8 16 --reps 10 \
    --bandwidth 1gbit --out $OUT/exchange_scaling_1gbit.h5
run benchmarks/exchange_scaling.py --algorithms fo-sgd signsgd-mv sgd --ranks 2 4 8 16 --reps 10 \
    --bandwidth 10gbit --out $OUT/exchange_scaling_10gbit.h5
# Accuracy against bytes on equal terms: learning rates tuned on held-out training rows, 3 seeds,
# iid and Dirichlet(0.1) shards, 8 workers, a file per model (-accuracy-bytes.png, the learning
# curves). The runs stay in results/convergence-runs: after an interruption it goes on from there.
run benchmarks/convergence.py --models mlp --workdir results/convergence-runs --out $OUT/convergence-mlp.h5
run benchmarks/convergence.py --models cnn1d --workdir results/convergence-runs --out $OUT/convergence-cnn1d.h5
# FO-SGD with DRIVE scales named explicitly (the default since 2026-12-03; the files above were made
# with mse-debias, the default before), the same protocol
run benchmarks/convergence.py --models mlp --algorithms fo-sgd --workdir results/convergence-runs \
    --train-flags="--worker-scale drive --server-scale drive" --out $OUT/convergence-mlp-drive.h5
run benchmarks/convergence.py --models cnn1d --algorithms fo-sgd --workdir results/convergence-runs \
    --train-flags="--worker-scale drive --server-scale drive" --out $OUT/convergence-cnn1d-drive.h5
# FO-SGD with error feedback on the downlink (--downlink feedback), the same protocol
run benchmarks/convergence.py --models mlp --algorithms fo-sgd --workdir results/convergence-runs \
    --train-flags="--downlink feedback" --out $OUT/convergence-mlp-feedback.h5
run benchmarks/convergence.py --models cnn1d --algorithms fo-sgd --workdir results/convergence-runs \
    --train-flags="--downlink feedback" --out $OUT/convergence-cnn1d-feedback.h5
# One machine, one comparison (issue 13): sgd and FO-SGD with --downlink feedback over 6 seeds on
# the mlp; LIEC-SGD beside sgd, then with H = 8 and with a scale per 1024 (why it misses)
run benchmarks/convergence.py --models mlp --algorithms sgd --seeds 6 --workdir results/convergence-runs \
    --out $OUT/convergence-mlp-sgd-6seeds.h5
run benchmarks/convergence.py --models mlp --algorithms fo-sgd --seeds 6 --workdir results/convergence-runs \
    --train-flags="--downlink feedback" --out $OUT/convergence-mlp-feedback-6seeds.h5
# FO-SGD with error feedback both ways: the mlp over 6 seeds (against the 6 of sgd above), cnn1d over 3
run benchmarks/convergence.py --models mlp --algorithms fo-sgd --seeds 6 --workdir results/convergence-runs \
    --train-flags="--uplink feedback --downlink feedback" --out $OUT/convergence-mlp-feedback-both.h5
run benchmarks/convergence.py --models cnn1d --algorithms fo-sgd --workdir results/convergence-runs \
    --train-flags="--uplink feedback --downlink feedback" --out $OUT/convergence-cnn1d-feedback-both.h5
run benchmarks/convergence.py --models mlp --algorithms sgd liec-sgd --workdir results/convergence-runs \
    --out $OUT/convergence-mlp-liec.h5
run benchmarks/convergence.py --models mlp --algorithms liec-sgd --workdir results/convergence-runs \
    --train-flags="--liec-period 8" --out $OUT/convergence-mlp-liec-h8.h5
run benchmarks/convergence.py --models mlp --algorithms liec-sgd --workdir results/convergence-runs \
    --train-flags="--block-size 1024" --out $OUT/convergence-mlp-liec-block1024.h5
# Time to 0.5 test accuracy against torch DDP, 8 ranks, 100 Mbit and 1 Gbit, at the tuned learning
# rates (-<link>-accuracy.png)
run benchmarks/time_to_accuracy.py --tuned $OUT/convergence-mlp.h5 --out $OUT/time_to_accuracy.h5
# Images/s of ResNet-18 on 32x32 synthetic images, 4 workers, unshaped and 100 Mbit (-throughput.png)
run benchmarks/synthetic_throughput.py --models torchvision:resnet18 --algorithms fo-sgd sgd ddp-none \
    --bandwidths none 100mbit --workers 4 --image-size 32 --batch-size 32 --steps 12 --out $OUT/synthetic_throughput.h5
