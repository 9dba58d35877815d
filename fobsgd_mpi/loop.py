"""The training loop both front doors share: the command line (train.py) and the Python API (api.py).

A `Trainer` holds one run: the parameter-server transport, the algorithm (and the fp32 warm-up
exchange), the torch optimizer and schedule, the phase timers, the HDF5 record (rank 0) and the
checkpoints. Every rank calls `step` once per iteration, after writing its gradient into the flat
gradient vector. A step is collective:
  1. the ranks agree on the round: what the workers do (a step, a buffer average, the end), whose
     gradient holds a NaN/Inf, whether Ctrl-C was pressed (then every rank leaves after the same step),
     whether a rank failed to compute its gradient (then every rank raises the JobError rank 0 reports);
  2. the algorithm exchanges the gradients; the direction is written into .grad, the optimizer
     and the schedule step, identically on every rank;
  3. the replicas are checked, the row recorded, a checkpoint written when due.

The CLI (`run`) iterates the same steps on every rank, the server with no gradient. Under the API
the server runs `serve`, which answers whatever the workers do next until they end the run.
"""
import json
import os
import shutil
import signal
import threading
import time
import zlib
from contextlib import contextmanager

import numpy as np
import torch

from . import algorithms, arrays, checkpoint, device, optim, transport
from .algorithms.options import AlgorithmOptions
from .errors import STOP_SIGNALS, Interrupted, JobError, UsageError, one_line
from .netmodel import NetworkModel

# what the workers do in a round (the server, listening, sends LISTEN)
STEP, AVERAGE_BUFFERS, END, LISTEN = 0, 1, 2, -1


def participants(cfg, step, workers):
    """The workers of this round: all, or a subset drawn from (seed, step), the same on every rank."""
    if cfg.participation >= 1:
        return workers
    k = max(1, int(round(cfg.participation * len(workers))))
    chosen = np.random.default_rng((cfg.seed, step, 0x5EED)).choice(len(workers), k, replace=False)
    return [workers[i] for i in sorted(chosen)]


class PhaseTimer:
    """Seconds per phase of a step, read with `clock` (device.clock: on a GPU it waits for the
    phase's queued work, so each phase holds its own)."""

    PHASES = ("compute", "encode", "comm", "server", "decode", "optimizer")

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.reset()

    def reset(self):
        self.seconds = dict.fromkeys(self.PHASES, 0.0)

    @contextmanager
    def __call__(self, phase):
        t0 = self.clock()
        try:
            yield
        finally:
            self.seconds[phase] += self.clock() - t0


@contextmanager
def deferred_interrupt():
    """A stop signal (Ctrl-C's SIGINT, or SIGTERM from scancel or a job's time limit; mpirun forwards
    both to every rank) only sets a flag, which the loop checks on all ranks together, so that they
    stop after the same step instead of one rank leaving the others waiting in a collective; a
    second signal interrupts at once. `flag.signum` is the signal that arrived."""
    flag = threading.Event()
    flag.signum = None

    def handler(signum, frame):
        flag.signum = signum
        flag.set()
        for s in STOP_SIGNALS:
            signal.signal(s, signal.default_int_handler)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def versions(MPI):
    import h5py
    import mpi4py

    from . import native
    return {"numpy": np.__version__, "torch": torch.__version__, "h5py": h5py.__version__,
            "mpi4py": mpi4py.__version__, "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
            "kernels": native.isa()}


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


def build_algorithm(name, ps, model, options):
    """The algorithm on the whole flat vector, or on its large tensors with fp32 for the rest (the
    small tensors' fp32 exchange goes through the classic server on rank 0: a few thousand
    coordinates have too few blocks to shard)."""
    from dataclasses import replace
    try:
        if name == "sgd" or not model.d_compressed:
            return algorithms.get("sgd")(ps, model.d, options)
        cls = algorithms.get(name)
        if model.d_compressed == model.d:
            return cls(ps, model.d, options)
        from .algorithms.split import SplitExchange
        head_tensors = int(np.searchsorted(np.cumsum(model.tensor_sizes), model.d_compressed, side="right"))
        head = cls(ps, model.d_compressed, replace(options, tensor_sizes=model.tensor_sizes[:head_tensors]))
        tail = algorithms.get("sgd")(ps, model.d - model.d_compressed, replace(options, servers="1", tensor_sizes=None))
        return SplitExchange(head, tail, model.d_compressed)
    except ValueError as exc:  # a setting every rank rejects alike
        raise UsageError(str(exc)) from None


def check_replicas(comm, params, step):
    sums = comm.allgather(zlib.crc32(arrays.host(params).tobytes()))
    if len(set(sums)) != 1:
        raise JobError(f"replicas diverged at step {step}: parameter checksums {sums}; "
                       "this algorithm must keep every rank's model bit-identical")


def run_identity(cfg, n_ranks):
    """What a checkpoint must share with the run that resumes it (see checkpoint.MAY_CHANGE_ON_RESUME)."""
    return {**json.loads(json.dumps(vars(cfg))), "n_ranks": n_ranks}


def describe_optimizer(optimizer):
    """The optimizer's class and hyperparameters (its first group), for the record."""
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    return json.dumps({"class": type(optimizer).__name__, **group}, default=str)


class Trainer:
    """One run on every rank (see the module docstring). `model` is a models.FlatModel whose torch
    parameters `optimizer` updates; `scheduler` (or None) steps after every step on every rank.
    `total` and `eval_every` (the CLI's) tell when the buffers are averaged for an evaluation;
    `extra_state` (the CLI's batch sampler: state() / load_state()) goes into the checkpoint."""

    def __init__(self, cfg, ps, model, optimizer, interrupted, scheduler=None, total=None, eval_every=None,
                 extra_state=None):
        self.cfg, self.ps, self.comm, self.model = cfg, ps, ps.comm, model
        self.optimizer, self.scheduler, self.interrupted = optimizer, scheduler, interrupted
        self.optimizer_step = optimizer.step  # the torch step itself, even once the API replaces optimizer.step
        self.total, self.eval_every, self.extra_state = total, eval_every, extra_state
        options = AlgorithmOptions.from_config(cfg, stateful_optimizer=optim.has_state(optimizer),
                                               tensor_sizes=model.tensor_sizes, device=model.device,
                                               direct_mpi=device.hands_tensors_to_mpi(cfg.cuda_aware_mpi, model.device))
        self.algo = build_algorithm(cfg.algorithm, ps, model, options)
        self.warmup = build_algorithm("sgd", ps, model, options) if cfg.warmup_steps else None
        self.active = self.algo
        for exchange in self.exchanges:
            exchange.bind(model.params)
        handshake(self.comm, cfg, self.algo)
        # running statistics (batch norm): each worker's own until averaged (average_buffers)
        self.buffers = [b for b in model.module.buffers() if b.is_floating_point()]
        self.network = NetworkModel.from_environment()
        self.timer = PhaseTimer(device.clock(model.device))
        self.done, elapsed = 0, 0.0  # done: steps 0..done-1 have run
        self.totals = {"bytes_up": 0, "bytes_down": 0, "skipped": 0}
        self.buffer_bytes = 0  # buffer averages not yet counted in a row
        self.buffers_averaged_at = None  # the value of `done` at the last buffer average
        self.train_loss = float("nan")  # the last step's mean over its workers
        self.metrics = {}  # logged on this rank since the last round
        self.last_eval = {"test_loss": float("nan"), "test_accuracy": float("nan")}
        if cfg.resume:
            elapsed = self.resume()
        self.start = time.perf_counter() - elapsed  # wall time runs on across a resume
        self.writer = None
        problem = None
        if ps.rank == 0:
            try:
                self.writer = self.open_writer()
            except OSError as exc:  # a full disk or quota: every rank ends here, none waits for rank 0
                problem = str(exc)
        problem = self.comm.bcast(problem, root=0)
        if problem:
            raise JobError(problem)

    @property
    def exchanges(self):
        return [e for e in (self.algo, self.warmup) if e is not None]

    @property
    def rank(self):
        return self.ps.rank

    def open_writer(self):
        from .results import RunWriter, git_commit
        if self.cfg.resume:
            return RunWriter.resume(self.cfg.out, self.done - 1)
        return RunWriter(self.cfg.out, {
            "algorithm": self.cfg.algorithm, "config": json.dumps(vars(self.cfg)), "seed": self.cfg.seed,
            "n_workers": self.ps.n_workers, "n_ranks": self.comm.Get_size(), "d": self.model.d,
            "git_commit": git_commit(), "versions": json.dumps(versions(self.ps.MPI)),
            "optimizer": describe_optimizer(self.optimizer),
            "network_profile": json.dumps(self.network.profile) if self.network else "unshaped",
            "device": device.name(self.model.device),
            "bits_up_declared": self.algo.up.bits_up, "bits_down_declared": self.algo.down.bits_up,
            "compressors": json.dumps({"up": self.algo.up.options(), "down": self.algo.down.options()}),
            "transport": json.dumps({"collectives": "persistent" if self.ps.persistent else "nonblocking",
                                     "polite_waits": self.ps.polite})},
            overwrite=self.cfg.overwrite)

    def active_workers(self):
        return participants(self.cfg, self.done, self.ps.workers)

    def works(self):
        """Whether this rank's gradient counts in the current round."""
        return self.ps.is_worker and self.rank in self.active_workers()

    # ---------------------------------------------------------------- the collective rounds
    def agree(self, action, gradient=False, loss=None, failure=None):
        """Collective: every rank's action, gradient health, Ctrl-C, failure, loss and logged metrics.
        Returns (the workers' action, the ranks with a NaN/Inf gradient or loss, the mean loss of this
        round's workers that gave one, else NaN). `gradient`: this rank computed one; `loss`: None if
        unknown; `failure`: why this rank could not compute its gradient (one line), or None."""
        works = gradient and self.works()
        bad = works and not (arrays.all_finite(self.model.grads) and (loss is None or np.isfinite(loss)))
        counted = works and not bad and loss is not None
        mine = np.array([action, bad, self.interrupted.is_set(), loss if counted else 0.0, counted, bool(self.metrics),
                         failure is not None])
        states = np.empty((self.comm.Get_size(), len(mine)))
        # the server waits here through the workers' backward pass
        transport.complete(self.comm.Iallgather(mine, states), self.ps.polite)
        if states[:, 2].any():  # every rank leaves here, after the same step
            raise KeyboardInterrupt
        failed = np.flatnonzero(states[:, 6]).tolist()
        if failed:
            raise JobError(self.failure_report(failed, failure))
        actions = set(states[self.ps.workers, 0].astype(int).tolist())
        if len(actions) != 1:
            raise JobError(f"the workers disagree at step {self.done} (some step, some end the run or average the "
                           "buffers): every worker must make the same calls in the same order")
        logged = np.flatnonzero(states[:, 5]).tolist()
        if logged:
            self.collect_metrics(logged)
        losses = states[:, 4].sum()
        return actions.pop(), np.flatnonzero(states[:, 1]).tolist(), states[:, 3].sum() / losses if losses else float("nan")

    def failure_report(self, ranks, failure):
        """Collective: rank 0's line on the failure of the first of `ranks` (others get it too, unsent)."""
        first = ranks[0]
        if self.rank == first != 0:
            self.comm.send(failure, dest=0)
        if self.rank == 0 and first != 0:
            failure = self.comm.recv(source=first)
        others = f" (rank(s) {ranks[1:]} failed too)" if len(ranks) > 1 else ""
        return (f"rank {first} could not compute its gradient at step {self.done}: {failure}{others}; "
                f"{self.cfg.out} holds the steps before it")

    def step(self, gradient, loss=None, compute_s=0.0, failure=None):
        """Collective: one iteration from the gradient in model.grads (`gradient` False: this rank
        computed none; `loss` None: not known). `compute_s`: the seconds it took, for the record;
        `failure`: why this rank could not compute its gradient, which ends the run on every rank."""
        _, bad_ranks, train_loss = self.agree(STEP, gradient, loss, failure)
        self.apply(bad_ranks, train_loss, compute_s)

    def serve(self):
        """The API's server rank: take part in whatever the workers do until they end the run."""
        while True:
            action, bad_ranks, train_loss = self.agree(LISTEN)
            if action == END:
                return
            if action == AVERAGE_BUFFERS:
                self.buffer_bytes += self.average_buffers()
            else:
                self.apply(bad_ranks, train_loss, 0.0)

    def request(self, action):
        """A worker's round that is not a step (AVERAGE_BUFFERS or END), which the server joins."""
        self.agree(action)
        if action == AVERAGE_BUFFERS:
            self.buffer_bytes += self.average_buffers()

    def log(self, metrics):
        """Metrics (name: number) this rank logs; rank 0 records them at the next collective round."""
        self.metrics.update({name: float(value) for name, value in metrics.items()})

    def collect_metrics(self, ranks):
        """Collective: the `ranks` that logged send their metrics to rank 0, which records them (a
        test_accuracy, with test_loss if given, is also an evaluation)."""
        for r in ranks:
            if self.rank == r != 0:
                self.comm.send(self.metrics, dest=0)
            if self.rank == 0:
                metrics = self.metrics if r == 0 else self.comm.recv(source=r)
                for name, value in metrics.items():
                    self.writer.append_metric(name, self.done - 1, r, value)
                if "test_accuracy" in metrics:
                    self.record_eval(metrics.get("test_loss", float("nan")), metrics["test_accuracy"])
        self.metrics = {}
        self.flush()

    def apply(self, bad_ranks, train_loss, compute_s):
        cfg, ps, comm, step, timer = self.cfg, self.ps, self.comm, self.done, self.timer
        if bad_ranks and cfg.on_nonfinite == "stop":
            raise JobError(f"NaN or Inf gradient at step {step} on rank(s) {bad_ranks}; lower "
                           "--lr, or pass --on-nonfinite skip to drop such steps")
        active_workers = self.active_workers()
        timer.reset()
        timer.seconds["compute"] = compute_s
        self.train_loss = train_loss
        self.active = active = self.warmup if self.warmup is not None and step < cfg.warmup_steps else self.algo
        if bad_ranks:  # --on-nonfinite skip: no update, but the schedule, evaluations and checkpoints go on
            self.totals["skipped"] += 1
        else:
            direction = active.exchange(self.model.grads, step, timer, active_workers)
            with timer("optimizer"):
                self.model.grads[:] = direction  # the parameters' .grad are views of model.grads
                self.optimizer_step()
            active.after_step(self.model.params, step)
            if self.buffers and self.eval_every and ((step + 1) % self.eval_every == 0 or step + 1 == self.total):
                self.buffer_bytes += self.average_buffers()
            seconds = np.array([timer.seconds[p] for p in timer.PHASES])
            peak = np.empty_like(seconds)
            comm.Reduce(seconds, peak, op=ps.MPI.MAX, root=0)
            if cfg.check_every and (step + 1) % cfg.check_every == 0 and active.identical_after(step):
                check_replicas(comm, self.model.params, step)
            bytes_up = active.bytes_up_worker + self.buffer_bytes
            bytes_down = active.bytes_down_worker + self.buffer_bytes
            self.buffer_bytes = 0
            self.totals["bytes_up"] += bytes_up
            self.totals["bytes_down"] += bytes_down
            if self.writer is not None:
                row = {"step": step, "wall_s": self.wall_s(), "train_loss": train_loss,
                       "participants": len(active_workers),
                       "modelled_comm_s": self.network.exchange_seconds(
                           bytes_up, bytes_down, len(active_workers), comm.Get_size(), active.servers,
                           0 in active_workers) if self.network else float("nan"),
                       "bytes_up": bytes_up, "bytes_down": bytes_down,
                       "replica_spread": getattr(active, "spread", 0.0)}
                row.update({f"{p}_s": peak[i] for i, p in enumerate(timer.PHASES) if p != "server"})
                row["server_s"] = timer.seconds["server"]
                self.writer.append("iterations", row)
        if self.scheduler is not None:
            self.scheduler.step()
        self.done = step + 1
        if cfg.checkpoint_every and self.done % cfg.checkpoint_every == 0:
            self.flush()
            self.save_checkpoint()

    def average_buffers(self):
        """Collective: every rank's float buffers (batch-norm running statistics) become the workers'
        mean, sent in fp32 through rank 0 (Reduce + Bcast); returns the bytes one worker hands to
        MPI each way."""
        if not self.buffers:
            return 0
        self.buffers_averaged_at = self.done
        flat = np.concatenate([b.detach().reshape(-1).cpu().numpy() for b in self.buffers]).astype(np.float32)
        if not self.ps.is_worker:
            flat[:] = 0
        total = np.empty_like(flat)
        self.comm.Reduce(flat, total, op=self.ps.MPI.SUM, root=0)
        self.comm.Bcast(total, root=0)
        total *= np.float32(1.0 / self.ps.n_workers)
        offset = 0
        for b in self.buffers:
            b.copy_(torch.from_numpy(total[offset : offset + b.numel()]).view_as(b))
            offset += b.numel()
        return flat.nbytes

    def buffers_stale(self):
        """Whether steps have run since the buffers were last averaged (the same on every rank)."""
        return bool(self.buffers) and self.buffers_averaged_at != self.done

    def wall_s(self):
        return time.perf_counter() - self.start

    # ---------------------------------------------------------------- records
    def evaluate(self, evaluate_fn):
        """Collective: rank 0 evaluates the model the algorithm evaluates after the last step
        (evaluate_fn() -> (loss, accuracy), run with those parameters in place) and records it."""
        params = self.model.params
        evaluated = self.active.evaluated_params(params, self.done - 1)
        if self.rank == 0:
            own = None if evaluated is params else arrays.copy(params)
            if own is not None:
                arrays.assign(params, evaluated)
            try:
                loss, accuracy = evaluate_fn()
            finally:
                if own is not None:
                    arrays.assign(params, own)
            self.record_eval(loss, accuracy)
        self.flush()

    def record_eval(self, loss, accuracy):
        """Rank 0: an evaluation after the last step."""
        self.last_eval = {"test_loss": loss, "test_accuracy": accuracy}
        self.writer.append("evals", {"step": self.done - 1, **self.last_eval,
                                     "bytes_up_total": self.totals["bytes_up"], "wall_s": self.wall_s()})

    def flush(self):
        """Collective: rank 0 writes the pending rows; if it cannot (a full disk), every rank ends here."""
        from .results import ResultsError
        problem = None
        if self.writer is not None:
            try:
                self.writer.flush()
            except ResultsError as exc:
                problem = exc.strerror
        problem = self.comm.bcast(problem, root=0)
        if problem:
            raise JobError(problem)

    def close(self, status):
        """Collective when the run completed: the algorithm's last exchange (LIEC-SGD's final model
        average), then the closing record on rank 0. `status`: complete, stopped, interrupted, failed."""
        finish = (0, 0)
        try:
            if status == "complete":
                finish = self.algo.finish(self.model.params, self.done - 1)
            finish = (finish[0] + self.buffer_bytes, finish[1] + self.buffer_bytes)  # averages after the last row
            self.buffer_bytes = 0
            self.totals["bytes_up"] += finish[0]
            self.totals["bytes_down"] += finish[1]
        finally:
            if self.writer is not None:
                self.writer.close(final_params=None if status == "failed" else arrays.host(self.model.params),
                                  status=status, steps_done=self.done, skipped_steps=self.totals["skipped"],
                                  finish_bytes_up=finish[0], finish_bytes_down=finish[1])
                self.writer = None

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self):
        """Collective: every rank's parameters, buffers, optimizer and schedule, algorithm state and
        `extra_state`, written atomically (checkpoint.save_all)."""
        saved, optimizer_meta = optim.state_arrays(self.optimizer, self.scheduler)
        saved["params"] = arrays.host(self.model.params)
        saved.update({f"buffers.{i}": b.detach().cpu().numpy() for i, b in enumerate(self.buffers)})
        for i, exchange in enumerate(self.exchanges):
            saved.update({f"algo{i}.{k}": v for k, v in exchange.state_arrays().items()})
        meta = {"step": self.done - 1, "totals": self.totals, "last_eval": self.last_eval, "wall_s": self.wall_s(),
                "optimizer": optimizer_meta, "run": run_identity(self.cfg, self.comm.Get_size())}
        if self.extra_state is not None:
            extra_meta, extra_arrays = self.extra_state.state()
            meta["extra"] = extra_meta
            saved.update({f"extra.{k}": v for k, v in extra_arrays.items()})
        checkpoint.save_all(self.comm, self.cfg.out, self.done - 1, saved, meta)

    def resume(self):
        """Load this rank's checkpoint in place; returns the wall seconds the run had taken."""
        saved, meta = checkpoint.load_all(self.comm, self.cfg.out, self.model.d)
        arrays.assign(self.model.params, saved["params"])
        for i, b in enumerate(self.buffers):
            b.copy_(torch.from_numpy(saved[f"buffers.{i}"]))
        optim.load_state(self.optimizer, self.scheduler, checkpoint.prefixed(saved, "optimizer"), meta["optimizer"])
        for i, exchange in enumerate(self.exchanges):
            exchange.load_state(checkpoint.prefixed(saved, f"algo{i}"))
        if self.extra_state is not None:
            self.extra_state.load_state(meta["extra"], checkpoint.prefixed(saved, "extra"))
        self.totals.update(meta["totals"])
        self.last_eval.update(meta["last_eval"])
        self.done = meta["step"] + 1
        return meta["wall_s"]


# ---------------------------------------------------------------- the command line's run
class Setup:
    """What the CLI trains: the FlatModel, this rank's batch sampler (None off the workers),
    `gradient()` (fills model.grads, returns the loss), `evaluate()` (rank 0: test loss, accuracy)
    and the size of the whole training set."""

    def __init__(self, model, sampler, gradient, evaluate, n_train):
        self.model, self.sampler, self.gradient, self.evaluate, self.n_train = model, sampler, gradient, evaluate, n_train


def open_workload(cfg, ps):
    """The run's model and data: every call into workload.py and models.py is here."""
    from . import models, workload
    work = workload.distribute(ps.comm, cfg, ps.workers)
    model = models.FlatModel(models.build(cfg.model, work.input_shape, work.n_outputs, cfg.width, cfg.seed),
                             cfg.min_compress_numel, device.vector_device(cfg.codec, device.use(cfg.device)))
    loss_fn = models.loss_for(work.n_classes)
    sampler = work.sampler(cfg.batch_size, seed=(cfg.seed, ps.workers.index(ps.rank))) if ps.is_worker else None
    return Setup(model, sampler, lambda: model.gradient(*sampler.next(), loss_fn),
                 lambda: work.evaluate(model.module, loss_fn), work.n_train)


def run(cfg, comm):
    """Train as the command line asks; returns the summary dict on rank 0 (None elsewhere).
    cfg.out is set on every rank."""
    with deferred_interrupt() as interrupted:  # from the start: a Ctrl-C during set-up ends at step 0
        ps = transport.ParameterServer(comm, cfg.server_also_works, cfg.mpi_collectives)
        try:
            return _run(cfg, ps, interrupted)
        finally:
            ps.close()


def _run(cfg, ps, interrupted):
    from .config import slow_ranks
    from .workload import check_slow_ranks
    rank, n = ps.rank, ps.n_workers
    workload = open_workload(cfg, ps)
    model = workload.model
    slow = slow_ranks(cfg.slow_ranks)
    check_slow_ranks(slow, ps.workers)
    samples_per_step = max(1, round(cfg.participation * n)) * cfg.batch_size
    total = cfg.steps or max(1, int(round(cfg.epochs * workload.n_train / samples_per_step)))
    optimizer = optim.build_optimizer(cfg, model.module.parameters())
    scheduler = optim.build_scheduler(cfg, optimizer, total)
    trainer = Trainer(cfg, ps, model, optimizer, interrupted, scheduler, total, cfg.eval_every, workload.sampler)
    progress = None
    if rank == 0:
        print(f"# fobsgd_mpi: {cfg.algorithm} on {cfg.dataset}/{cfg.model}, d = {model.d:,}, {n} workers, "
              f"{total} steps -> {cfg.out}", flush=True)
        print("# config " + json.dumps(vars(cfg), sort_keys=True), flush=True)
        if not cfg.quiet:
            from .progress import Progress
            progress = Progress(total, trainer.done, samples_per_step, cfg.log_every)
    last = min(total, cfg.stop_at + 1) if cfg.stop_at is not None else total
    status = "failed"
    try:
        for _ in range(trainer.done, last):
            loss, compute_s, failure = None, 0.0, None
            if workload.sampler is not None and trainer.works():
                t0 = trainer.timer.clock()
                try:
                    loss = workload.gradient()
                except Exception as exc:  # an unreadable sample, the model's own error: the ranks end together
                    failure = one_line(exc)
                if rank in slow:  # a straggler: its compute takes `factor` times as long
                    time.sleep((slow[rank] - 1) * (trainer.timer.clock() - t0))
                compute_s = trainer.timer.clock() - t0
            trainer.step(loss is not None, loss, compute_s, failure)
            done = trainer.done
            if progress is not None:
                progress.update(done, trainer.train_loss, trainer.last_eval["test_accuracy"],
                                trainer.totals["bytes_up"], trainer.totals["bytes_down"])
            if done % cfg.eval_every == 0 or done == total:
                trainer.evaluate(workload.evaluate)
            if cfg.target_accuracy is not None and done % cfg.eval_every == 0:
                reached = np.array([trainer.last_eval["test_accuracy"] >= cfg.target_accuracy])
                ps.comm.Bcast(reached, root=0)
                if reached[0]:
                    total = done
                    break
        status = "complete" if trainer.done == total else "stopped"  # stopped: a --stop-at pause
        if trainer.buffers_stale():  # the saved model's buffers are averaged, as at an evaluation
            trainer.buffer_bytes += trainer.average_buffers()
    except KeyboardInterrupt:
        status = "interrupted"
        signum = signal.Signals(interrupted.signum or signal.SIGINT)
        raise Interrupted(f"interrupted ({signum.name}) after {trainer.done} steps; {cfg.out} records it (status "
                          "interrupted); continue from the last checkpoint with --resume", signum) from None
    finally:
        trainer.close(status)
        if progress is not None:
            progress.close()
        if rank == 0 and cfg.save_model and status in ("complete", "stopped"):  # on the CPU, to load anywhere
            torch.save({k: v.cpu() for k, v in model.module.state_dict().items()}, cfg.save_model)
    if rank != 0:
        return None
    summary = {"algorithm": cfg.algorithm, "steps": trainer.done, "d": model.d, "n_workers": n,
               "final_test_loss": trainer.last_eval["test_loss"],
               "final_test_accuracy": trainer.last_eval["test_accuracy"],
               "bytes_up_per_worker": trainer.totals["bytes_up"], "bytes_down_per_worker": trainer.totals["bytes_down"],
               "wall_s": trainer.wall_s(), "out": cfg.out}
    print("# summary " + json.dumps(summary), flush=True)
    return summary


# ---------------------------------------------------------------- the results file
def claim_output(cfg, n_ranks):
    """Rank 0, before anything is written: lock cfg.out for this job (so a second job cannot clobber
    it), then check a --resume against its checkpoint, or remove an old run's checkpoints from a fresh
    start. Returns the lock; raises OSError or ValueError with the reason it cannot."""
    from . import checkpoint
    from .results import OutputLock, check_resumable
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    lock = OutputLock(cfg.out)
    try:
        if cfg.resume:
            check_resumable(cfg.out)
            meta = checkpoint.load_meta(cfg.out, 0)
            saved, current = meta.get("run", {}), run_identity(cfg, n_ranks)
            differ = checkpoint.mismatch(saved, current)
            if differ:
                raise ValueError(f"--resume: the checkpoint in {checkpoint.directory(cfg.out)} is of another "
                                 "configuration: " + ", ".join(f"{k} {saved.get(k)!r} there, {current.get(k)!r} here"
                                                               for k in differ))
            done = meta["step"] + 1
            if getattr(cfg, "steps", None) and cfg.steps <= done:
                raise ValueError(f"--resume: {cfg.out} has done {done} steps already, so --steps {cfg.steps} leaves "
                                 "none to run; raise --steps to train on")
        elif os.path.exists(checkpoint.directory(cfg.out)):
            shutil.rmtree(checkpoint.directory(cfg.out))
    except BaseException:
        lock.release()
        raise
    return lock


