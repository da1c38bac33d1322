#!/usr/bin/env python3
"""Build the production install the way Heroku lays out a slug, and report its compressed size.

    .venv/bin/python scripts/deploy/slug_size.py [--json docs/perf/slug.json]    # requirements.txt
    .venv/bin/python scripts/deploy/slug_size.py --requirements requirements-ml.txt --keep

What goes into the folder (a stand-in for Heroku's /app):
- every file git tracks (what `git push heroku main` sends), minus what .slugignore names;
- .heroku/python: this machine's CPython runtime (stdlib, libpython, the interpreter) and a
  clean `pip install --target` of the requirements file, from PyPI, nothing from .venv;
- staticfiles/: `manage.py collectstatic` run with the production settings, as the buildpack does.

Then it loads every shipped model and the identifier with that install alone, each through its
LiteRT export (so a slug that fits but cannot classify fails too, and so does one whose serving
imports TensorFlow, Keras, scikit-learn or matplotlib), tars and gzips the folder like a slug,
and prints the compressed size against Heroku's 500 MB limit and issue 15's 350 MB target for
the web and classification dynos. Exit status 0 when it is within the target, 1 when it is not.
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MB = 500  # Heroku's hard limit on the compressed slug
TARGET_MB = 350  # issue 15: the slug the web and classification dynos run


def tracked_files(include_uncommitted: bool = False) -> list[str]:
    command = ["git", "ls-files", "-z", "--cached"]
    if include_uncommitted:
        command += ["--others", "--exclude-standard"]
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True).stdout
    return [name for name in out.decode().split("\0") if name]


def slugignore_patterns() -> list[str]:
    path = ROOT / ".slugignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line.lstrip("/").rstrip("/") for line in lines if line and not line.startswith("#")]


def ignored(name: str, patterns: list[str]) -> bool:
    parts = name.split("/")
    for pattern in patterns:
        if fnmatch.fnmatch(name, pattern) or any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
        if name.startswith(pattern + "/"):
            return True
    return False


def copy_source(app: Path, include_uncommitted: bool = False) -> int:
    patterns = slugignore_patterns()
    count = 0
    for name in tracked_files(include_uncommitted):
        source = ROOT / name
        if ignored(name, patterns) or not source.is_file():
            continue
        target = app / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        count += 1
    return count


def copy_runtime(python_home: Path) -> Path:
    """This interpreter's CPython (Heroku ships its own build of the same version)."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (python_home / "bin").mkdir(parents=True)
    shutil.copy2(Path(sys.base_prefix) / "bin" / version, python_home / "bin" / version)
    (python_home / "bin" / "python").symlink_to(version)
    (python_home / "lib").mkdir()
    for library in (base / "lib").glob("libpython*.so*"):
        shutil.copy2(library, python_home / "lib" / library.name, follow_symlinks=True)
    stdlib = Path(sysconfig.get_paths(vars={"base": str(base), "platbase": str(base)})["stdlib"])
    shutil.copytree(
        stdlib,
        python_home / "lib" / version,
        ignore=shutil.ignore_patterns("site-packages", "test", "tests", "__pycache__", "idle_test"),
        symlinks=True,
    )
    site = python_home / "lib" / version / "site-packages"
    site.mkdir()
    return site


def run(command: list[str], **kwargs) -> None:
    print("   $", " ".join(str(part) for part in command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def largest(site: Path, count: int = 8) -> list[tuple[str, int]]:
    sizes = [(entry.name, folder_bytes(entry) if entry.is_dir() else entry.stat().st_size) for entry in site.iterdir()]
    return sorted(sizes, key=lambda item: -item[1])[:count]


def largest_files(app: Path, count: int = 8) -> list[tuple[str, int]]:
    """The largest files of the app itself (models, data), outside the installed packages."""
    python = app / ".heroku"
    files = [f for f in app.rglob("*") if f.is_file() and python not in f.parents]
    return [(str(f.relative_to(app)), f.stat().st_size) for f in sorted(files, key=lambda f: -f.stat().st_size)[:count]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requirements", default="requirements.txt", help="requirements file Heroku installs")
    parser.add_argument("--build-dir", help="folder to build in (default: a fresh temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the build folder and slug.tgz")
    parser.add_argument("--limit-mb", type=float, default=LIMIT_MB)
    parser.add_argument("--target-mb", type=float, default=TARGET_MB)
    parser.add_argument("--no-smoke", action="store_true", help="skip loading the shipped models")
    parser.add_argument("--no-static", action="store_true", help="skip collectstatic")
    parser.add_argument("--include-uncommitted", action="store_true",
                        help="also copy untracked, not ignored files (Heroku only gets commits)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    requirements = (ROOT / args.requirements).resolve()
    build = Path(args.build_dir).resolve() if args.build_dir else Path(tempfile.mkdtemp(prefix="slug-"))
    if build.exists() and any(build.iterdir()):
        shutil.rmtree(build)
    build.mkdir(parents=True, exist_ok=True)
    app = build / "app"
    started = time.monotonic()
    try:
        print(f"==> source (git ls-files minus .slugignore) into {app}")
        n_files = copy_source(app, args.include_uncommitted)
        print(f"==> Python runtime {sys.version.split()[0]} into {app / '.heroku/python'}")
        site = copy_runtime(app / ".heroku" / "python")
        print(f"==> clean install of {requirements.name}")
        run([sys.executable, "-m", "pip", "install", "--quiet", "--progress-bar", "off", "--disable-pip-version-check",
             "--no-warn-script-location", "--target", str(site), "-r", str(requirements)])

        env = {
            "PATH": f"{site / 'bin'}:/usr/bin:/bin",
            "PYTHONPATH": str(site),
            "PYTHONNOUSERSITE": "1",
            "HOME": str(build),
            "DJANGO_ENV": "production",
            "DJANGO_SECRET_KEY": "slug-build-only-" + "x" * 50,
            "DJANGO_ALLOWED_HOSTS": "example.com",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            # Heroku exposes config vars to the build; collectstatic never talks to the bucket.
            "AWS_STORAGE_BUCKET_NAME": "slug-build",
            "AWS_ACCESS_KEY_ID": "slug-build",
            "AWS_SECRET_ACCESS_KEY": "slug-build",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        base_python = str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")
        n_static = 0
        if not args.no_static:
            print("==> collectstatic with the production settings (whitenoise: compressed, hashed)")
            run([base_python, "-s", "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=app, env=env)
            n_static = sum(1 for f in (app / "staticfiles").rglob("*") if f.is_file())

        if not args.no_smoke:
            print("==> loading every shipped model and the identifier (LiteRT) with this install alone")
            smoke = (
                "import json, pathlib, sys, numpy as np; from ml.predict import Predictor, KERAS\n"
                "from ml.identify import Identifier\n"
                "m = json.loads(pathlib.Path('artifacts/manifest.json').read_text())\n"
                "for name in m['artifacts']:\n"
                "    p = Predictor.load(pathlib.Path('artifacts') / name)\n"
                "    assert p.runtime != KERAS, (name, p.runtime)\n"
                "    s = p.metadata.input_size\n"
                "    r = p.predict_arrays(np.full((1, s, s, 3), 128, np.float32))\n"
                "    assert r.shape == (1, len(p.classes)), r.shape\n"
                "    print('   loaded', name, p.runtime, len(p.classes), 'classes')\n"
                "i = Identifier.load('artifacts/identifier')\n"
                "assert i.runtime != KERAS, i.runtime\n"
                "[signals] = i.signals(np.full((1, i.input_size, i.input_size, 3), 128, np.float32))\n"
                "print('   loaded identifier', i.runtime, sorted(signals))\n"
                "heavy = sorted({n.split('.')[0] for n in sys.modules} & {'tensorflow', 'keras', 'sklearn', 'matplotlib'})\n"
                "assert not heavy, heavy\n"
            )
            run([base_python, "-s", "-c", smoke], cwd=app, env=env)
        # The checks above leave the app's own bytecode behind; remove it so the figure is the
        # build's, not this script's (site-packages keeps the .pyc files pip compiled).
        for cache in list(app.rglob("__pycache__")):
            if site not in cache.parents:
                shutil.rmtree(cache, ignore_errors=True)

        uncompressed = folder_bytes(app)
        slug = build / "slug.tgz"
        print("==> tar + gzip (what Heroku stores and limits)")
        run(["tar", "-czf", str(slug), "-C", str(build), "app"])
        compressed = slug.stat().st_size
        limit = args.limit_mb * 1_000_000
        figures = {
            "requirements": args.requirements,
            "python": sys.version.split()[0],
            "source_files": n_files,
            "static_files": n_static,
            "uncompressed_mb": round(uncompressed / 1e6, 1),
            "compressed_mb": round(compressed / 1e6, 1),
            "compressed_mib": round(compressed / 2**20, 1),
            "limit_mb": args.limit_mb,
            "fits": compressed < limit,
            "headroom_mb": round((limit - compressed) / 1e6, 1),
            "target_mb": args.target_mb,
            "within_target": compressed <= args.target_mb * 1_000_000,
            "largest_source_files_mb": {name: round(size / 1e6, 1) for name, size in largest_files(app)},
            "largest_packages_mb": {name: round(size / 1e6, 1) for name, size in largest(site)},
            "build_seconds": round(time.monotonic() - started),
        }
        h.report(figures, args.json)
        verdict = "PASS" if figures["fits"] and figures["within_target"] else "FAIL"
        print(f"{verdict}: slug {figures['compressed_mb']} MB compressed "
              f"({figures['uncompressed_mb']} MB unpacked), limit {args.limit_mb:g} MB, target {args.target_mb:g} MB")
        return 0 if figures["fits"] and figures["within_target"] else 1
    finally:
        if args.keep:
            print(f"(kept {build})")
        else:
            shutil.rmtree(build, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
