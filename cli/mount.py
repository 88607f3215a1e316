"""`modelstore mount` and `modelstore umount`"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from modelstore.cli.app import App, pass_app

MOUNT_EPILOG = """\b
Examples:
  modelstore mount /mnt/models            # returns once the mount is ready
  modelstore mount -f /mnt/models         # stays in the foreground (Ctrl-C unmounts)
\b
Then point each runtime at its folder:
  export HF_HUB_CACHE=/mnt/models/huggingface HF_HUB_OFFLINE=1
  export OLLAMA_MODELS=/mnt/models/ollama OLLAMA_NOPRUNE=1
  LM Studio: models folder = /mnt/models/lmstudio
  llama-server --models-dir /mnt/models/llamacpp
  Jan: ln -s /mnt/models/jan <Jan data folder>/llamacpp/models  (the old folder moved aside)
\b
Models added or removed while mounted show up within a second, without remounting.
--links presents files that are one whole blob as symlinks to the store's own files, so reads
skip FUSE entirely (native speed). Use it only where the runtime can see the store's path: not
for a runtime in a container that sees only the mount.
"""


def _me() -> str:
    """How to run this modelstore again: its name where the shell finds this one, else its path
    (a venv's modelstore that is not on PATH)."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) != "modelstore":
        return "modelstore"
    on_path = shutil.which("modelstore")
    return "modelstore" if on_path and os.path.samefile(on_path, argv0) else os.path.abspath(argv0)


@click.command(epilog=MOUNT_EPILOG)
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option("-f", "--foreground", is_flag=True, help="Serve in this process until unmounted or interrupted.")
@click.option("--allow-other", is_flag=True,
              help="Let other users (a runtime's service account) read the mount; needs "
                   "user_allow_other in /etc/fuse.conf unless run as root.")
@click.option("--links", is_flag=True, help="Show one-blob files as symlinks into the store (see below).")
@click.option("--fuse-debug", is_flag=True, hidden=True)
@click.option("--ready-fd", type=int, hidden=True)
@pass_app
def mount(app: App, mountpoint: Path, foreground: bool, allow_other: bool, links: bool, fuse_debug: bool,
          ready_fd: int | None) -> None:
    """Mount the store read-only with a folder per runtime: huggingface/, ollama/, lmstudio/,
    llamacpp/, jan/ and store/."""
    from modelstore.fusefs.mount import MountOptions, check_mountpoint, pid_file, run_mount

    mountpoint = mountpoint.absolute()
    options = MountOptions(allow_other=allow_other, links=links)
    if foreground:
        pid_path = pid_file(app.home, mountpoint)

        def ready() -> None:
            try:
                pid_path.parent.mkdir(exist_ok=True)
                pid_path.write_text(str(os.getpid()))
            except OSError:  # umount then just does not wait for this process
                pass
            if ready_fd is not None:
                os.write(ready_fd, b"ready\n")
                os.close(ready_fd)
            else:
                click.echo(f"mounted {mountpoint}; Ctrl-C or `modelstore umount {shlex.quote(str(mountpoint))}` unmounts",
                           err=True)

        try:
            with app.store() as store:
                run_mount(store, mountpoint, options, on_ready=ready, debug=fuse_debug)
        finally:
            try:
                if pid_path.read_text() == str(os.getpid()):  # a later mount may have taken the place
                    pid_path.unlink()
            except OSError:
                pass
        return

    with app.store():
        pass  # a missing store is reported here, not by the background process
    check_mountpoint(mountpoint, allow_other)
    _mount_in_background(app, mountpoint, allow_other, links)


def _mount_in_background(app: App, mountpoint: Path, allow_other: bool, links: bool) -> None:
    from modelstore.store.errors import ModelstoreError

    log_path = app.home / "mount.log"
    read_end, write_end = os.pipe()
    args = [sys.executable, "-m", "modelstore.cli", "--home", str(app.home), "mount", "-f", str(mountpoint),
            "--ready-fd", str(write_end)]
    args += ["--allow-other"] if allow_other else []
    args += ["--links"] if links else []
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(write_end,),
                                start_new_session=True)
    os.close(write_end)
    deadline = time.monotonic() + 60
    ready = b""
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([read_end], [], [], 0.2)[0]:
            chunk = os.read(read_end, 64)
            ready += chunk
            if b"ready" in ready or not chunk:
                break
    os.close(read_end)
    if b"ready" not in ready:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise ModelstoreError(f"the mount did not come up: {' / '.join(tail) or 'no output'} (log: {log_path})")
    click.echo(f"mounted {mountpoint} (pid {proc.pid}, log {log_path}); unmount with: "
               f"{shlex.quote(_me())} umount {shlex.quote(str(mountpoint))}")


@click.command(epilog="\b\nExample:\n  modelstore umount /mnt/models")
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option("--lazy", is_flag=True, help="Detach now even if files are open; finish when they close.")
def umount(mountpoint: Path, lazy: bool) -> None:
    """Unmount a modelstore mount (the serving process then exits)."""
    from modelstore.fusefs.mount import running_mounts, serving_pid
    from modelstore.store.errors import Busy, ModelstoreError, UsageError

    mountpoint = Path(os.path.realpath(mountpoint))  # a link to the mount point, a trailing slash
    if not os.path.ismount(mountpoint):
        raise UsageError(f"{mountpoint} is not mounted")
    if str(mountpoint) not in {os.path.realpath(where) for _, where in running_mounts()}:
        raise UsageError(f"{mountpoint} is not a modelstore mount; leaving it alone")
    serving = None if lazy else serving_pid(mountpoint)  # lazily, it serves on the files still open
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, "-u"] + (["-z"] if lazy else []) + [str(mountpoint)] if tool else \
        ["umount"] + (["-l"] if lazy else []) + [str(mountpoint)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        reason = result.stderr.strip() or f"{cmd[0]} failed"
        if "busy" in reason.lower():
            raise Busy(f"cannot unmount {mountpoint}: {reason} (files are open; close them or use --lazy)")
        raise ModelstoreError(f"cannot unmount {mountpoint}: {reason}")
    deadline = time.monotonic() + 10  # the store is closed once the serving process is gone
    while (os.path.ismount(mountpoint) or (serving and _alive(serving))) and time.monotonic() < deadline:
        time.sleep(0.05)
    if serving and _alive(serving):
        click.echo(f"warning: the mount's process {serving} is still running", err=True)
    click.echo(f"unmounted {mountpoint}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has let go of everything
