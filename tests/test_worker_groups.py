"""make test's workers keep each group of tests together (conftest.py's worker_group, --dist loadgroup): a group
spread over the workers pays its costly shared state once per worker (the smoke sweep was built three times, the
SLURM tests queued on the cluster side by side, under pytest 9.2 with pytest-xdist 3.8). A small suite, grouped as
conftest.py groups, run the way make test runs the real one."""
import re
import subprocess
import sys

CONFTEST = '''
import pytest

@pytest.fixture(scope="session")
def shared():
    return 1

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("shared"))
'''
TESTS = '''
import pytest

@pytest.mark.parametrize("i", range(6))
def test_reads_the_shared_state(shared, i):
    pass

@pytest.mark.parametrize("i", range(6))
def test_alone(i):
    pass
'''


def test_a_group_runs_on_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_grouped.py").write_text(TESTS)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-v", "-n", "3", "--dist", "loadgroup", "-p",
                           "no:cacheprovider", "-p", "no:randomly", str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    ran = re.findall(r"\[(gw\d+)\] .*PASSED \S*::(test_\w+)\[", proc.stdout)
    assert len(ran) == 12, proc.stdout[-3000:]
    assert len({worker for worker, test in ran if test == "test_reads_the_shared_state"}) == 1
