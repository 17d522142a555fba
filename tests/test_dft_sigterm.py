"""A driver stopped with SIGTERM terminates the code it is running (no orphaned mpirun/pw.x computing on)."""
import os
import signal
import subprocess
import sys
import textwrap
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run_driver(tmp_path, install_handler: bool) -> tuple[int, int]:
    pidfile = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from ase_wannierml.dft import codes
        if {install_handler}:
            codes.unwind_on_sigterm()
        cmd = [sys.executable, "-c", "import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)"]
        codes._run_group(cmd, Path("."), None, None, None, dict(__import__("os").environ), 300.0)
    """)
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.05)
    child = int(pidfile.read_text())
    driver.send_signal(signal.SIGTERM)
    code = driver.wait(timeout=30)
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.05)
    return code, child


def test_sigterm_terminates_running_code(tmp_path):
    code, child = _run_driver(tmp_path, install_handler=True)
    assert code == 143
    assert not _alive(child)


def test_without_handler_the_code_is_orphaned(tmp_path):
    """The failure the handler exists for (the default SIGTERM kills only the driver)."""
    code, child = _run_driver(tmp_path, install_handler=False)
    try:
        assert code == -signal.SIGTERM
        assert _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
