import pytest

from deepres.errors import UserError
from deepres.training.schedule import IterationSchedule, milestone_steps


def paper(depth=20, max_steps=64000, **kw):
    return IterationSchedule(lr=0.1, milestones=[0.5, 0.75], gamma=0.1, max_steps=max_steps, depth=depth, **kw)


def test_paper_schedule_divides_by_ten_at_32k_and_48k():
    s = paper()
    assert s.milestones == [32000, 48000]
    assert [s.lr(k) for k in (0, 31999, 32000, 47999, 48000, 63999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_shortened_run_keeps_the_proportions():
    assert paper(max_steps=600).milestones == [300, 450]


def test_whole_iteration_milestones():
    assert milestone_steps([100, 200], 300) == [100, 200]


@pytest.mark.parametrize("milestones", [[32000, 48000], [0.75, 0.5], [0, 0.5], [1.5]])
def test_milestones_outside_the_run_are_refused(milestones):
    with pytest.raises(UserError, match="schedule.milestones"):
        milestone_steps(milestones, 600)


def test_warmup_only_for_deep_nets_and_ends_below_80_percent():
    assert paper(depth=56).lr(0) == 0.1
    s = paper(depth=110)
    assert s.lr(0) == 0.01
    s.observe(300, {"train/error": 85.0})
    assert s.lr(350) == 0.01
    s.observe(400, {"test/error": 10.0})
    assert s.lr(350) == 0.01
    s.observe(400, {"train/error": 79.0})
    assert s.lr(401) == 0.1 and s.warmup_end == 400
    restored = paper(depth=110)
    restored.load_state_dict(s.state_dict())
    assert restored.lr(401) == 0.1


def test_warmup_is_bounded():
    s = paper(depth=110, warmup_max_steps=500)
    s.observe(450, {"train/error": 90.0})
    assert s.lr(450) == 0.01 and s.lr(500) == 0.1
