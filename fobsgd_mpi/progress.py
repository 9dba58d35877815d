"""What rank 0 shows while a run goes: tqdm's bar where stderr is a terminal, else (under mpirun,
whose stderr is a pipe, and in batch jobs) one line every `every` seconds."""
import sys
import time


class Progress:
    def __init__(self, total, first, samples_per_step, every):
        self.total, self.first, self.samples_per_step, self.every = total, first, samples_per_step, every
        self.done = first
        self.started = self.last_line = time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=first, unit="it", dynamic_ncols=True)

    def update(self, done, loss, accuracy, bytes_up, bytes_down):
        """After a step: `bytes_up` / `bytes_down` are one worker's totals so far."""
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}", MB_up=f"{bytes_up / 1e6:.1f}")
            self.bar.update(done - self.done)
        elif now - self.last_line >= self.every or done == self.total:
            rate = (done - self.first) / max(now - self.started, 1e-9)
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            print(f"step {done}/{self.total}  {rate:.2f} it/s  {rate * self.samples_per_step:.0f} samples/s  "
                  f"loss {loss:.4f}  test acc {accuracy:.4f}  MB up {bytes_up / 1e6:.2f} down {bytes_down / 1e6:.2f} "
                  f"per worker  ETA {eta:.0f} s", file=sys.stderr, flush=True)
            self.last_line = now
        self.done = done

    def close(self):
        if self.bar is not None:
            self.bar.close()
