#!/usr/bin/env python3
"""Measure the launcher from start to the `docker run` spawn against an engine that answers at once.

Usage: python3 bench/bench_launcher.py [--runs N] [--markdown]

Four measurements, each the median of N runs, side by side with the bare interpreter start
(`python3 -c pass`) on the same interpreter (sys.executable):

- whole process, start to spawn: the time from starting `python3 llmdocker.py claude` until a
  fake `docker` on PATH is executed for `run`. The fake is a bash script that writes
  $EPOCHREALTIME, so the figure includes bash's own start (about 1 ms) and is pessimistic.
- whole process, start to exit: the same run until the launcher exits, which adds the log file
  set-up that happens after the spawn and the fake container's run.
- in process: main() from its call to the engine seam's attach call, with run_command
  replaced by a function that answers at once (module import not included).
- import: `python3 -c "import llmdocker"`.

The `import argparse` reference shows what argparse alone would cost on the same interpreter.
Nothing here talks to a real engine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "llmdocker.py"
DEFAULT_RUNS = 40
VERSION_CODE = "import sys; print(sys.executable, sys.version.split()[0])"
FAKE_DOCKER = """#!/bin/bash
# Fake docker CLI: answers `image inspect` with success, records when `run` is executed.
if [ "$1" = run ]; then echo "$EPOCHREALTIME" > "$BENCH_STAMP"; fi
exit 0
"""


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def time_process(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - start


def time_to_spawn(argv: list[str], env: dict[str, str], cwd: Path, stamp: Path) -> float:
    stamp.unlink(missing_ok=True)
    start = time.time()
    subprocess.run(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True
    )
    return float(stamp.read_text()) - start


def in_process_samples(runs: int, home: Path, project: Path) -> tuple[list[float], list[str]]:
    """Time main() up to the attach call of the engine seam; return samples and the modules
    imported by then that the interpreter had not loaded at start."""
    sys.path.insert(0, str(REPO))
    os.environ["HOME"] = str(home)
    os.chdir(project)
    before = set(sys.modules)
    import llmdocker

    samples: list[float] = []
    imported: list[str] = []
    started: list[float] = []

    def answer_at_once(command: llmdocker.Command) -> llmdocker.CommandResult:
        if command.mode == "attach":
            started.append(time.perf_counter())
            if not imported:
                imported.extend(sorted(set(sys.modules) - before - {"llmdocker"}))
        return llmdocker.CommandResult(0, "sha256:0\n", "")

    llmdocker.run_command = answer_at_once  # type: ignore[assignment]
    for _ in range(runs):
        start = time.perf_counter()
        llmdocker.main(["claude"])
        samples.append(started[-1] - start)
    return samples, imported


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs per measurement")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="llm-docker-bench-") as scratch:
        root = Path(scratch)
        home = root / "home"
        project = home / "Projects" / "app"
        project.mkdir(parents=True)
        bin_dir = root / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "docker"
        fake.write_text(FAKE_DOCKER)
        fake.chmod(0o755)
        stamp = root / "stamp"
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(home),
            "BENCH_STAMP": str(stamp),
            "LANG": "C.UTF-8",
        }
        python = sys.executable
        bare = [python, "-c", "pass"]
        argparse_only = [python, "-c", "import argparse; argparse.ArgumentParser().parse_args([])"]
        launcher = [python, str(LAUNCHER), "claude"]
        # ./cld through its shebang (/usr/bin/env python3, the first python3 on the bench PATH),
        # with the same interpreter started the same way as its baseline.
        env_python = ["/usr/bin/env", "python3", "-c", "pass"]
        env_argparse = ["/usr/bin/env", "python3", *argparse_only[1:]]
        symlink = [str(REPO / "cld")]
        importing = [python, "-c", "import llmdocker"]
        import_env = dict(env, PYTHONPATH=str(REPO))

        time_process(launcher, env, project)  # first run creates ~/.llm-docker

        results: dict[str, list[float]] = {
            "bare": [], "argparse": [], "spawn": [], "exit": [], "import": [],
            "env_bare": [], "env_argparse": [], "symlink_spawn": [],
        }  # fmt: skip
        for _ in range(options.runs):  # interleaved, so load changes hit every column alike
            results["bare"].append(time_process(bare, env, project))
            results["argparse"].append(time_process(argparse_only, env, project))
            results["spawn"].append(time_to_spawn(launcher, env, project, stamp))
            results["exit"].append(time_process(launcher, env, project))
            results["import"].append(time_process(importing, import_env, project))
            results["env_bare"].append(time_process(env_python, env, project))
            results["env_argparse"].append(time_process(env_argparse, env, project))
            results["symlink_spawn"].append(time_to_spawn(symlink, env, project, stamp))

        in_process, imported = in_process_samples(options.runs, home, project)

    bare_ms = median_ms(results["bare"])
    rows = [
        ("`python3 -c pass` (bare interpreter)", bare_ms),
        ("`python3 -c 'import argparse; ArgumentParser().parse_args([])'`",
         median_ms(results["argparse"])),
        ("`python3 -c 'import llmdocker'`", median_ms(results["import"])),
        ("`python3 llmdocker.py claude`, start to `docker run` spawn (compiles the file)",
         median_ms(results["spawn"])),
        ("`python3 llmdocker.py claude`, start to exit (fake container exits at once)",
         median_ms(results["exit"])),
        ("launcher in process: main() to the engine seam's attach", median_ms(in_process)),
    ]  # fmt: skip
    env_bare_ms = median_ms(results["env_bare"])
    shebang_rows = [
        ("`/usr/bin/env python3 -c pass`", env_bare_ms),
        (
            "`/usr/bin/env python3 -c 'import argparse; ...'` (as above)",
            median_ms(results["env_argparse"]),
        ),
        ("`./cld` (shebang), start to `docker run` spawn", median_ms(results["symlink_spawn"])),
    ]
    env_python_version = subprocess.run(
        ["/usr/bin/env", "python3", "-c", VERSION_CODE],
        env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    machine = (
        f"{platform.system()} {platform.release()}, {platform.machine()}, {os.cpu_count()} CPUs"
    )
    command = f"python3 bench/bench_launcher.py --runs {options.runs}"
    if options.markdown:
        print(
            f"Command: `{command}` with {python} (Python {platform.python_version()}), {machine}.\n"
        )
        print("| measurement | median (ms) | x bare |")
        print("|---|---:|---:|")
        for label, value in rows:
            print(f"| {label} | {value:.1f} | {value / bare_ms:.2f} |")
        print(f"\nThrough the shebang, with the first python3 on PATH ({env_python_version}):\n")
        print("| measurement | median (ms) | x bare |")
        print("|---|---:|---:|")
        for label, value in shebang_rows:
            print(f"| {label} | {value:.1f} | {value / env_bare_ms:.2f} |")
        print(
            "\nModules imported before the spawn beyond those loaded at start: "
            + (", ".join(imported) or "none")
            + "."
        )
    else:
        print(f"{command}: {python} (Python {platform.python_version()}), {machine}")
        for label, value in rows:
            print(f"  {value:7.1f} ms  {value / bare_ms:5.2f}x  {label}")
        print(f"  through the shebang ({env_python_version}):")
        for label, value in shebang_rows:
            print(f"  {value:7.1f} ms  {value / env_bare_ms:5.2f}x  {label}")
        print(f"  imported before the spawn: {', '.join(imported) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
