"""Every pin in requirements.lock and requirements-dev.lock is inside what its dependants declare (make check-deps).

`pip check` only looks at the requirements in force: it would not see that `limits` declares `redis<8` for its
`redis` extra while the locks pin redis 8.1 and the service uses that extra's storage without naming it. This
checks, for the interpreter it runs on (markers evaluated here), with the installed distributions' metadata:

- the venv holds exactly the development lock's versions, and the runtime lock's pins are the development lock's;
- pyproject.toml's requirements (runtime, and `dev` for the development lock) are met by the lock's pins;
- every requirement a pinned distribution declares, of its base or of an extra that something requests, names a
  package the lock pins, at a version the specifier allows;
- every requirement a pinned distribution declares for any other extra, when it names a package the lock pins,
  allows that pin: using the extra later must not need another version.

Prints one line per problem and exits 1, or prints a summary and exits 0.
"""

from __future__ import annotations

import importlib.metadata
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
OWN_DEVELOPMENT_EXTRAS = frozenset({"dev", "develop", "test", "tests", "testing", "docs", "doc", "lint"})
LOCKS = (("requirements.lock", False), ("requirements-dev.lock", True))  # (file, includes the dev extra)


@dataclass(frozen=True)
class Dist:
    """What the check needs of one distribution's metadata: its Requires-Dist lines and its Provides-Extra names."""

    requires: tuple[str, ...]
    extras: tuple[str, ...]


def applies(requirement: Requirement, extra: str = "", environment: dict[str, str] | None = None) -> bool:
    """Whether a requirement is in force on this interpreter, for `extra` ("" = the distribution without extras)."""
    return requirement.marker is None or requirement.marker.evaluate({**(environment or {}), "extra": extra})


def read_lock(path: Path, environment: dict[str, str] | None = None) -> dict[str, Version]:
    """The pins of a pip-format lock (uv pip compile's: `name==version ; marker \\`, `--hash` lines, comments) that
    apply on this interpreter."""
    pins: dict[str, Version] = {}
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].rstrip().removesuffix("\\").strip()
        if not line or line.startswith(("#", "-")):
            continue
        requirement = Requirement(line)
        if not applies(requirement, environment=environment):
            continue
        (specifier,) = requirement.specifier  # a lock pins with exactly one `==`
        if specifier.operator != "==":
            raise ValueError(f"{path.name}: {line!r} is not an exact pin")
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise ValueError(f"{path.name}: {name} is pinned twice for this interpreter")
        pins[name] = Version(specifier.version)
    return pins


def check_requirements(
    label: str,
    pins: dict[str, Version],
    metadata: Callable[[str], Dist],
    roots: Iterable[str],
    environment: dict[str, str] | None = None,
) -> list[str]:
    """The problems of one lock: `roots` are the project's own requirements (with the extras they request)."""
    problems: list[str] = []

    def meets(requirement: Requirement, by: str, needed: bool) -> None:
        name = canonicalize_name(requirement.name)
        if name not in pins:
            if needed:
                problems.append(f"{label}: {by} requires {requirement}, and {name} is not in the lock")
            return
        if not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{label}: {by} requires {requirement}, but the lock pins {name}=={pins[name]}")

    # Extras requested of each pinned distribution: by the project, or by a pinned distribution's requirement in force.
    requested: dict[str, set[str]] = {name: set() for name in pins}
    project = [Requirement(text) for text in roots]
    for requirement in project:
        if applies(requirement, environment=environment):
            requested.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    declared = {name: metadata(name) for name in pins}
    changed = True
    while changed:  # an extra can request further extras (sqlalchemy[aiosqlite] asks for sqlalchemy[asyncio])
        changed = False
        for name, dist in declared.items():
            for text in dist.requires:
                requirement = Requirement(text)
                if any(applies(requirement, extra, environment) for extra in ["", *requested[name]]):
                    target = requested.setdefault(canonicalize_name(requirement.name), set())
                    if not requirement.extras <= target:
                        target.update(requirement.extras)
                        changed = True

    for requirement in project:
        if applies(requirement, environment=environment):
            meets(requirement, "pyproject.toml", needed=True)
    for name, dist in sorted(declared.items()):
        by = f"{name}=={pins[name]}"
        unknown = requested[name] - {canonicalize_name(extra) for extra in dist.extras}
        for extra in sorted(unknown):
            problems.append(f"{label}: {by} is asked for an extra it does not declare: [{extra}]")
        for text in dist.requires:
            try:
                requirement = Requirement(text)
            except InvalidRequirement as error:
                problems.append(f"{label}: {by} declares an unreadable requirement {text!r}: {error}")
                continue
            in_force = [extra for extra in ["", *sorted(requested[name])] if applies(requirement, extra, environment)]
            if in_force:
                meets(requirement, by if in_force == [""] else f"{by} (extra [{in_force[-1]}], in use)", needed=True)
                continue
            # For an extra nobody asks for: only a package the lock pins anyway has to fit. A package's own
            # development extras (its test runner, its docs tools) are never ours to use, so they are not held to it.
            for extra in dist.extras:
                if canonicalize_name(extra) in OWN_DEVELOPMENT_EXTRAS:
                    continue
                if applies(requirement, extra, environment):
                    meets(requirement, f"{by} (extra [{extra}])", needed=False)
                    break
    return problems


def installed(name: str) -> Dist:
    """The metadata of the distribution `name` as installed next to this interpreter."""
    dist = importlib.metadata.distribution(name)
    return Dist(tuple(dist.requires or ()), tuple(dist.metadata.get_all("Provides-Extra") or ()))


def main() -> int:
    environment = default_environment()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime_roots = list(project["dependencies"])
    dev_roots = runtime_roots + list(project["optional-dependencies"]["dev"])
    locks = {file: read_lock(ROOT / file, environment) for file, _ in LOCKS}
    runtime, dev = locks["requirements.lock"], locks["requirements-dev.lock"]

    problems: list[str] = []
    for name, version in sorted(runtime.items()):
        if dev.get(name) != version:
            problems.append(
                f"requirements.lock pins {name}=={version}, requirements-dev.lock {dev.get(name) or 'nothing'}"
            )
    for name, version in sorted(dev.items()):
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}=={version} (requirements-dev.lock) is not installed: run make install")
            continue
        if Version(have) != version:
            problems.append(f"{name} {have} is installed, requirements-dev.lock pins {version}: run make install")
    if not problems:  # the metadata read below is that of the installed versions, which are now the pinned ones
        problems += check_requirements("requirements.lock", runtime, installed, runtime_roots, environment)
        problems += check_requirements("requirements-dev.lock", dev, installed, dev_roots, environment)
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_pins: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    python = environment["python_full_version"]
    print(f"check_pins: {len(runtime)} runtime and {len(dev)} development pins fit what they declare (Python {python})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
