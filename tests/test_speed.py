"""Issue 6: the speed switches. On CUDA by default bf16 autocast, channels_last and cudnn autotuning, on CPU none
(a CPU run stays fp32 and repeatable to the bit); torch.compile and activation checkpointing on request. Where a
switch only acts on CUDA, its wiring and defaults are tested here."""
from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from helpers.config import compose_config as composed
from lightning.pytorch.callbacks import RichProgressBar

from deepres.config import if_cuda
from deepres.data.cifar import CifarDataModule
from deepres.errors import UserError
from deepres.models import CifarResNet, build, construct
from deepres.models.build import apply_switches, compile_mode
from deepres.runs.metrics_logger import MetricsCSVLogger
from deepres.training.bookkeeping import Bookkeeping
from deepres.training.checkpoints import RunCheckpoints
from deepres.training.module import Classifier
from deepres.training.progress import StepProgressBar
from deepres.training.schedule import IterationSchedule


@pytest.fixture
def cuda(monkeypatch):
    """A machine whose torch reports a CUDA device (only the defaults are read, nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_if_cuda_follows_the_accelerator_and_the_machine(monkeypatch):
    for available, answers in ((False, ["cpu"] * 4), (True, ["gpu", "gpu", "gpu", "cpu"])):
        monkeypatch.setattr(torch.cuda, "is_available", lambda available=available: available)
        assert [if_cuda(a, "gpu", "cpu") for a in ("auto", "gpu", "cuda", "cpu")] == answers


def test_defaults_on_cpu_are_fp32_contiguous_and_uncompiled():
    cfg = composed()
    assert (cfg.trainer.precision, cfg.trainer.benchmark) == ("32-true", None)
    assert (cfg.model.channels_last, cfg.model.compile, cfg.model.checkpoint_activations) == (False, False, False)


def test_defaults_on_cuda_are_bf16_channels_last_and_cudnn_benchmark(cuda):
    for model in ("cifar_resnet", "imagenet_resnet"):
        cfg = composed(f"model={model}")
        assert (cfg.trainer.precision, cfg.trainer.benchmark, cfg.model.channels_last) == ("bf16-mixed", True, True)
        assert cfg.model.compile is False
    cfg = composed("trainer.accelerator=cpu")  # a CPU run on a GPU machine keeps the CPU defaults
    assert (cfg.trainer.precision, cfg.trainer.benchmark, cfg.model.channels_last) == ("32-true", None, False)


def test_every_switch_can_be_turned_off_or_set(cuda):
    cfg = composed("trainer.precision=32-true", "trainer.benchmark=false", "model.channels_last=false",
                   "model.compile=reduce-overhead", "model.checkpoint_activations=true")
    assert (cfg.trainer.precision, cfg.trainer.benchmark, cfg.model.channels_last) == ("32-true", False, False)
    assert compile_mode(cfg.model.compile) == "reduce-overhead"
    assert construct(cfg.model, 10).checkpoint_activations is True


def test_compile_values():
    assert [compile_mode(v) for v in (False, None, True, "max-autotune")] == [None, None, "default", "max-autotune"]
    with pytest.raises(UserError, match="model.compile='fast'"):
        compile_mode("fast")


def test_nets_build_from_configs_with_the_switches_applied_after_construction():
    for model in ("cifar_resnet", "imagenet_resnet"):
        cfg = composed(f"model={model}", "model.compile=true", "model.channels_last=true")
        with torch.device("meta"):
            plain, built = construct(cfg.model, 10), build(cfg.model, 10)  # the constructor takes no switch
        assert plain._compiled_call_impl is None and built._compiled_call_impl is not None
        conv = next(m for m in built.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert list(plain.state_dict()) == list(built.state_dict())


def test_channels_last_lays_out_the_weights_and_computes_the_same():
    torch.manual_seed(0)
    net, x = CifarResNet(8).eval(), torch.randn(4, 3, 32, 32)
    expected = net(x)
    apply_switches(net, {"channels_last": True})
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in net.modules()
               if isinstance(m, torch.nn.Conv2d))
    torch.testing.assert_close(net(x), expected)


def test_a_compiled_net_keeps_its_state_dict_keys():
    """Checkpoints of a compiled run load into a plain net (evaluation, reports, resuming without compile)."""
    plain, compiled = (Classifier(CifarResNet(8), None, Bookkeeping([None]), ["test"]) for _ in range(2))
    apply_switches(compiled.net, {"compile": "reduce-overhead"})
    assert compiled.net._compiled_call_impl is not None and plain.net._compiled_call_impl is None
    plain.load_state_dict(compiled.state_dict())
    assert list(plain.state_dict()) == list(compiled.state_dict())


def saved_bytes_and_grads(checkpoint_activations: bool) -> tuple[int, CifarResNet, torch.Tensor]:
    torch.manual_seed(0)
    net = CifarResNet(20, checkpoint_activations=checkpoint_activations)
    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(net(torch.randn(16, 3, 32, 32)), torch.arange(16) % 10)
    loss.backward()
    return sum(saved), net, loss


def test_activation_checkpointing_saves_memory_and_trains_exactly_the_same():
    full, plain_net, plain_loss = saved_bytes_and_grads(False)
    kept, net, loss = saved_bytes_and_grads(True)
    assert kept < full / 3  # activations kept for the backward pass: the blocks' inputs only
    assert torch.equal(loss, plain_loss)
    for p, q in zip(plain_net.parameters(), net.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)
    # BN's running statistics are updated once, not again by the recomputation
    for (name, a), b in zip(plain_net.state_dict().items(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in plain_net.parameters())


def test_activation_checkpointing_is_off_without_gradients(monkeypatch):
    monkeypatch.setattr("deepres.models.blocks.checkpoint", lambda *a, **k: pytest.fail("checkpointed"))
    net = CifarResNet(8, checkpoint_activations=True).eval()
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    with pytest.raises(pytest.fail.Exception):
        net(torch.randn(2, 3, 32, 32))


@pytest.mark.slow
def test_a_compiled_net_checkpoints_activations_and_trains_as_the_eager_net():
    """model.compile with model.checkpoint_activations (ResNet-1202 on a small GPU wants both): it compiles, and two
    steps give the eager net's gradients and BN statistics (updated once per step, not again by the recomputation)."""
    torch.manual_seed(0)
    eager = CifarResNet(8)
    compiled = CifarResNet(8, checkpoint_activations=True)
    compiled.load_state_dict(eager.state_dict())
    apply_switches(compiled, {"compile": True})
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    for net in (eager, compiled):
        for _ in range(2):
            torch.nn.functional.cross_entropy(net(x), y).backward()
    for p, q in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_training_steps_read_nothing_back_from_the_device(cifar10_root, tmp_path, monkeypatch):
    """A read of a tensor's value on the host (item, tolist, bool, ...) waits for the GPU; the training path may do
    it only where a row is written (every log_every_n_steps iterations), not in between."""
    trainer, reads = None, []

    def reading(name: str):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            reads.append((trainer.global_step, name))
            return original(self, *args, **kwargs)
        return read

    data = CifarDataModule(root=str(cifar10_root), batch_size=32, eval_batch_size=160)
    book = Bookkeeping([IterationSchedule(0.1, [0.5], 0.1, max_steps=12, depth=8)], [[MetricsCSVLogger(tmp_path)]])
    module = Classifier(CifarResNet(8), partial(torch.optim.SGD, lr=0.1, momentum=0.9), book, data.eval_names)
    trainer = L.Trainer(max_steps=12, log_every_n_steps=5, val_check_interval=1000, check_val_every_n_epoch=None,
                        num_sanity_val_steps=0, enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[RunCheckpoints(tmp_path, 1000), StepProgressBar()], logger=False,
                        default_root_dir=tmp_path)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, reading(name))
    trainer.fit(module, data)
    assert {step for step, _ in reads} <= {0, 5, 10, 12}  # setting up, the rows at 5 and 10, the end
    assert {step for step, _ in reads} >= {5, 10}  # the rows do read (the check sees reads)


def test_progress_bar_updates_every_n_steps_and_shows_the_rows(monkeypatch):
    """Lightning's bar updates and redraws at every iteration, which cost a small net about 1 ms each."""
    updates = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, trainer, *args: updates.append(
        trainer.global_step))
    monkeypatch.setattr(RichProgressBar, "get_metrics", lambda self, trainer, module: {"v_num": 0})
    bar = StepProgressBar()
    assert bar.refresh_rate <= 4
    for step in range(1, 26):
        bar.on_train_batch_end(SimpleNamespace(global_step=step, max_steps=25), None, None, None, step - 1)
    assert updates == [1, 10, 20, 25]  # the first, every 10th, the last: fast iterations, none by time
    module = SimpleNamespace(bar_metrics={"train/loss": 2.3, "train/error": 90.0})
    assert bar.get_metrics(None, module) == {"v_num": 0, "train/loss": 2.3, "train/error": 90.0}
