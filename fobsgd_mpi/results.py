"""HDF5 record of one run (SPEC §4): root attributes, extendable datasets flushed as the run goes,
so a killed run leaves a readable file. Only the server rank writes."""
import datetime
import json
import os
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


class RunWriter:
    def __init__(self, path, attrs, overwrite=False):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.f = h5py.File(path, "w" if overwrite else "x")
        self.path = path
        for k, v in attrs.items():
            self.f.attrs[k] = v if isinstance(v, (int, float, str, np.integer, np.floating)) else json.dumps(v)
        self.f.attrs["start_time"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        self.groups = {name: self._group(name, fields) for name, fields in
                       (("iterations", ITERATION_FIELDS), ("evals", EVAL_FIELDS))}
        self.pending = {"iterations": [], "evals": []}

    @classmethod
    def resume(cls, path, last_step):
        """Reopen a run's file and drop the rows after `last_step` (written after the checkpoint)."""
        self = cls.__new__(cls)
        self.f = h5py.File(path, "a")
        self.path = path
        self.groups = {name: self.f[name] for name in ("iterations", "evals")}
        self.pending = {"iterations": [], "evals": []}
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
            ds = g.create_dataset(key, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1024,))
            ds.attrs["units"] = units
        return g

    def append(self, group, row):
        self.pending[group].append(row)

    def flush(self):
        for name, rows in self.pending.items():
            if not rows:
                continue
            g = self.groups[name]
            for key in g:
                ds = g[key]
                n = ds.shape[0]
                ds.resize((n + len(rows),))
                ds[n:] = [r[key] for r in rows]
            rows.clear()
        self.f.flush()

    def close(self, **attrs):
        self.flush()
        for k, v in attrs.items():
            self.f.attrs[k] = v
        self.f.attrs["end_time"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        self.f.close()
