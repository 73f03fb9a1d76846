"""SGD over a pack's parameters: torch.optim.SGD's update (momentum, dampening, weight decay, Nesterov), each
member stepped with its own learning rate, as one fused update over all parameters."""
from collections.abc import Callable, Iterable, Sequence

import torch


class PackedSGD(torch.optim.Optimizer):
    """torch.optim.SGD (momentum, dampening, weight decay, Nesterov) over packed parameters, whose dim 0 holds
    `members` equal slices, one per member, each stepped with its own learning rate (param group key `lrs`)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lrs: Sequence[float], momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, dict(lrs=list(lrs), momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))
        self._rates_key: dict[int, tuple[float, ...]] = {}  # per param group (by id): the lrs its rates hold
        self._rates_cache: dict[int, list[torch.Tensor]] = {}

    def set_lrs(self, lrs: Sequence[float]) -> None:
        for group in self.param_groups:
            group["lrs"] = list(lrs)

    def _rates(self, group: dict) -> list[torch.Tensor]:
        """Each parameter's learning rate per element (member k's lr over its slice): the update is then one fused
        multiply-add over all parameters. Rewritten in place, only when the learning rates change (a captured
        training step, training/step_graph.py, reads them where they are)."""
        key, members = tuple(group["lrs"]), len(group["lrs"])
        if id(group) not in self._rates_cache:
            self._rates_cache[id(group)] = [torch.empty_like(p, requires_grad=False) for p in group["params"]]
        if self._rates_key.get(id(group)) != key:
            params, rates = group["params"], self._rates_cache[id(group)]
            for dtype, device in {(p.dtype, p.device) for p in params}:
                lrs = torch.tensor(group["lrs"], dtype=dtype).to(device)[:, None]
                for p, rate in zip(params, rates):
                    if (p.dtype, p.device) == (dtype, device):
                        rate.view(members, -1).copy_(lrs)  # broadcast over each member's slice
            self._rates_key[id(group)] = key
        return self._rates_cache[id(group)]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            pairs = [(p, r) for p, r in zip(group["params"], self._rates(group)) if p.grad is not None]
            if not pairs:
                continue
            params, rates = [p for p, _ in pairs], [r for _, r in pairs]
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            updates = grads
            if group["momentum"]:
                bufs = [self.state[p].get("momentum_buffer") for p in params]
                if any(buf is None for buf in bufs):
                    bufs = [g.detach().clone() for g in grads]
                    for p, buf in zip(params, bufs):
                        self.state[p]["momentum_buffer"] = buf
                else:
                    torch._foreach_mul_(bufs, group["momentum"])
                    torch._foreach_add_(bufs, grads, alpha=1 - group["dampening"])
                updates = torch._foreach_add(grads, bufs, alpha=group["momentum"]) if group["nesterov"] else bufs
            torch._foreach_addcmul_(params, updates, rates, value=-1)
        return loss

    def freeze(self, member: int) -> None:
        """Member's learning rate stays 0 and its momentum is dropped."""
        for group in self.param_groups:
            group["lrs"][member] = 0.0
            for p in group["params"]:
                buf = self.state[p].get("momentum_buffer")
                if buf is not None:
                    buf.unflatten(0, (len(group["lrs"]), -1))[member].zero_()


def set_member_lrs(optimizer: torch.optim.Optimizer, lrs: Sequence[float]) -> None:
    """Each member's learning rate: PackedSGD's one per member; any other optimiser (one run) in all its groups,
    in place where the lr is a tensor (a captured training step reads it there)."""
    if isinstance(optimizer, PackedSGD):
        optimizer.set_lrs(lrs)
        return
    (lr,) = lrs
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
