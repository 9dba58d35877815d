"""HDF5 record of one run (SPEC §4): root attributes, extendable datasets flushed as the run goes,
so a killed run leaves a readable file. Only the server rank writes.

Bytes rule: a worker's total traffic is the sum of `iterations/bytes_up` (`bytes_down`) plus the root
attribute `finish_bytes_up` (`finish_bytes_down`), the exchange the algorithm makes once at the end
of the run (LIEC-SGD's final model average; 0 for the others).
Root attributes at the end: `status` (complete / stopped / interrupted / failed), `steps_done`
(steps 0..steps_done-1 ran, skipped ones included), `skipped_steps`, `end_time`.
"""
import datetime
import errno
import fcntl
import json
import os
import socket
import subprocess

import h5py
import numpy as np

ITERATION_FIELDS = {  # name: (dtype, units)
    "step": (np.int64, "iteration"),
    "wall_s": (np.float64, "s since start"),
    "compute_s": (np.float64, "s, max over ranks"),
    "encode_s": (np.float64, "s, max over ranks"),
    "comm_s": (np.float64, "s, max over ranks"),
    "server_s": (np.float64, "s, server rank"),
    "decode_s": (np.float64, "s, max over ranks"),
    "optimizer_s": (np.float64, "s, max over ranks"),
    "bytes_up": (np.int64, "bytes one worker hands to MPI towards the server"),
    "bytes_down": (np.int64, "bytes one worker receives from the server"),
    "train_loss": (np.float64, "mean minibatch loss over this round's workers"),
    "participants": (np.int64, "workers in this round (--participation)"),
    "modelled_comm_s": (np.float64, "s, alpha-beta model of this iteration's exchange (NaN when unshaped)"),
    "replica_spread": (np.float64, "max L2 distance of a worker model from the average (LIEC), else 0"),
}
METRIC_FIELDS = {  # one group metrics/<name> per metric the Python API's fobsgd_mpi.log records
    "step": (np.int64, "iteration after which it was logged (-1: before the first)"),
    "rank": (np.int64, "rank that logged it"),
    "value": (np.float64, "as logged"),
}
EVAL_FIELDS = {
    "step": (np.int64, "iteration"),
    "test_loss": (np.float64, "mean loss on the test set"),
    "test_accuracy": (np.float64, "fraction correct (NaN for regression)"),
    "bytes_up_total": (np.int64, "bytes up per worker so far"),
    "wall_s": (np.float64, "s since start"),
}


def git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# allocated beyond each write's rows for HDF5's own metadata and the closing attributes
HEADROOM_BYTES = 256 << 10
CHUNK = 1024


def output_problem(cfg, save_model=None):
    """Why the results file or the saved model cannot be written where asked, or None (any rank,
    before MPI starts). `cfg` has out and overwrite, and resume where the front door takes it."""
    resume = getattr(cfg, "resume", False)
    outputs = [(flag, path) for flag, path in (("--out", cfg.out), ("--save-model", save_model)) if path]
    folders = [f"{flag} {path}" for flag, path in outputs if os.path.isdir(path)]
    if folders:
        return f"{' and '.join(folders)} is a folder; give a file name in it"
    if cfg.out and resume and not os.path.exists(cfg.out):
        return f"--resume: {cfg.out} does not exist, so there is no run to continue; drop --resume to start one"
    for flag, path in outputs:
        if os.path.exists(path) and not (cfg.overwrite or resume):
            return f"{path} exists; pass --overwrite or choose another {flag}"
    for flag, path in outputs:  # only once nothing is refused: this creates folders
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            return f"cannot create the folder of {flag} {path} ({exc.strerror}); choose a writable path"
        if not os.access(folder, os.W_OK):
            return f"cannot write {flag} {path}: {folder} is not writable; choose a writable path"
    return None


def check_resumable(path):
    """ValueError unless `path` is a results file a --resume can append to: one this package wrote,
    with its iterations and evals tables (read only; nothing is changed)."""
    try:
        with h5py.File(path, "r") as f:
            missing = [f"{name}/{key}" for name, fields in (("iterations", ITERATION_FIELDS), ("evals", EVAL_FIELDS))
                       for key in fields if f"{name}/{key}" not in f]
    except OSError as exc:
        raise ValueError(f"--resume: {path} is not a readable HDF5 file ({exc}); restore it from a copy, or start "
                         "afresh with --overwrite") from None
    if missing:
        raise ValueError(f"--resume: {path} is not a results file of fobsgd_mpi (it lacks {', '.join(missing[:3])}); "
                         "restore it from a copy, or start afresh with --overwrite")


class ResultsError(OSError):
    """The results file could not be written (a full disk, a quota); the message is one line."""

    def __str__(self):
        return self.strerror


class OutputLock:
    """An exclusive flock on <out>.lock for as long as a job writes <out>; the kernel drops it when
    the process ends, however it ends. The file names the holder, for the job that is refused."""

    def __init__(self, out):
        self.path = out + ".lock"
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ResultsError(exc.errno, f"cannot create the lock file {self.path} beside --out ({exc.strerror}); "
                                              "choose a writable --out") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise ResultsError(errno.EBUSY, f"{out} is being written by a running job ({holder}); wait for "
                                                "it to end or choose another --out") from None
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the holder removed the file between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self.fd = fd

    def release(self):
        os.unlink(self.path)
        os.close(self.fd)


class RunWriter:
    """Appends rows and flushes them. Before each write it allocates the disk space the write needs
    past the end of the file, where HDF5 puts new data: a full disk (or quota) then stops the run
    before HDF5 has written anything, the file intact. (HDF5 itself does not survive a failed write:
    it leaves the file half-written and crashes at the next flush or at exit.)"""

    def __init__(self, path, attrs, overwrite=False):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.f = h5py.File(path, "w" if overwrite else "x")
        self.path = path
        self.last_step = -1
        self.fd = os.open(path, os.O_WRONLY)
        try:
            self._reserve(0)  # before HDF5 writes anything: a full disk stops the run with the file unwritten
            for k, v in attrs.items():
                self.f.attrs[k] = v if isinstance(v, (int, float, str, np.integer, np.floating)) else json.dumps(v)
            self.f.attrs["start_time"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
            self.groups = {name: self._group(name, fields) for name, fields in
                           (("iterations", ITERATION_FIELDS), ("evals", EVAL_FIELDS))}
            self.pending = {"iterations": [], "evals": []}
            self._reserve(0)
            self.f.flush()  # readable from the start, should the job be killed before its first rows
        except BaseException:  # nothing of this run is in the file yet: leave none of it behind
            self.f.close()
            os.close(self.fd)
            os.unlink(path)
            raise

    @classmethod
    def resume(cls, path, last_step):
        """Reopen a run's file and drop the rows after `last_step` (written after the checkpoint)."""
        self = cls.__new__(cls)
        self.f = h5py.File(path, "r+")
        self.path = path
        self.fd = os.open(path, os.O_WRONLY)
        self.last_step = last_step
        self.groups = {name: self.f[name] for name in ("iterations", "evals")}
        self.groups.update({f"metrics/{name}": g for name, g in self.f.get("metrics", {}).items()})
        self.pending = {name: [] for name in self.groups}
        for g in self.groups.values():
            keep = int(np.searchsorted(g["step"][:], last_step, side="right"))
            for key in g:
                g[key].resize((keep,))
        for key in ("final_params", ):
            if key in self.f:
                del self.f[key]
        self.f.attrs["resumed_at_step"] = last_step
        return self

    def _group(self, name, fields):
        g = self.f.create_group(name)
        for key, (dtype, units) in fields.items():
            ds = g.create_dataset(key, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(CHUNK,))
            ds.attrs["units"] = units
        return g

    def append(self, group, row):
        self.pending[group].append(row)

    def append_metric(self, name, step, rank, value):
        """A metric the user logged (fobsgd_mpi.log): a row of the group metrics/<name>."""
        group = f"metrics/{name}"
        if group not in self.groups:
            self.groups[group] = self._group(group, METRIC_FIELDS)
            self.pending[group] = []
        self.pending[group].append({"step": step, "rank": rank, "value": value})

    def flush(self):
        """Write the pending rows; ResultsError if they cannot be (the rows are then dropped)."""
        rows = {name: rows for name, rows in self.pending.items() if rows}
        if not rows:
            return
        self.pending = {name: [] for name in self.pending}
        # each dataset may start a new chunk; 8 bytes a field
        self._reserve(sum(len(r) * 8 * len(self.groups[name]) + CHUNK * 8 * len(self.groups[name])
                          for name, r in rows.items()))
        for name, group_rows in rows.items():
            g = self.groups[name]
            for key in g:
                ds = g[key]
                n = ds.shape[0]
                ds.resize((n + len(group_rows),))
                ds[n:] = [r[key] for r in group_rows]
        self.f.flush()
        if "iterations" in rows:
            self.last_step = rows["iterations"][-1]["step"]

    def close(self, final_params=None, **attrs):
        """Flush, write `final_params` (if given) and the closing attributes (HDF5 then trims the file
        to what it uses)."""
        try:
            self.flush()
            if final_params is not None:
                self._reserve(final_params.nbytes)
                self.f.create_dataset("final_params", data=final_params)
        finally:
            for k, v in attrs.items():
                self.f.attrs[k] = v
            self.f.attrs["end_time"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
            self.f.close()
            os.close(self.fd)

    def _reserve(self, nbytes):
        try:
            os.posix_fallocate(self.fd, self.f.id.get_filesize(), nbytes + HEADROOM_BYTES)
        except OSError as exc:
            if self.last_step < 0:
                what = "no rows were written; free space, then run again"
            else:
                what = (f"it holds the rows up to step {self.last_step}; free space, then continue from the last "
                        "checkpoint with --resume")
            raise ResultsError(exc.errno, f"cannot write {self.path}: {exc.strerror}; {what}") from None
