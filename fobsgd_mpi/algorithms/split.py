"""--min-compress-numel: the algorithm on the large tensors, fp32 for the small ones.

The flat parameter vector puts tensors with at least that many elements first (models.FlatModel),
so the compressed head and the fp32 tail are two contiguous slices; the tail takes its own
fp32 gather / broadcast each iteration and its bytes are counted with the head's.
"""
import numpy as np

from .. import arrays


class SplitExchange:
    def __init__(self, head, tail, d_head):
        self.head, self.tail, self.d_head = head, tail, d_head
        self.direction = arrays.zeros(d_head + tail.d, head.device)
        self.up, self.down = head.up, head.down

    @property
    def bytes_up_worker(self):
        return self.head.bytes_up_worker + self.tail.bytes_up_worker

    @property
    def bytes_down_worker(self):
        return self.head.bytes_down_worker + self.tail.bytes_down_worker

    @property
    def servers(self):
        return self.head.servers

    @property
    def spread(self):
        return getattr(self.head, "spread", 0.0)

    def identical_after(self, step):
        return self.head.identical_after(step)

    def exchange(self, grad, step, timer, participants=None):
        self.direction[: self.d_head] = self.head.exchange(grad[: self.d_head], step, timer, participants)
        self.direction[self.d_head :] = self.tail.exchange(grad[self.d_head :], step, timer, participants)
        return self.direction

    def wire_specs(self):
        return self.head.wire_specs() + self.tail.wire_specs()

    def state_arrays(self):
        return self.head.state_arrays()

    def load_state(self, arrays):
        self.head.load_state(arrays)

    def bind(self, params):
        self.head.bind(params[: self.d_head])
        self.tail.bind(params[self.d_head :])

    def after_step(self, params, step):
        self.head.after_step(params[: self.d_head], step)

    def evaluated_params(self, params, step):
        own = params[: self.d_head]
        head = self.head.evaluated_params(own, step)
        if head is None or head is own:
            return None if head is None else params
        return np.concatenate([head, arrays.host(params[self.d_head :])])

    def finish(self, params, step):
        return self.head.finish(params[: self.d_head], step)
