"""Fixtures of the docker tier: the stub image.

The stub image is a busybox root filesystem with the stand-in entrypoint and
fake `claude`/`opencode` from tests/stub_image/. It is imported with
`docker import` (no registry needed) and rebuilt whenever those files change.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail

STUB_SOURCE_DIR = Path(__file__).resolve().parent.parent / "stub_image"
STUB_REPOSITORY = "llm-docker-stub"
BUSYBOX_PATH = Path("/bin/busybox")  # Debian's busybox-static puts a static binary here
STUB_DIRECTORIES = (
    "bin", "etc", "home", "root", "tmp", "usr/bin", "usr/local/bin", "var/run",
    "proc", "sys", "dev",
)  # fmt: skip


def _stub_tag() -> str:
    digest = hashlib.sha256()
    for path in sorted(STUB_SOURCE_DIR.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{STUB_REPOSITORY}:{digest.hexdigest()[:12]}"


def _add_file(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    archive.addfile(info, io.BytesIO(data))


def _add_symlink(archive: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    archive.addfile(info)


def _stub_rootfs(busybox: bytes, applets: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for directory in STUB_DIRECTORIES:
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            archive.addfile(info)
        _add_file(archive, "bin/busybox", busybox, 0o755)
        for applet in applets:
            if applet != "busybox":
                _add_symlink(archive, f"bin/{applet}", "busybox")
        _add_file(archive, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _add_file(archive, "etc/group", b"root:x:0:\n")
        entrypoint = (STUB_SOURCE_DIR / "entrypoint.sh").read_bytes()
        fake_tool = (STUB_SOURCE_DIR / "fake-tool.sh").read_bytes()
        _add_file(archive, "usr/local/bin/llm-docker-entrypoint", entrypoint, 0o755)
        _add_file(archive, "usr/local/bin/fake-tool", fake_tool, 0o755)
        _add_symlink(archive, "usr/local/bin/claude", "fake-tool")
        _add_symlink(archive, "usr/local/bin/opencode", "fake-tool")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def stub_image(docker_env: dict[str, str]) -> str:
    """Return the tag of the stub image, building it when it is missing."""
    tag = _stub_tag()
    inspect = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, env=docker_env, check=False
    )
    if inspect.returncode == 0:
        return tag

    if not BUSYBOX_PATH.is_file():
        skip_or_fail(f"{BUSYBOX_PATH} not found: install busybox-static to build the stub image")
    applets = subprocess.run(
        [str(BUSYBOX_PATH), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    rootfs = _stub_rootfs(BUSYBOX_PATH.read_bytes(), applets)
    subprocess.run(
        [
            "docker", "import",
            "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin",
            "--change", 'ENTRYPOINT ["/usr/local/bin/llm-docker-entrypoint"]',
            "--change", 'CMD ["/bin/sh"]',
            "--change", "LABEL llm-docker.stub=true",
            "-", tag,
        ],
        input=rootfs,
        capture_output=True,
        env=docker_env,
        check=True,
    )  # fmt: skip
    return tag
