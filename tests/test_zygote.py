"""The suite's zygote (helpers/zygote.py): its children are processes of their own, as a fresh interpreter's are."""
import json
import os
import signal
import sys

from helpers.train import ROOT
from helpers.zygote import ZYGOTE

SCRIPT = str(ROOT / "tests" / "apps" / "introspect.py")


def test_a_child_has_its_argv_cwd_environment_output_and_exit_status(tmp_path):
    env = {**os.environ, "ZYGOTE_TEST": "x", "PYTHONPATH": f"{tmp_path}{os.pathsep}/elsewhere"}
    proc = ZYGOTE.run([sys.executable, SCRIPT, "3", "--flag"], cwd=tmp_path, env=env)
    seen = json.loads(proc.stdout)
    assert proc.returncode == 3 and proc.stderr == "to stderr\n"
    assert seen["argv"] == [SCRIPT, "3", "--flag"] and seen["cwd"] == str(tmp_path) and seen["env"] == "x"
    assert seen["path"] == [str(ROOT / "tests" / "apps"), str(tmp_path), "/elsewhere"]  # as python builds sys.path
    assert seen["main"] == "__main__" and seen["pid"] not in (os.getpid(), ZYGOTE._proc.pid)


def test_a_child_runs_a_module_or_code_as_python_m_and_c_do(tmp_path):
    (tmp_path / "greet.py").write_text("import sys; print('module', sys.argv[1:], __name__); sys.exit(4)")
    proc = ZYGOTE.run([sys.executable, "-m", "greet", "a"], cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (4, "module ['a'] __main__\n"), proc.stderr
    proc = ZYGOTE.run([sys.executable, "-c", "import sys; print(sys.argv, __name__)", "b"], cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "['-c', 'b'] __main__\n"), proc.stderr


def test_kill_9_reaches_the_child_alone_and_its_session_when_asked(tmp_path):
    for new_session in (False, True):
        proc = ZYGOTE.start([sys.executable, SCRIPT, "sleep"], cwd=tmp_path, capture=True,
                            start_new_session=new_session)
        with os.fdopen(os.dup(proc.pipes[0])) as out:
            seen = json.loads(out.readline())  # it runs: it has said who it is and sleeps
        os.killpg(proc.pid, signal.SIGKILL) if new_session else proc.kill()
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL and seen["pid"] == proc.pid
        assert (seen["sid"] == proc.pid) is new_session
    assert ZYGOTE._proc.poll() is None  # the zygote outlives its children
