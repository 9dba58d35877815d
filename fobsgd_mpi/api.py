"""The Python API: a plain torch training script becomes an fobsgd_mpi job with a few lines.

    import fobsgd_mpi as fo

    fo.init()                                          # MPI up; rank 0 serves, the others work
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = fo.DistributedOptimizer(opt, model, algorithm="fo-sgd", out="run.h5")
    if fo.is_server():
        fo.serve()                                     # aggregates until the workers are done
    else:
        for x, y in loader:                            # the user's own loop, unchanged
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()                                 # compress, exchange, apply
            fo.log(train_loss=loss.item())
    fo.shutdown()

`opt.step()` copies the gradients into one flat vector, exchanges it through the server rank(s)
with the chosen algorithm (the same loop, loop.Trainer, the command line runs), writes the
aggregated direction into each parameter's .grad and runs the user's torch optimizer, on every
rank alike, so the replicas stay identical. Rank 0 writes the same HDF5 record as the command
line (bytes, phase timings, and the metrics `log` is given). The algorithm's options are
config.API_OPTIONS, named as the command line's flags (block_size=, servers=, checkpoint_every=,
resume=, ...).

Rules, as in Horovod: every worker makes the same calls (step, average_buffers, shutdown) in the
same order; a learning-rate scheduler is passed to DistributedOptimizer, which steps it after
every step on every rank (the server's replica needs it too), so the script does not step it.
Batch-norm running statistics are each worker's own until `opt.average_buffers()` replaces them
on every rank by the workers' mean (fp32, counted in the bytes): call it before evaluating or
saving the model; `shutdown` calls it if steps ran since, so the final model holds averaged ones.

GPU workers: put the model on `fo.local_device()` (this rank's GPU by its node-local rank) before
wrapping the optimizer. Its parameters and gradients then stay in one flat tensor on that GPU,
compressed and decoded there (codec="torch", which a GPU model implies); only the payloads cross
to the host for MPI. A CPU model's vector is a numpy array with the C++ kernels (codec="native").
"""
import contextlib
import datetime
import os
import sys
import time

import torch

from . import config, device, loop, models, results
from .errors import JobError, UsageError

_session = None  # the job's state between init() and shutdown()


class _Session:
    def __init__(self, comm):
        self.comm = comm
        self.exits = contextlib.ExitStack()
        self.interrupted = self.exits.enter_context(loop.deferred_interrupt())
        self.exits.enter_context(_abort_on_uncaught_exception(comm, self))
        self.optimizer = None  # the DistributedOptimizer, once made

    def close_transport(self):
        """Free the exchange's MPI requests, as MPI_Finalize wants."""
        if self.optimizer is not None:
            self.optimizer.fobsgd.trainer.ps.close()


TOGETHER_WITHIN_S = 5  # how long a rank with an uncaught JobError waits for the others to raise it too


@contextlib.contextmanager
def _abort_on_uncaught_exception(comm, session):
    """An exception no one catches on one rank ends the whole job (MPI_Abort after its traceback,
    as `python -m mpi4py` does) instead of leaving the other ranks waiting in an exchange forever.
    A JobError or UsageError (a bad setting: the ranks mostly find it together) that every rank
    raises is one line from rank 0 and the error's exit status, with MPI finalized; one that only
    some ranks raise is one line from each of them, then the abort. The ranks meet on a communicator
    of their own, so the barrier cannot be mistaken for a collective of the run. A Ctrl-C needs no
    abort: every rank stops after the same step (loop.deferred_interrupt)."""
    from .transport import abort_job, mpi
    report, errors = sys.excepthook, comm.Dup()

    def hook(kind, value, traceback):
        if issubclass(kind, KeyboardInterrupt):
            return report(kind, value, traceback)
        if issubclass(kind, JobError):
            rank, met = comm.Get_rank(), errors.Ibarrier()
            deadline = time.monotonic() + TOGETHER_WITHIN_S
            while not met.Test() and time.monotonic() < deadline:
                time.sleep(0.01)
            if met.Test():
                if rank == 0:
                    print(f"error: {value}", file=sys.stderr, flush=True)
                session.close_transport()
                mpi().Finalize()
                os._exit(value.exit_code)
            print(f"error on rank {rank}: {value}", file=sys.stderr)
            abort_job(comm, value.exit_code)
        report(kind, value, traceback)
        abort_job(comm, 1)

    sys.excepthook = hook
    try:
        yield
    finally:
        sys.excepthook = report


def init(comm=None):
    """Start MPI (if not yet) and the job on `comm` (default: COMM_WORLD, at least 2 ranks)."""
    global _session
    if _session is not None:
        raise UsageError("fobsgd_mpi.init() was called twice; call it once per job")
    if comm is None:
        from .transport import mpi
        comm = mpi().COMM_WORLD
    if comm.Get_size() < 2:
        raise UsageError("the parameter server needs at least 2 ranks (a server and a worker); start the script "
                         "with mpirun -n 3 or more")
    _session = _Session(comm)


def _current():
    if _session is None:
        raise UsageError("call fobsgd_mpi.init() first")
    return _session


def _trainer():
    session = _current()
    if session.optimizer is None:
        raise UsageError("wrap the optimizer with fobsgd_mpi.DistributedOptimizer(optimizer, model) first")
    return session.optimizer.fobsgd.trainer


def rank():
    return _current().comm.Get_rank()


def size():
    return _current().comm.Get_size()


def is_server():
    """Whether this rank only serves (rank 0, unless server_also_works): it calls serve(), not a loop."""
    return not _trainer().ps.is_worker


def local_device(spec="cuda"):
    """The torch.device this rank computes on, made current: for "cuda" the GPU of its node-local
    rank (mod the node's GPUs), "cuda:N", or "cpu". UsageError (one line) when no GPU is there."""
    return device.use(spec)


def steps_done():
    """The steps the run has made (after resume=True: those of the run it continues)."""
    return _trainer().done


def default_out(algorithm, n_ranks):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return os.path.join("results", f"{algorithm}-api-n{n_ranks}-{stamp}.h5")


class _Distributed:
    """What DistributedOptimizer attaches to the optimizer (as .fobsgd)."""

    def __init__(self, trainer, grad_views, lock):
        self.trainer, self.grad_views, self.lock = trainer, grad_views, lock
        self.clock = trainer.timer.clock
        self.last_step_end = self.clock()

    def synchronize(self, loss):
        """Collective: exchange the parameters' gradients and write the direction into their .grad."""
        for p, view in self.grad_views:
            if p.grad is None:
                view.zero_()
            elif p.grad is not view:
                view.copy_(p.grad)
            p.grad = view
        compute_s = self.clock() - self.last_step_end
        self.trainer.step(True, loss, compute_s)
        self.last_step_end = self.clock()


def DistributedOptimizer(optimizer, model, algorithm="fo-sgd", scheduler=None, **options):  # noqa: N802 (Horovod's name)
    """Make `optimizer` (a torch.optim optimizer of `model`'s parameters) exchange its gradients.

    Returns the same optimizer object, so isinstance, state_dict and schedulers keep working; its
    step() exchanges and then runs the torch step (step(closure) takes the closure's loss as the
    step's train loss), and average_buffers() averages the buffers (see the module docstring).
    Collective: every rank calls it, with the same options, once.

    Args:
        optimizer: the user's torch.optim optimizer, built on model.parameters().
        model: the torch.nn.Module, on the CPU or a GPU (local_device()); its parameters become
            views of one flat vector there.
        algorithm: an fobsgd_mpi algorithm name (fo-sgd, liec-sgd, sgd, ...).
        scheduler: a torch.optim.lr_scheduler of `optimizer`, stepped after every step on every rank.
        **options: config.API_OPTIONS (out=, seed=, servers=, checkpoint_every=, resume=, ...).
    """
    session = _current()
    if session.optimizer is not None:
        raise UsageError("DistributedOptimizer was already made in this job; one per job")
    cfg = config.api_config(algorithm=algorithm, **options)
    problem = _model_problem(optimizer, model, scheduler)
    if problem:
        raise UsageError(problem)
    comm = session.comm
    lock, problem = None, None
    if comm.Get_rank() == 0:
        cfg.out = cfg.out or default_out(algorithm, comm.Get_size())
        problem = results.output_problem(cfg)
        if not problem:
            try:
                lock = loop.claim_output(cfg, comm.Get_size())
            except (OSError, ValueError) as exc:
                problem = str(exc)
    cfg.out, problem = comm.bcast((cfg.out, problem), root=0)
    if problem:
        raise UsageError(problem)
    from .transport import ParameterServer
    ps = ParameterServer(comm, cfg.server_also_works, cfg.mpi_collectives)
    flat = models.FlatModel(model, cfg.min_compress_numel,
                            device.vector_device(cfg.codec, next(model.parameters()).device))
    grad_views = [(p, p.grad) for p in model.parameters()]
    trainer = loop.Trainer(cfg, ps, flat, optimizer, session.interrupted, scheduler)
    distributed = _Distributed(trainer, grad_views, lock)

    def step(closure=None):
        """Exchange the gradients, write the direction into .grad, run the torch step (step(closure):
        the closure's loss is the step's train loss)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        distributed.synchronize(None if loss is None else float(loss))
        return loss

    # the torch step runs inside (trainer.optimizer_step, the one a scheduler tracks), so a scheduler
    # has no reason to warn that this step bypasses it
    step._wrapped_by_lr_sched = True

    def average_buffers():
        """Collective over the workers (the server joins): every rank's buffers become the workers' mean."""
        trainer.request(loop.AVERAGE_BUFFERS)

    optimizer.fobsgd, optimizer.step, optimizer.average_buffers = distributed, step, average_buffers
    session.optimizer = optimizer
    return optimizer


def _model_problem(optimizer, model, scheduler):
    """Why `optimizer`, `model` and `scheduler` cannot be distributed together, or None."""
    own = {id(p) for p in model.parameters()}
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    if len({id(p) for p in trained}) != len(trained):
        return "the optimizer holds a parameter twice; give each parameter to one parameter group"
    if not {id(p) for p in trained} <= own:
        return "the optimizer trains parameters that are not the model's; pass the model whose parameters it trains"
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return "the model must hold float32 parameters (they become views of one float32 vector)"
    places = {str(p.device) for p in model.parameters()}
    if len(places) > 1:
        return f"the model's parameters are on {', '.join(sorted(places))}; move the whole model to one device"
    if scheduler is not None and scheduler.optimizer is not optimizer:
        return "the scheduler belongs to another optimizer; build it on the optimizer you distribute"
    return None


def serve():
    """The server rank: aggregate until the workers call shutdown(), then close the record."""
    trainer = _trainer()
    status = "failed"
    try:
        trainer.serve()
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        trainer.close(status)


def log(**metrics):
    """Record numbers (e.g. train_loss=, test_accuracy=, test_loss=) under metrics/<name> in the
    results file, at the last step; a test_accuracy also makes an evaluation row."""
    _trainer().log(metrics)


def shutdown():
    """End the job on this rank: a worker averages the buffers if steps ran since they last were and
    ends the run (the server's serve() returns); every rank releases what init() took. On an error
    the session stays, so that its hook ends the job (_abort_on_uncaught_exception)."""
    global _session
    session = _current()
    if session.optimizer is not None:
        distributed = session.optimizer.fobsgd
        trainer = distributed.trainer
        if trainer.ps.is_worker:
            if trainer.buffers_stale():
                trainer.request(loop.AVERAGE_BUFFERS)
            trainer.request(loop.END)
            trainer.close("complete")
        trainer.ps.close()
        if distributed.lock is not None:
            distributed.lock.release()
    session.exits.close()
    _session = None
