"""The real peer: torch.distributed DDP (gloo ring all-reduce; NCCL with --device cuda) on the same model, data,
batch and seed.

    mpirun -n 8 python -m fobsgd_mpi.ddp --hook none --width 1000 --epochs 10
    python -m fobsgd_mpi.launch --bandwidth 100mbit -n 8 -- python -m fobsgd_mpi.ddp --hook fp16 --width 1000

Every rank is a worker (no server): rank r trains on shard r of the same shards the harness deals
its workers, any data set the harness takes (arrays, npz, image sets, factories), opened by the
harness's own code over MPI (rank 0 holds the test set; MPI carries only this set-up), with the
same SGD (momentum, weight decay, schedule), and DDP averages the gradients with gloo's
all-reduce, plain (--hook none), compressed to fp16 (--hook fp16) or by PowerSGD (--hook
powersgd, --powersgd-rank). Rank and world size come from the MPI launcher's
environment (PMI_RANK / OMPI_COMM_WORLD_RANK / SLURM_PROCID), the rendezvous address from
MASTER_ADDR (the launcher sets rank 0's address inside shaped namespaces; 127.0.0.1 otherwise).
Rank 0 evaluates and writes the same HDF5 layout as fobsgd_mpi.train, under the same lock on --out
and with the same closing status (complete; interrupted by Ctrl-C, exit 130; failed) and steps_done.
bytes_up / bytes_down are what a rank hands to the all-reduce (a ring moves about 2 (P - 1) / P of
it through each link; the launcher's interface counters give the truth), compute_s is forward +
backward + all-reduce, which DDP overlaps, so comm_s is not split out (NaN).
"""
import datetime
import json
import os
import sys
import time

import numpy as np

from . import config, device, models
from .config import FLOAT, INT, STR, Option
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, JobError, UsageError, exit_without_finalizing
from .launcher_env import LAUNCHER_ENV, rank_from_environment
from .loop import deferred_interrupt
from .results import output_problem

HOOKS = ("none", "fp16", "powersgd")


OPTIONS = (
    Option("--hook", STR, "none", "DDP communication hook on the all-reduce", choices=HOOKS),
    Option("--powersgd-rank", INT, 1, "matrix approximation rank of the PowerSGD hook", bounds=(1, 1024)),
    Option("--powersgd-start", INT, 10, "iterations of plain all-reduce before PowerSGD starts (DDP's first two "
                                        "are plain whatever this says)", bounds=(2, config.BIG)),
    *config.options_named(config.TRAIN, "--dataset", "--data-dir", "--image-size", "--image-classes",
                          "--loader-workers", "--partition", "--alpha", "--model", "--width", "--batch-size", "--lr",
                          "--optimizer", "--momentum", "--nesterov", "--beta1", "--beta2", "--weight-decay",
                          "--lr-schedule", "--lr-warmup-steps", "--epochs", "--steps", "--eval-every",
                          "--target-accuracy", batch_size={"help": "per rank"},
                          lr={"default": 0.05, "help": "learning rate"}),
    Option("--bucket-cap-mb", FLOAT, 25.0, "DDP's gradient bucket size", bounds=(0, 1e4), ends="(]"),
    *config.options_named(config.TRAIN, "--device", "--seed",
                          device={"help": "cpu (gloo), cuda (NCCL; GPU = node-local rank mod the node's GPUs) or "
                                          "cuda:N"}),
    Option("--out", STR, None, "HDF5 file", required=True),
    *config.options_named(config.TRAIN, "--overwrite", "--quiet"),
)
# d-long float32 vectors a DDP rank keeps: parameters, gradients, momentum and DDP's gradient buckets
DDP_COPIES = 4


def build_parser():
    return config.make_parser("python -m fobsgd_mpi.ddp", __doc__, OPTIONS)


def rank_and_size():
    for rank_key, size_key in LAUNCHER_ENV:
        if size_key and rank_key in os.environ and size_key in os.environ:
            return int(os.environ[rank_key]), int(os.environ[size_key])
    raise ValueError("no MPI launcher environment (PMI_RANK / OMPI_COMM_WORLD_RANK / SLURM_PROCID); start with "
                     "`mpirun -n 8 python -m fobsgd_mpi.ddp` or through fobsgd_mpi.launch")


class CommHook:
    """The hook --hook names, registered on the DDP model, and the bytes each step hands to gloo's
    all-reduce: 4 d (fp32), 2 d (fp16), or PowerSGD's P and Q factors plus the tensors it leaves
    uncompressed (its state counts their elements; 4 d on its plain all-reduce steps)."""

    def __init__(self, cfg, ddp, d):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

        self.d, self.state, self.counted = d, None, 0
        self.bytes_per_coordinate = 2 if cfg.hook == "fp16" else 4
        if cfg.hook == "fp16":
            ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        elif cfg.hook == "powersgd":
            self.state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=cfg.powersgd_rank,
                                                     start_powerSGD_iter=cfg.powersgd_start, random_seed=cfg.seed)
            ddp.register_comm_hook(self.state, powerSGD_hook.powerSGD_hook)

    def step_bytes(self):
        if self.state is None:
            return self.bytes_per_coordinate * self.d
        moved = self.state.total_numel_after_compression - self.counted
        self.counted = self.state.total_numel_after_compression
        return 4 * (moved or self.d)


def claim_output(cfg):
    """Rank 0 locks cfg.out for this job before anything touches the file, so that a second job on the
    same --out is refused; every rank learns the outcome. Returns the lock (None on other ranks);
    raises UsageError on every rank when the file is taken."""
    import torch.distributed as dist

    from .results import OutputLock
    lock, problem = None, None
    if dist.get_rank() == 0:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
            lock = OutputLock(cfg.out)
        except OSError as exc:
            problem = str(exc)
    shared = [problem]
    dist.broadcast_object_list(shared, src=0)
    if shared[0]:
        raise UsageError(shared[0])
    return lock


def open_workload(cfg, rank, world):
    """The data as fobsgd_mpi.train deals it (loop.open_workload), over MPI's COMM_WORLD with every
    rank a worker and rank 0 also holding the test set: (the workload, this rank's sampler)."""
    from . import transport, workload

    work = workload.distribute(transport.mpi().COMM_WORLD, cfg, list(range(world)))
    return work, work.sampler(cfg.batch_size, seed=(cfg.seed, rank))


def run(cfg):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from .results import RunWriter, git_commit
    from .optim import build_optimizer, build_scheduler

    rank, world = rank_and_size()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    torch.set_num_threads(1)
    dev = device.use(cfg.device)
    clock = device.clock(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    lock = None
    try:
        lock = claim_output(cfg)
        work, sampler = open_workload(cfg, rank, world)
        module = models.build(cfg.model, work.input_shape, work.n_outputs, cfg.width, cfg.seed).to(dev)
        d = sum(p.numel() for p in module.parameters())
        model = DistributedDataParallel(module, device_ids=[dev] if dev.type == "cuda" else None,
                                        bucket_cap_mb=cfg.bucket_cap_mb)
        hook = CommHook(cfg, model, d)
        sent = 0
        opt = build_optimizer(cfg, model.parameters())
        loss_fn = models.loss_for(work.n_classes)
        total = cfg.steps or max(1, int(round(cfg.epochs * work.n_train / (world * cfg.batch_size))))
        scheduler = build_scheduler(cfg, opt, total)
        writer = None
        if rank == 0:
            writer = RunWriter(cfg.out, {"algorithm": f"ddp-{cfg.hook}", "config": json.dumps(vars(cfg)),
                                         "seed": cfg.seed, "n_workers": world, "n_ranks": world, "d": d,
                                         "git_commit": git_commit(), "versions": json.dumps({"torch": torch.__version__}),
                                         "network_profile": os.environ.get("FOBSGD_NETWORK", "unshaped")},
                               overwrite=cfg.overwrite)
            print(f"# fobsgd_mpi.ddp: hook {cfg.hook} on {cfg.dataset}/{cfg.model}, d = {d:,}, {world} ranks, "
                  f"{total} steps -> {cfg.out}", flush=True)
        acc = loss = float("nan")
        start = time.perf_counter()
        done, status = 0, "failed"  # done: steps 0..done-1 have run
        try:
            with deferred_interrupt() as interrupted:
                for step in range(total):
                    t0 = clock()
                    x, y = sampler.next()
                    opt.zero_grad(set_to_none=False)
                    batch_loss = loss_fn(model(x.to(dev)), y.to(dev))
                    batch_loss.backward()
                    t1 = clock()
                    opt.step()
                    scheduler.step()
                    t2 = clock()
                    # the loss sum, and whether any rank saw Ctrl-C: all ranks then stop after this same step
                    loss_and_interrupts = torch.tensor([float(batch_loss.detach()), float(interrupted.is_set())],
                                                       device=dev)
                    dist.all_reduce(loss_and_interrupts)
                    step_bytes = hook.step_bytes()
                    sent += step_bytes
                    done = step + 1
                    if rank == 0:
                        nan = float("nan")
                        writer.append("iterations", {
                            "step": step, "wall_s": time.perf_counter() - start, "compute_s": t1 - t0,
                            "encode_s": nan, "comm_s": nan, "server_s": 0.0, "decode_s": nan, "optimizer_s": t2 - t1,
                            "bytes_up": step_bytes, "bytes_down": step_bytes,
                            "train_loss": float(loss_and_interrupts[0]) / world, "participants": world,
                            "modelled_comm_s": nan, "replica_spread": 0.0})
                        if done % cfg.eval_every == 0 or done == total:
                            loss, acc = work.evaluate(module, loss_fn)
                            writer.append("evals", {"step": step, "test_loss": loss, "test_accuracy": acc,
                                                    "bytes_up_total": sent, "wall_s": time.perf_counter() - start})
                            writer.flush()
                    if loss_and_interrupts[1]:
                        raise KeyboardInterrupt
                    if cfg.target_accuracy is not None and done % cfg.eval_every == 0:
                        reached = torch.tensor([float(rank == 0 and acc >= cfg.target_accuracy)], device=dev)
                        dist.broadcast(reached, src=0)
                        if reached.item():
                            break
            status = "complete"
        except KeyboardInterrupt:
            status = "interrupted"
        finally:
            if writer is not None:
                final_params = None if status == "failed" else np.concatenate(
                    [p.detach().reshape(-1).cpu().numpy() for p in module.parameters()])
                writer.close(final_params=final_params, status=status, steps_done=done, skipped_steps=0)
        dist.barrier()  # no rank leaves while rank 0 still evaluates and writes
        if status == "interrupted":
            raise KeyboardInterrupt(f"interrupted after {done} steps; {cfg.out} records it (status interrupted)")
        if rank == 0:
            print("# summary " + json.dumps({"algorithm": f"ddp-{cfg.hook}", "steps": done, "d": d,
                                             "n_workers": world, "final_test_loss": loss, "final_test_accuracy": acc,
                                             "wall_s": time.perf_counter() - start, "out": cfg.out}), flush=True)
    finally:
        if lock is not None:
            lock.release()
        dist.destroy_process_group()


def main(argv=None):
    try:
        cfg = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
        config.check(OPTIONS, cfg)
        config.check_memory(cfg, DDP_COPIES)
        rank_and_size()
        device.select(cfg.device)  # a GPU asked for and missing: one line, exit 2
        problem = output_problem(cfg)
        if problem:
            raise ValueError(problem)
    except ValueError as exc:
        if rank_from_environment() == 0:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        run(cfg)
    except JobError as exc:
        if rank_from_environment() == 0:
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if rank_from_environment() == 0:
            print(f"{exc or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    exit_without_finalizing(main())
