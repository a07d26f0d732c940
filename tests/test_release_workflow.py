"""The GitHub workflows, checked offline: against the bundled GitHub-workflow schema, and for
what a broken release would get wrong (publishing from a branch, before the tests, with a
stored password, for one platform, under another image name, or testing something other
than the README's test command). The release's own shell steps run here for real, on a wheel
built from the sources.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import missing, need_tool
from tests.test_changelog import released_versions

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
RELEASE = WORKFLOWS / "release.yml"
IMAGE = "ghcr.io/elevate-import-exporter/elevate-import-exporter"
PACKAGE = "elevate_import_exporter"
TAG_CONDITION = "startsWith(github.ref, 'refs/tags/v')"

Workflow = dict[str, Any]
Job = dict[str, Any]
Step = dict[str, Any]


def load(path: Path) -> Workflow:
    loaded: dict[Any, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as true; GitHub reads it as "on".
    return {("on" if key is True else key): value for key, value in loaded.items()}


def jobs(workflow: Workflow) -> dict[str, Job]:
    found: dict[str, Job] = workflow["jobs"]
    return found


def steps_using(workflow: Workflow, action: str) -> Iterator[tuple[str, Step]]:
    for name, job in jobs(workflow).items():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).split("@")[0] == action:
                yield name, step


def only_step_using(workflow: Workflow, action: str) -> tuple[str, Step]:
    found = list(steps_using(workflow, action))
    assert len(found) == 1, f"{action} is used {len(found)} times"
    return found[0]


def step_named(job: Job, name: str) -> Step:
    for step in job["steps"]:
        if step.get("name") == name:
            return dict(step)
    raise AssertionError(f"no step named {name!r}")


def needs(job: Job) -> set[str]:
    value = job.get("needs", [])
    return {value} if isinstance(value, str) else set(value)


def all_needs(workflow: Workflow, name: str) -> set[str]:
    """The jobs that must have succeeded before ``name`` runs, directly or not."""
    found: set[str] = set()
    todo = needs(jobs(workflow)[name])
    while todo:
        job = todo.pop()
        if job not in found:
            found.add(job)
            todo |= needs(jobs(workflow)[job])
    return found


def resolve_env(text: str, *scopes: Mapping[str, Any]) -> str:
    """``${{ env.NAME }}`` as GitHub fills it in, from the innermost scope outward."""

    def value(match: re.Match[str]) -> str:
        for scope in scopes:
            if match[1] in scope:
                return str(scope[match[1]])
        raise AssertionError(f"env.{match[1]} is not set")

    return re.sub(r"\$\{\{\s*env\.(\w+)\s*\}\}", value, text)


def readme_test_command() -> str:
    """The test command as the README shows it: the `make test` line of its code blocks."""
    in_code = False
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        command = line.split("#", 1)[0].strip()
        if in_code and re.fullmatch(r"make test\b.*", command):
            return command
    raise AssertionError("the README shows no `make test` command in a code block")


def ci_run_apt_packages() -> set[str]:
    """What .ci/run installs with apt-get, its line continuations joined."""
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8").replace("\\\n", " ")
    return apt_packages(script)


def apt_packages(script: str) -> set[str]:
    packages: set[str] = set()
    for line in script.replace("\\\n", " ").splitlines():
        if "apt-get install" in line:
            words = line.split("apt-get install", 1)[1].split(">", 1)[0].split()
            packages |= {word for word in words if not word.startswith("-")}
    return packages


def check_jsonschema() -> str:
    # Installed beside the interpreter by `make setup` (a dev dependency); the PATH may not
    # have the venv.
    beside = Path(sys.executable).parent / "check-jsonschema"
    if beside.exists():
        return str(beside)
    found = shutil.which("check-jsonschema")
    if found is None:
        missing("check-jsonschema is not installed (pip install -e '.[dev]')")
        raise AssertionError("unreachable")
    return found


def run_schema_check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [check_jsonschema(), "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("workflow", [CI, RELEASE], ids=["ci", "release"])
def test_the_workflow_is_valid_by_the_bundled_github_workflow_schema(workflow: Path) -> None:
    result = run_schema_check(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_refuses_a_workflow_with_a_mistake(tmp_path: Path) -> None:
    # Proves the check above can fail: a misspelt key and a permission that does not exist.
    broken = load(RELEASE)
    broken["jobs"]["build"]["step"] = broken["jobs"]["build"].pop("steps")
    broken["jobs"]["pypi"]["permissions"] = {"id-token": "always"}
    path = tmp_path / "release.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = run_schema_check(path)
    assert result.returncode != 0, result.stdout


def test_the_release_runs_on_version_tags_only() -> None:
    workflow = load(RELEASE)
    assert workflow["on"] == {"push": {"tags": ["v*"]}}


def test_every_publishing_job_runs_on_a_tag_after_the_tests() -> None:
    workflow = load(RELEASE)
    test_jobs = {
        name
        for name, job in jobs(workflow).items()
        if job.get("uses") == "./.github/workflows/ci.yml"
    }
    assert len(test_jobs) == 1, "the release runs the CI workflow as one job"
    publishing = {
        only_step_using(workflow, "pypa/gh-action-pypi-publish")[0],
        only_step_using(workflow, "docker/build-push-action")[0],
    } | {
        name
        for name, job in jobs(workflow).items()
        for step in job.get("steps", [])
        if "gh release create" in step.get("run", "")
    }
    assert len(publishing) == 3, publishing
    for name in publishing:
        job = jobs(workflow)[name]
        assert job.get("if") == TAG_CONDITION, f"{name} would publish from any ref"
        assert test_jobs <= all_needs(workflow, name), f"{name} does not wait for the tests"


def test_pypi_is_published_by_trusted_publishing_from_the_pypi_environment() -> None:
    workflow = load(RELEASE)
    name, step = only_step_using(workflow, "pypa/gh-action-pypi-publish")
    job = jobs(workflow)[name]
    assert job["permissions"] == {"id-token": "write"}
    assert job["environment"]["name"] == "pypi"
    assert not {"password", "user"} & set(step.get("with", {})), "no stored token"
    assert "build" in needs(job), "PyPI gets the dists the build job checked"


def test_the_image_is_pushed_for_amd64_and_arm64_under_the_project_name() -> None:
    workflow = load(RELEASE)
    name, build = only_step_using(workflow, "docker/build-push-action")
    job = jobs(workflow)[name]
    uses = [str(step.get("uses", "")).split("@")[0] for step in job["steps"]]
    position = uses.index("docker/build-push-action")
    for before in ("docker/setup-qemu-action", "docker/setup-buildx-action", "docker/login-action"):
        assert before in uses[:position], f"{before} must come before the build"
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["push"] is True
    assert "steps.meta.outputs.tags" in build["with"]["tags"]

    _, meta = only_step_using(workflow, "docker/metadata-action")
    assert meta["id"] == "meta"
    images = resolve_env(meta["with"]["images"], job.get("env", {}), workflow.get("env", {}))
    assert images.strip() == IMAGE

    _, login = only_step_using(workflow, "docker/login-action")
    assert login["with"]["registry"] == "ghcr.io"
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert job["permissions"] == {"contents": "read", "packages": "write"}


def test_each_job_asks_only_for_the_permissions_it_needs() -> None:
    release = load(RELEASE)
    assert release["permissions"] == {}, "nothing by default"
    writes = {
        name: {scope for scope, level in job["permissions"].items() if level == "write"}
        for name, job in jobs(release).items()
    }
    assert {name: scopes for name, scopes in writes.items() if scopes} == {
        only_step_using(release, "pypa/gh-action-pypi-publish")[0]: {"id-token"},
        only_step_using(release, "docker/build-push-action")[0]: {"packages"},
        "github-release": {"contents"},
    }
    ci = load(CI)
    assert ci["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in jobs(ci).values())


def test_every_action_is_pinned_to_a_major_version_or_a_commit() -> None:
    for path in (CI, RELEASE):
        for name, job in jobs(load(path)).items():
            for step in job.get("steps", []):
                uses = step.get("uses")
                if uses is None:
                    continue
                action, _, ref = uses.partition("@")
                assert re.fullmatch(r"v\d+|release/v\d+|[0-9a-f]{40}", ref), (
                    f"{path.name} {name}: {uses} is not pinned to a major version or a SHA"
                )
                assert action.count("/") >= 1


def test_ci_runs_the_readme_test_command_with_ci_true() -> None:
    ci = load(CI)
    (job,) = jobs(ci).values()
    assert job["env"]["CI"] == "true", "tests that need a tool must fail, not skip"
    assert job["steps"][-1]["run"].strip() == readme_test_command()


def test_ci_installs_what_ci_run_installs() -> None:
    ci = load(CI)
    (job,) = jobs(ci).values()
    installed = apt_packages("\n".join(step.get("run", "") for step in job["steps"]))
    assert installed == ci_run_apt_packages()


def test_the_release_tests_with_the_ci_workflow() -> None:
    ci = load(CI)
    assert "workflow_call" in ci["on"], "release.yml calls it"
    assert {"push", "pull_request"} <= set(ci["on"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources, so that the build leaves nothing behind."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for path in REPO.iterdir():
        if path.name.upper().startswith(("LICENSE", "LICENCE", "NOTICE")):
            shutil.copy2(path, source / path.name)
    shutil.copytree(
        REPO / "exporter",
        source / "exporter",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    # Build isolation gets the setuptools pyproject.toml asks for (pip's cache, else PyPI):
    # the venv's own may be older than that.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--wheel-dir",
            str(work / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = (work / "dist").glob("*.whl")
    return built


def test_the_wheel_carries_the_changelogs_newest_version_and_the_whole_package(
    wheel: Path,
) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode("utf-8"))
    assert metadata["Name"] == "elevate-import-exporter"
    assert metadata["Version"] == released_versions()[0]

    package = REPO / "exporter" / PACKAGE
    expected = {
        path.relative_to(package.parent).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    # Every file ships: modules, py.typed when there is one, and data such as openapi.json
    # (a data file not named in package-data would be left out).
    assert {f"{PACKAGE}/__init__.py", f"{PACKAGE}/site/openapi.json"} <= expected
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"


def bash_step(
    step: Step, workdir: Path, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    # GitHub runs `run:` with `bash --noprofile --norc -eo pipefail`.
    return subprocess.run(
        [need_tool("bash"), "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=workdir,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dist_folder(wheel: Path, workdir: Path) -> Path:
    dist = workdir / "dist"
    dist.mkdir(parents=True)
    shutil.copy2(wheel, dist / wheel.name)
    version = wheel.name.split("-")[1]
    # The step checks the sdist is there by name; its content is python -m build's business.
    (dist / f"{PACKAGE}-{version}.tar.gz").write_bytes(b"")
    return dist


def test_the_tag_check_passes_the_matching_tag_and_stops_any_other(
    wheel: Path, tmp_path: Path
) -> None:
    need_tool("unzip")
    step = step_named(jobs(load(RELEASE))["build"], "The tag is the package version")
    dist_folder(wheel, tmp_path)
    version = released_versions()[0]

    matching = bash_step(step, tmp_path, {"GITHUB_REF_NAME": f"v{version}"})
    assert matching.returncode == 0, matching.stdout + matching.stderr

    major, minor, patch = version.split(".")
    for wrong in (f"v{major}.{minor}.{int(patch) + 1}", f"v{version}rc1", version):
        result = bash_step(step, tmp_path, {"GITHUB_REF_NAME": wrong})
        assert result.returncode != 0, f"tag {wrong} passed"
        if wrong.startswith("v"):
            assert f"does not match the package version {version}" in result.stdout


def test_the_github_release_gets_the_dists_and_only_its_versions_changelog_section(
    wheel: Path, tmp_path: Path
) -> None:
    step = step_named(
        jobs(load(RELEASE))["github-release"], "Release with the dists and the CHANGELOG's section"
    )
    dist = dist_folder(wheel, tmp_path / "work")
    shutil.copy2(REPO / "CHANGELOG.md", tmp_path / "work" / "CHANGELOG.md")
    # A stand-in for the gh CLI that writes down what it was asked to do.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    gh = fake_bin / "gh"
    gh.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$GH_ARGS"\n', encoding="utf-8")
    gh.chmod(gh.stat().st_mode | stat.S_IXUSR)
    args_file = tmp_path / "gh-args"

    versions = released_versions()
    for version in (versions[0], versions[-1]):
        result = bash_step(
            step,
            tmp_path / "work",
            {
                "GITHUB_REF_NAME": f"v{version}",
                "GITHUB_REPOSITORY": "elevate-import-exporter/elevate-import-exporter",
                "GH_TOKEN": "unused",
                "GH_ARGS": str(args_file),
                "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
            },
        )
        assert result.returncode == 0, result.stdout + result.stderr
        args = args_file.read_text(encoding="utf-8").splitlines()
        assert args[:2] == ["release", "create"]
        assert args[2] == f"v{version}"
        assert {str(Path("dist") / path.name) for path in dist.iterdir()} <= set(args)

        notes = (tmp_path / "work" / "release-notes.md").read_text(encoding="utf-8")
        assert "### " in notes, f"no subsections in the notes of {version}"
        assert "## [" not in notes, "the notes run into another version's section"
        assert "]: https://" not in notes, "the notes carry the link references"
