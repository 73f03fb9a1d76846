"""model.compile=step_graph: the whole ordinary training iteration (the batch drawn from the resident data, forward,
backward, the optimiser step, the training sums) as one captured CUDA graph, replayed every iteration.

Small CIFAR nets are bound by kernel launches: a replay launches the iteration's few hundred kernels at once. What
changes between iterations lives in device tensors the graph reads: the batch's index in its epoch and the ring slot
of its loss (filled before each replay), the learning rates (training/module.py sets them in place), the epoch's
crop draws (data/gpu_augment.py rewrites them in place at each new epoch). Logging, checkpoints, the schedule and
evaluation run as without it, between replays. On a CPU (or before the capture) the same body runs eagerly, so a
CPU run with and without the setting computes the same.

The graph is an optimiser to Lightning (StepGraphOptimizer): its step() runs the whole iteration, so Lightning
counts iterations as usual, and its state is the wrapped optimiser's."""
import contextlib
from collections.abc import Callable

import torch

from deepres.errors import UserError

WARMUP = 3  # eager iterations on a side stream before the capture, as torch.cuda.graphs asks


class StepGraphOptimizer(torch.optim.Optimizer):
    """Wraps the run's optimiser: step() draws the batch, runs forward and backward and the wrapped optimiser's step
    (eagerly, or by replaying the captured graph); param_groups, state and state_dict are the wrapped optimiser's.

    `loss(x, y, slot)` is the LightningModule's loss of a batch, `batches.batch_at(epoch, i)` the batch i of an
    epoch (i a device tensor), `autocast` the context of the run's precision."""

    def __init__(self, optimizer: torch.optim.Optimizer, loss: Callable, batches, autocast: Callable,
                 device: torch.device):
        # not Optimizer.__init__: the parameters, groups and state are the wrapped optimiser's own
        self.optimizer, self.loss, self.batches, self.autocast, self.device = optimizer, loss, batches, autocast, device
        self.param_groups, self.state, self.defaults = optimizer.param_groups, optimizer.state, optimizer.defaults
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}
        for group in self.param_groups:  # the graph reads the learning rate where set_member_lrs writes it
            if "lr" in group and not torch.is_tensor(group["lr"]):
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
        self.index = torch.zeros((), dtype=torch.long, device=device)  # the batch of the epoch
        self.slot = torch.zeros((), dtype=torch.long, device=device)  # its loss's place in the ring
        self.epoch, self.eager_steps, self.graph = -1, 0, None
        self.captures = device.type == "cuda"

    def prepare(self, step: int, ring: int) -> None:
        """Before iteration step + 1: its batch and loss slot, and the epoch's draws when a new epoch begins."""
        epoch, i = divmod(step, self.batches.batches_per_epoch)
        if epoch != self.epoch:
            self.batches.draws(epoch)  # the epoch's crops, written into the tensors the graph reads
            self.epoch = epoch
        self.index.fill_(i)
        self.slot.fill_(step % ring)

    def _body(self) -> None:
        x, y = self.batches.batch_at(self.epoch, self.index)
        with self.autocast():
            loss = self.loss(x, y, self.slot)
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> None:
        if closure is not None:
            closure()  # Lightning's hooks around an optimiser step; the iteration itself is the body's
        with torch.enable_grad():
            if self.graph is not None:
                self.graph.replay()
            elif not self.captures:
                self.optimizer.zero_grad(set_to_none=True)
                self._body()
            elif self.eager_steps < WARMUP:
                self._warm_up()
            else:
                self._capture()

    def _warm_up(self) -> None:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.optimizer.zero_grad(set_to_none=True)
            self._body()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.eager_steps += 1

    def _capture(self) -> None:
        """Capture the body (gradients made afresh in the graph's memory, then written in place at each replay)
        and run it for this iteration."""
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._body()
        self.graph.replay()

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.graph is None:  # a captured graph writes its gradients in place
            self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        state = self.optimizer.state_dict()
        for group in state["param_groups"]:  # plain numbers in checkpoints, as without the graph
            if torch.is_tensor(group.get("lr")):
                group["lr"] = group["lr"].item()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        lrs = [group.get("lr") for group in self.param_groups]
        self.optimizer.load_state_dict(state_dict)
        for group, lr in zip(self.param_groups, lrs):  # keep the tensors the graph reads
            if torch.is_tensor(lr):
                lr.fill_(float(group["lr"]))
                group["lr"] = lr

    def freeze(self, member: int) -> None:
        self.optimizer.freeze(member)


def check_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """A captured step needs an optimiser whose update reads its learning rate on the device: PackedSGD, or
    torch.optim.SGD with fused=True (its other implementations read a tensor lr on the host)."""
    from deepres.packing.optimizer import PackedSGD

    fused = isinstance(optimizer, torch.optim.SGD) and optimizer.defaults.get("fused")
    if device.type == "cuda" and not (fused or isinstance(optimizer, PackedSGD)):
        raise UserError(f"model.compile=step_graph needs an optimiser that reads its learning rate on the device: "
                        f"optimizer.fused=true with torch.optim.SGD (this run has {type(optimizer).__name__} with "
                        f"fused={optimizer.defaults.get('fused')}).")


def autocast_for(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """The run's autocast inside the step, without its weight cache (a captured graph must not keep one)."""
    if str(precision).startswith("bf16"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    if "16" in str(precision):
        raise UserError(f"model.compile=step_graph with trainer.precision={precision}: fp16 needs a gradient scaler "
                        "outside the step; use bf16-mixed (the CUDA default), 32-true or 64-true.")
    return contextlib.nullcontext
