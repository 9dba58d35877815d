"""Distributed training on a rank-0 parameter server with compressed exchanges.

    mpirun -n 4 python -m fobsgd_mpi.train                      # FO-SGD, MLP on MNIST-1D
    mpirun -n 8 python -m fobsgd_mpi.train --algorithm liec-sgd --model cnn1d --epochs 30
    mpirun -n 4 python -m fobsgd_mpi.train --config run.toml --lr 0.02   # flags override the file

Rank 0 is the server (it evaluates the model and writes results/*.h5); ranks 1..n-1 are workers
(--server-also-works makes rank 0 compute a gradient too). Every rank applies the same optimizer
step to the broadcast update, and a cross-rank checksum every --check-every steps stops the run
if replicas that must be identical are not.
"""
import argparse
import datetime
import json
import os
import sys
import time
import zlib
from contextlib import contextmanager

import numpy as np

from . import algorithms, data, models
from .config import parse_config, slow_ranks
from .errors import EXIT_USAGE, JobError, UsageError
from .launcher_env import rank_from_environment
from .netmodel import NetworkModel
from .layout import BlockLayout

def participants(cfg, step, workers):
    """The workers of this round: all, or a subset drawn from (seed, step), the same on every rank."""
    if cfg.participation >= 1:
        return workers
    k = max(1, int(round(cfg.participation * len(workers))))
    chosen = np.random.default_rng((cfg.seed, step, 0x5EED)).choice(len(workers), k, replace=False)
    return [workers[i] for i in sorted(chosen)]


class PhaseTimer:
    PHASES = ("compute", "encode", "comm", "server", "decode", "optimizer")

    def __init__(self):
        self.reset()

    def reset(self):
        self.seconds = dict.fromkeys(self.PHASES, 0.0)

    @contextmanager
    def __call__(self, phase):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0


def learning_rate(cfg, step, total):
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + np.cos(np.pi * step / total))
    if cfg.lr_schedule == "step":
        return cfg.lr * (0.1 ** (step * 3 // total))
    return cfg.lr


class Optimizer:
    """SGD with momentum and weight decay on the flat parameters, identical on every rank."""

    def __init__(self, d, cfg):
        self.momentum, self.weight_decay = np.float32(cfg.momentum), np.float32(cfg.weight_decay)
        self.buf = np.zeros(d, dtype=np.float32)

    def step(self, params, direction, lr):
        u = direction + self.weight_decay * params if self.weight_decay else direction
        self.buf *= self.momentum
        self.buf += u
        params -= np.float32(lr) * self.buf


def default_out(cfg, n):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return os.path.join("results", f"{cfg.algorithm}-{cfg.dataset}-{cfg.model}-n{n}-s{cfg.seed}-{stamp}.h5")


def versions(MPI):
    import h5py
    import mpi4py
    import torch

    from . import native
    return {"numpy": np.__version__, "torch": torch.__version__, "h5py": h5py.__version__,
            "mpi4py": mpi4py.__version__, "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
            "kernels": native.isa()}


def run(cfg, comm):
    """Train; returns the summary dict on rank 0 (None elsewhere)."""
    from . import transport

    ps = transport.ParameterServer(comm, cfg.server_also_works)
    rank, n = ps.rank, ps.n_workers
    ds, n_train = data.distribute(comm, cfg.dataset, cfg.seed, ps.workers, cfg.partition, cfg.alpha)
    n_out = ds.n_classes or ds.y_train.shape[1]
    model = models.FlatModel(models.build(cfg.model, ds.n_features, n_out, cfg.width, cfg.seed),
                             cfg.min_compress_numel)
    loss_fn = models.loss_for(ds.n_classes)
    d = model.d
    BlockLayout(d, cfg.block_size, min(256, cfg.block_size))

    sampler = None
    if ps.is_worker:
        sampler = data.BatchSampler(ds.x_train, ds.y_train, cfg.batch_size, seed=(cfg.seed, ps.workers.index(rank)))
    slow = slow_ranks(cfg.slow_ranks)
    unknown = sorted(set(slow) - set(ps.workers))
    if unknown:
        raise UsageError(f"--slow-ranks names rank(s) {unknown}, which are not workers (workers: "
                       f"{ps.workers[0]}..{ps.workers[-1]})")
    samples_per_step = max(1, round(cfg.participation * n)) * cfg.batch_size
    total = cfg.steps or max(1, int(round(cfg.epochs * n_train / samples_per_step)))

    network = NetworkModel.from_environment()
    algo = build_algorithm(cfg.algorithm, ps, model, cfg)
    warmup = build_algorithm("sgd", ps, model, cfg) if cfg.warmup_steps else None
    handshake(comm, cfg, algo)
    opt = Optimizer(d, cfg)
    timer = PhaseTimer()
    writer = None
    out = cfg.out or default_out(cfg, comm.Get_size())
    first, totals = 0, {"bytes_up": 0, "bytes_down": 0, "skipped": 0}
    last_eval = {"test_loss": float("nan"), "test_accuracy": float("nan")}
    if cfg.resume:
        first = resume(comm, out, rank, model, opt, (algo, warmup), sampler, totals, last_eval)
    if rank == 0 and cfg.resume:
        from .results import RunWriter
        writer = RunWriter.resume(out, first - 1)
    elif rank == 0:
        from .results import RunWriter, git_commit
        writer = RunWriter(out, {"algorithm": cfg.algorithm, "config": json.dumps(vars(cfg)), "seed": cfg.seed,
                                 "n_workers": n, "n_ranks": comm.Get_size(), "d": d, "git_commit": git_commit(),
                                 "versions": json.dumps(versions(ps.MPI)),
                                 "network_profile": json.dumps(network.profile) if network else "unshaped",
                                 "bits_up_declared": algo.up.bits_up, "bits_down_declared": algo.down.bits_up},
                           overwrite=cfg.overwrite)
        print(f"# fobsgd_mpi: {cfg.algorithm} on {cfg.dataset}/{cfg.model}, d = {d:,}, {n} workers, "
              f"{total} steps -> {out}", flush=True)
        print("# config " + json.dumps(vars(cfg), sort_keys=True), flush=True)
    bar = None
    if rank == 0 and not cfg.quiet and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=total, unit="it", dynamic_ncols=True)

    start = time.perf_counter()
    last = min(total, cfg.stop_at + 1) if cfg.stop_at is not None else total
    step = first - 1
    try:
        for step in range(first, last):
            timer.reset()
            loss = 0.0
            active_workers = participants(cfg, step, ps.workers)
            works = sampler is not None and rank in active_workers
            if works:
                with timer("compute"):
                    t0 = time.perf_counter()
                    loss = model.gradient(*sampler.next(), loss_fn)
                    if rank in slow:  # a straggler: its compute takes `factor` times as long
                        time.sleep((slow[rank] - 1) * (time.perf_counter() - t0))
            bad = works and not (np.isfinite(loss) and np.isfinite(model.grads).all())
            bad_ranks = [r for r, b in enumerate(comm.allgather(bad)) if b]
            if bad_ranks:
                if cfg.on_nonfinite == "stop":
                    raise JobError(f"NaN or Inf gradient at step {step} on rank(s) {bad_ranks}; lower "
                                             "--lr, or pass --on-nonfinite skip to drop such steps")
                totals["skipped"] += 1
                continue
            active = warmup if warmup is not None and step < cfg.warmup_steps else algo
            direction = active.exchange(model.grads, step, timer, active_workers)
            with timer("optimizer"):
                opt.step(model.params, direction, learning_rate(cfg, step, total))
            active.after_step(model.params, step)
            stats = np.array([timer.seconds[p] for p in timer.PHASES] + [loss if works else 0.0])
            peak = np.empty_like(stats)
            comm.Reduce(stats[:-1].copy(), peak[:-1], op=ps.MPI.MAX, root=0)
            loss_sum = comm.reduce(stats[-1], op=ps.MPI.SUM, root=0)
            if cfg.check_every and (step + 1) % cfg.check_every == 0 and active.identical_after(step):
                check_replicas(comm, model.params, step)
            if rank == 0:
                totals["bytes_up"] += active.bytes_up_worker
                totals["bytes_down"] += active.bytes_down_worker
                row = {"step": step, "wall_s": time.perf_counter() - start,
                       "train_loss": loss_sum / len(active_workers), "participants": len(active_workers),
                       "modelled_comm_s": network.exchange_seconds(active.bytes_up_worker, active.bytes_down_worker,
                                                                   len(active_workers), comm.Get_size(),
                                                                   active.servers, 0 in active_workers)
                       if network else float("nan"),
                       "bytes_up": active.bytes_up_worker, "bytes_down": active.bytes_down_worker,
                       "replica_spread": getattr(active, "spread", 0.0)}
                row.update({f"{p}_s": peak[i] for i, p in enumerate(timer.PHASES) if p != "server"})
                row["server_s"] = timer.seconds["server"]
                writer.append("iterations", row)
            evaluated = active.evaluated_params(model.params, step) if (step + 1) % cfg.eval_every == 0 or \
                step + 1 == total else None
            if rank == 0:
                if evaluated is not None:
                    tl, ta = evaluate_at(model, evaluated, ds, loss_fn)
                    last_eval = {"test_loss": tl, "test_accuracy": ta}
                    writer.append("evals", {"step": step, **last_eval, "bytes_up_total": totals["bytes_up"],
                                            "wall_s": time.perf_counter() - start})
                    writer.flush()
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_sum / len(active_workers):.3f}", acc=f"{last_eval['test_accuracy']:.3f}",
                                    MB_up=f"{totals['bytes_up'] / 1e6:.1f}")
                    bar.update(1)
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                if writer is not None:
                    writer.flush()
                save_checkpoint(comm, out, rank, step, model, opt, (algo, warmup), sampler, totals, last_eval)
            if cfg.target_accuracy is not None and (step + 1) % cfg.eval_every == 0 and \
                    comm.bcast(last_eval["test_accuracy"] >= cfg.target_accuracy, root=0):
                total = step + 1
                break
        if step + 1 == total:  # the end of the run, not a --stop-at pause
            up, down = algo.finish(model.params, step)
            totals["bytes_up"] += up
            totals["bytes_down"] += down
    finally:
        if writer is not None:
            writer.f.create_dataset("final_params", data=model.params)
            writer.close(steps_done=step + 1, skipped_steps=totals["skipped"])
        if bar is not None:
            bar.close()
        ps.close()
    if rank != 0:
        return None
    summary = {"algorithm": cfg.algorithm, "steps": step + 1, "d": d, "n_workers": n,
               "final_test_loss": last_eval["test_loss"], "final_test_accuracy": last_eval["test_accuracy"],
               "bytes_up_per_worker": totals["bytes_up"], "bytes_down_per_worker": totals["bytes_down"],
               "wall_s": time.perf_counter() - start, "out": out}
    print("# summary " + json.dumps(summary), flush=True)
    return summary


def evaluate_at(model, params, ds, loss_fn):
    """Test loss and accuracy of the model at `params` (the model's own parameters are restored)."""
    if params is model.params:
        return model.evaluate(ds.x_test, ds.y_test, loss_fn, ds.n_classes)
    own = model.params.copy()
    model.params[:] = params
    try:
        return model.evaluate(ds.x_test, ds.y_test, loss_fn, ds.n_classes)
    finally:
        model.params[:] = own


def handshake(comm, cfg, algo):
    """Every rank must run the same config, package and payload layout, or the exchange is garbage."""
    from . import __version__
    mine = json.dumps({"config": {k: v for k, v in sorted(vars(cfg).items()) if k != "quiet"},
                       "version": __version__, "wire": repr(algo.wire_specs())})
    digest = zlib.crc32(mine.encode())
    digests = comm.allgather(digest)
    odd = [r for r, h in enumerate(digests) if h != digests[0]]
    if odd:
        raise JobError(f"rank(s) {odd} disagree with rank 0 on the config, package version or payload layout; "
                           "start every rank with the same command and the same installed fobsgd_mpi")


def save_checkpoint(comm, out, rank, step, model, opt, algos, sampler, totals, last_eval):
    from . import checkpoint
    arrays = {"params": model.params, "momentum": opt.buf}
    for i, alg in enumerate(a for a in algos if a is not None):
        arrays.update({f"algo{i}.{k}": v for k, v in alg.state_arrays().items()})
    meta = {"step": step, "totals": totals, "last_eval": last_eval}
    if sampler is not None:
        sampler_meta, sampler_arrays = sampler.state()
        meta["sampler"] = sampler_meta
        arrays.update({f"sampler.{k}": v for k, v in sampler_arrays.items()})
    checkpoint.save(out, rank, arrays, meta)
    comm.Barrier()


def resume(comm, out, rank, model, opt, algos, sampler, totals, last_eval):
    """Load this rank's checkpoint in place; returns the first step to run."""
    from . import checkpoint
    arrays, meta = checkpoint.load(out, rank)
    steps = comm.allgather(meta["step"])
    if len(set(steps)) != 1:
        raise JobError(f"checkpoints of different steps {steps} in {checkpoint.directory(out)}; "
                           "a checkpoint write was interrupted - restart without --resume")
    model.params[:] = arrays["params"]
    opt.buf[:] = arrays["momentum"]
    for i, alg in enumerate(a for a in algos if a is not None):
        alg.load_state({k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(f"algo{i}.")})
    if sampler is not None:
        sampler.load_state(meta["sampler"], {k.split(".", 1)[1]: v for k, v in arrays.items()
                                             if k.startswith("sampler.")})
    totals.update(meta["totals"])
    last_eval.update(meta["last_eval"])
    return meta["step"] + 1


def build_algorithm(name, ps, model, cfg):
    """The algorithm on the whole flat vector, or on its large tensors with fp32 for the rest (the
    small tensors' fp32 exchange goes through the classic server on rank 0: a few thousand
    coordinates have too few blocks to shard)."""
    try:
        if name == "sgd" or not model.d_compressed:
            return algorithms.get("sgd")(ps, model.d, cfg)
        cls = algorithms.get(name)
        if model.d_compressed == model.d:
            return cls(ps, model.d, cfg)
        from .algorithms.split import SplitExchange
        tail_cfg = argparse.Namespace(**{**vars(cfg), "servers": "1"})
        tail = algorithms.get("sgd")(ps, model.d - model.d_compressed, tail_cfg)
        return SplitExchange(cls(ps, model.d_compressed, cfg), tail, model.d_compressed)
    except ValueError as exc:  # a setting every rank rejects alike
        raise UsageError(str(exc)) from None


def check_replicas(comm, params, step):
    sums = comm.allgather(zlib.crc32(params.tobytes()))
    if len(set(sums)) != 1:
        raise JobError(f"replicas diverged at step {step}: parameter checksums {sums}; "
                           "this algorithm must keep every rank's model bit-identical")


def output_problem(cfg):
    """Why the results file cannot be written where asked, or None."""
    if not cfg.out:
        return None
    if os.path.exists(cfg.out) and not (cfg.overwrite or cfg.resume):
        return f"{cfg.out} exists; pass --overwrite or choose another --out"
    folder = os.path.dirname(os.path.abspath(cfg.out))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        return f"cannot create the folder of --out {cfg.out} ({exc.strerror}); choose a writable path"
    if not os.access(folder, os.W_OK):
        return f"cannot write --out {cfg.out}: {folder} is not writable; choose a writable path"
    return None


def main(argv=None):
    try:
        cfg = parse_config(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        if rank_from_environment() == 0:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = output_problem(cfg)
    if problem:
        if rank_from_environment() == 0:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from .transport import mpi
    MPI = mpi()
    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        print("error: the parameter server needs at least 2 ranks (a server and a worker); "
              "start with `mpirun -n 4 python -m fobsgd_mpi.train`", file=sys.stderr)
        return EXIT_USAGE
    try:
        run(cfg, comm)
    except JobError as exc:
        if comm.Get_rank() == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except Exception as exc:  # one rank's failure ends the job with its message, never a hang
        print(f"error on rank {comm.Get_rank()}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        comm.Abort(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
