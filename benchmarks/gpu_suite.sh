#!/bin/bash
# The GPU checks and benchmarks in one command on one GPU node (each step time-limited: 9 minutes
# at most in all, about 4 expected), from the repository root after `make install`:
#
#     benchmarks/gpu_suite.sh [--peer-wheels DIR] [--dry-run]
#
# 1. the CUDA tests (extension built and imported, GPU kernels and torch codec against the numpy
#    twin, payload staging); 2. benchmarks/fwht.py and benchmarks/codec.py with --device cuda,
#    against fast-hadamard-transform and hadamard-transform where installed (--peer-wheels DIR
#    pip-installs the wheels in DIR first, without dependencies, as the GPU node has no network.
#    hadamard-transform 0.2.0 is a pure-python wheel on PyPI. fast-hadamard-transform 1.1.0 on PyPI
#    is an sdist whose setup.py fetches a prebuilt wheel from GitHub and otherwise compiles CUDA,
#    but it lacks csrc/ (measured: "csrc/fast_hadamard_transform.cpp missing"), so build its wheel
#    ahead from a clone of github.com/Dao-AILab/fast-hadamard-transform with `pip wheel --no-deps
#    --no-build-isolation .`, or take the release wheel matching torch and CUDA); 3. short training
#    runs on GPUs: the parameter-server loop (fobsgd_mpi.train --device cuda) and the DDP peer over
#    NCCL; 4. synthetic_throughput.py on GPU workers: ResNet-18 images/s of FO-SGD, fp32 sgd and
#    DDP over NCCL (unshaped links); 5. bandwidth_sweep.py at 3, 5, 9 and 17 ranks (unshaped
#    links). Records go to results/reference/gpu-<device>/ with each step's output; a step that
#    fails is reported and the rest still run; the exit status is the number of failed steps.
#
# --dry-run runs every step at toy sizes on the CPU (--device cpu) into a temporary folder: it
# checks the script and the benchmarks' device code paths on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
MPIRUN=${MPIRUN:-$(dirname "$PYTHON")/mpirun}
DRY=0
WHEELS=
while [ $# -gt 0 ]; do
    case "$1" in
    --dry-run) DRY=1 ;;
    --peer-wheels) WHEELS=$2; shift ;;
    *) echo "error: unknown argument $1 (use --dry-run, --peer-wheels DIR)" >&2; exit 2 ;;
    esac
    shift
done
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# the DDP rendezvous on a free port (a fixed one collides with any other job on the node)
MASTER_PORT=$("$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
export MASTER_PORT

if [ $DRY = 1 ]; then
    DEV=cpu OUT=$(mktemp -d /tmp/gpu_suite.XXXXXX)
    FWHT_ARGS="--min-log 10 --max-log 11 --elements 14 --repeats 2"
    CODEC_ARGS="--sizes 20000 --repeats 1"
    STEPS=3 RANKS="3" WIDTH=64 NET=mlp IMAGE=8
    SLOW=4  # a small shared CPU: four times each step's GPU time limit
else
    if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "error: no CUDA GPU visible to $PYTHON (torch.cuda.is_available() is false); use --dry-run" >&2
        exit 2
    fi
    DEV=cuda
    SLUG=$("$PYTHON" -c "import torch; from fobsgd_mpi import device; print(device.slug(torch.device('cuda', 0)))")
    OUT=results/reference/gpu-$SLUG
    FWHT_ARGS="--min-log 10 --max-log 15 --elements 24 --repeats 20"
    CODEC_ARGS="--sizes 1000000 25000000 --repeats 10"
    STEPS=100 RANKS="3 5 9 17" WIDTH=580 NET=torchvision:resnet18 IMAGE=32
    SLOW=1
fi
mkdir -p "$OUT"
FAILED=0
# step NAME SECONDS COMMAND...: runs it under a time limit, output to $OUT/NAME.txt and the screen
step() {
    local name=$1 limit=$2
    shift 2
    echo "+ [$name] $*" | tee "$OUT/$name.txt"
    local t0=$SECONDS
    timeout $((limit * SLOW)) "$@" 2>&1 | tee -a "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "# [$name] exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/$name.txt"
    [ "$rc" = 0 ] || FAILED=$((FAILED + 1))
}

if [ -n "$WHEELS" ]; then
    step peers 120 "$PYTHON" -m pip install -q --no-deps --no-index "$WHEELS"/*.whl
fi
"$PYTHON" -c "import torch; from fobsgd_mpi import device, native
d = device.select('$DEV'); print('# device:', device.name(d), '| torch', torch.__version__, 'CUDA', torch.version.cuda,
      '| CUDA kernels:', 'built' if native.cuda_extension() else 'not built',
      '| CUDA-aware MPI:', device.mpi_cuda_support())
for peer in ('fast_hadamard_transform', 'hadamard_transform'):
    try: __import__(peer); print('# peer', peer, 'installed')
    except ImportError: print('# peer', peer, 'missing')" | tee "$OUT/environment.txt"

step tests 135 "$PYTHON" -m pytest -q -ra tests/test_cuda_compile.py tests/test_device.py tests/test_torch_codec.py \
    tests/test_codec_paths_mpi.py -k "gpu or extension or compiles or device or payload or clock"
step fwht 60 "$PYTHON" benchmarks/fwht.py --device $DEV $FWHT_ARGS --out "$OUT/fwht.h5"
step codec 75 "$PYTHON" benchmarks/codec.py --device $DEV $CODEC_ARGS --out "$OUT/codec.h5"
step train 60 "$MPIRUN" -n 3 "$PYTHON" -m fobsgd_mpi.train --device $DEV --codec torch --algorithm fo-sgd --steps $STEPS \
    --eval-every 50 --out "$OUT/train.h5" --overwrite --quiet
step ddp 60 "$MPIRUN" -n 2 "$PYTHON" -m fobsgd_mpi.ddp --device $DEV --steps $STEPS --eval-every 50 \
    --out "$OUT/ddp.h5" --overwrite --quiet
step throughput 60 "$PYTHON" benchmarks/synthetic_throughput.py --device $DEV --models $NET --image-size $IMAGE \
    --algorithms fo-sgd sgd ddp-none --bandwidths none --workers 2 --steps 12 --out "$OUT/synthetic_throughput.h5"
step sweep 90 "$PYTHON" benchmarks/bandwidth_sweep.py --algorithms fo-sgd sgd --bandwidths none \
    --widths $WIDTH --ranks $RANKS --servers 1 --steps 5 --out "$OUT/bandwidth_sweep.h5"
echo "# gpu_suite: $FAILED step(s) failed; records in $OUT"
exit $FAILED
