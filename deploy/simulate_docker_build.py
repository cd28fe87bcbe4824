#!/usr/bin/env python3
"""Runs the Dockerfile's build stage without Docker, to catch a broken image
build where no Docker engine runs (CI, the development machines).

It interprets the instructions of the first stage of the Dockerfile in a
temporary directory standing in for the image's WORKDIR:

- `COPY src... dest` copies from the repository, keeping modification times
  as Docker's COPY does (this is what makes the stub-binary pitfall visible:
  copied sources older than the stub build), and skipping what .dockerignore
  leaves out of the build context (target/, .git; simple patterns only);
- `RUN cmd` runs `cmd` with bash in that directory, `/usr/local/bin/`
  replaced by a temporary directory;
- `ARG`, `FROM`, `WORKDIR` and `ENV` need nothing here (the host's Rust
  toolchain stands in for the rust image).

At the end both binaries must exist and answer `--help` (with their usage,
once their `main` parses the configuration: not the stub). What it cannot see:
the base images, apt-get in the runtime stage, the USER, the real build
context. tests/tests/compose_file.rs checks those statically.

Takes a few minutes (a release build of every dependency, in the temporary
directory). Usage: python3 deploy/simulate_docker_build.py [--keep]
"""

import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARIES = ["migration-api", "migration-worker"]


def instructions(path):
    """(KEYWORD, arguments) pairs, continuation lines joined."""
    result, pending = [], ""
    with open(path, encoding="utf-8") as file:
        for line in file:
            stripped = line.strip()
            if stripped.startswith("#") or (not pending and not stripped):
                continue
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            pending += stripped
            keyword, _, arguments = pending.partition(" ")
            result.append((keyword.upper(), arguments.strip()))
            pending = ""
    return result


def ignore_patterns():
    patterns = []
    with open(os.path.join(REPO, ".dockerignore"), encoding="utf-8") as file:
        for line in file:
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line.removeprefix("**/").rstrip("/"))
    return patterns


def ignored(relative, patterns):
    parts = relative.split(os.sep)
    for pattern in patterns:
        if fnmatch.fnmatch(relative, pattern) or any(fnmatch.fnmatch(p, pattern) for p in parts):
            return True
    return False


def copy(arguments, workdir, patterns):
    *sources, destination = arguments.split()
    if any(source.startswith("--") for source in sources):
        raise SystemExit(f"unsupported COPY flags in the build stage: {arguments}")
    for source in sources:
        origin = os.path.join(REPO, source)
        if ignored(source, patterns) or not os.path.exists(origin):
            raise SystemExit(f"COPY {source}: not in the build context")
        if destination.endswith("/") or len(sources) > 1:
            target = os.path.join(workdir, destination, os.path.basename(source.rstrip("/")))
        else:
            target = os.path.join(workdir, destination)
        if os.path.isdir(origin):
            def skip(directory, names):
                base = os.path.relpath(directory, REPO)
                return [n for n in names if ignored(os.path.normpath(os.path.join(base, n)), patterns)]
            shutil.copytree(origin, target, ignore=skip, dirs_exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(origin, target)


def main():
    keep = "--keep" in sys.argv[1:]
    root = tempfile.mkdtemp(prefix="docker-build-")
    workdir, bindir = os.path.join(root, "src"), os.path.join(root, "bin")
    os.makedirs(workdir)
    os.makedirs(bindir)
    patterns = ignore_patterns()
    try:
        stages = 0
        for keyword, arguments in instructions(os.path.join(REPO, "Dockerfile")):
            if keyword == "FROM":
                stages += 1
                if stages > 1:
                    break
            elif keyword == "COPY":
                print(f"COPY {arguments}", flush=True)
                copy(arguments, workdir, patterns)
            elif keyword == "RUN":
                command = arguments.replace("/usr/local/bin/", bindir + "/")
                print(f"RUN {command}", flush=True)
                subprocess.run(["bash", "-euc", command], cwd=workdir, check=True)
            elif keyword not in ("ARG", "WORKDIR", "ENV"):
                raise SystemExit(f"unsupported instruction in the build stage: {keyword}")
        for binary in BINARIES:
            path = os.path.join(bindir, binary)
            help_text = subprocess.run([path, "--help"], check=True, capture_output=True,
                                       text=True).stdout
            # A binary that parses the configuration prints its usage; an
            # empty answer means cargo kept the stub `fn main() {}`.
            crate = binary.removeprefix("migration-")
            with open(os.path.join(REPO, crate, "src", "main.rs"), encoding="utf-8") as file:
                parses_config = "Config::from_args_or_exit" in file.read()
            if parses_config and "Usage:" not in help_text:
                raise SystemExit(f"{binary} --help prints no usage: the stub binary was kept")
            print(f"ok: {binary} built and answers --help")
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
