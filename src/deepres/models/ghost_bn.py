"""model.bn_batch: BN statistics over groups of images of a batch ("ghost" batch norm), as the paper's training saw
them. It trained CIFAR at batch 128 on two GPUs, so each BN layer normalised over 64 images; one device normalising
over all 128 is a different (less noisy) regulariser.

In training, a batch of B images is cut into B / bn_batch consecutive groups, each normalised with its own mean and
variance (the same kernel as a device holding that group alone). The running averages are one set: each group
updates a copy, as each GPU updates its own, and the copies are averaged (the update is linear, so that is the mean
over groups of the per-group update), across processes too under DDP, so a run does not depend on the GPU count.
Evaluation uses the running averages, as ordinary BN does."""
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class GhostBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics are taken over groups of `group` images; the same parameters,
    buffers and state-dict keys. A batch of at most `group` images in one process is normalised as BatchNorm2d does,
    by the same call."""

    def __init__(self, num_features: int, group: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.group = group

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group={self.group}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = -(-x.shape[0] // self.group)
        processes = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if not self.training or (groups == 1 and processes == 1):
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        # one copy of the running averages per group, each updated in place by its group's batch_norm call
        means = self.running_mean.expand(groups, -1).clone()
        variances = self.running_var.expand(groups, -1).clone()
        out = torch.cat([F.batch_norm(images, means[k], variances[k], self.weight, self.bias, True, factor, self.eps)
                         for k, images in enumerate(x.tensor_split(groups))])
        averages = torch.stack([means.mean(0), variances.mean(0)])
        if processes > 1:  # every process has as many groups: the mean of the processes' means
            dist.all_reduce(averages)
            averages = averages / processes
        self.running_mean.copy_(averages[0])
        self.running_var.copy_(averages[1])
        return out


def ghost_batch_norm(module: nn.Module, group: int) -> nn.Module:
    """`module` with every nn.BatchNorm2d replaced by a GhostBatchNorm2d of `group` images holding its very
    parameters and buffers (as torch's SyncBatchNorm.convert_sync_batchnorm replaces them)."""
    if type(module) is nn.BatchNorm2d:
        ghost = GhostBatchNorm2d(module.num_features, group, eps=module.eps, momentum=module.momentum,
                                 affine=module.affine, track_running_stats=module.track_running_stats)
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            setattr(ghost, name, tensor)
        return ghost.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, ghost_batch_norm(child, group))
    return module
