"""A plugin's third-party requirements, parsed with `packaging` and refused where the build cannot honour them.

The build resolves requirements into wheels on the host (pip, the host's own index configuration) and
installs them in the image with no network, from those wheels only. So a requirements.txt line is either a
plain requirement (`name[extras] specifier ; marker`, parsed by `packaging.requirements.Requirement`, the
marker kept for pip to evaluate) or refused with one line naming file:line and what to do: nested and
constraint files (`-r`, `-c`), editables (`-e`), index options (`-i`, `--extra-index-url`, `-f`), per-line
options (`--hash`), direct URLs (`name @ https://...`, `git+...`, a path), and names ending in an archive
extension (`evil-1.0.tar.gz`, `x.whl`: valid PEP 508 names, but pip reads them as a local file and would
build it on the host). Nothing is silently dropped.
pyproject's `[project].dependencies` are PEP 508 strings already; the same checks apply to each.
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from sysops.core.names import shown
from sysops.errors import PluginDefinitionError

#: pip's comment rule: `#` at the start of a line or after whitespace (a URL's `#egg=` is not a comment).
_COMMENT = re.compile(r"(^|\s+)#.*$")

_FLAT = "list each requirement in this requirements.txt itself"
#: What to do instead of each pip option, by the option's spellings.
_OPTION_ADVICE: dict[tuple[str, ...], str] = {
    ("-r", "--requirement"): f"nested requirement files are not followed: {_FLAT}",
    ("-c", "--constraint"): f"constraint files are not supported: {_FLAT}, pinned (name==version)",
    ("-e", "--editable"): "editable installs are not supported: put the code in the plugin directory "
    "(it ships with the plugin) or require a released version by name",
    ("-i", "--index-url", "--extra-index-url", "--no-index", "-f", "--find-links", "--trusted-host"): "index "
    "options are not supported here: wheels are fetched with the host's pip configuration (pip.conf or "
    "PIP_INDEX_URL); remove the line",
    ("--hash",): "hash-checking is not supported: pin the version (name==version) instead",
}
_OTHER_OPTION = (
    "pip options are not supported: remove it; a line holds one requirement (name[extras] specifier ; marker)"
)
_URL_ADVICE = (
    "direct URL and path requirements are not supported: require a released version by name, or put the "
    "code in the plugin directory"
)
#: What pip takes for an archive file rather than a name (pip's ARCHIVE_EXTENSIONS).
_ARCHIVE_EXTENSIONS = (
    ".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tlz", ".tar.lz", ".tar.lzma",
)  # fmt: skip
_ARCHIVE_ADVICE = (
    "a name ending in an archive extension is read by pip as a local file, built on the host: require a "
    "released version by name (name==version), or put the code in the plugin directory"
)
_REQUIREMENT_FORM = "a requirement is name[extras] specifier ; marker (PEP 508), e.g. requests>=2.31"


def _option_advice(option: str) -> str:
    name = option.split("=", 1)[0]
    for spellings, advice in _OPTION_ADVICE.items():
        # "-rother.txt" is "-r other.txt" to pip: short options may be glued to their value.
        if name in spellings or any(len(short) == 2 and name.startswith(short) for short in spellings):
            return advice
    return _OTHER_OPTION


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each logical line: comments removed, backslash continuations joined."""
    lines: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        line = _COMMENT.sub("", raw)
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        joined = (pending + line).strip()
        pending = ""
        if joined:
            lines.append((start, joined))
    if pending.strip():
        lines.append((start, pending.strip()))
    return lines


def _why_refused(line: str) -> str:
    """Why one requirement string cannot be honoured, or "" when it can."""
    if line.startswith("-"):
        return _option_advice(line.split()[0])
    options = [word for word in line.split() if word.startswith("--")]
    if options:
        return f"{options[0].split('=', 1)[0]}: {_option_advice(options[0])}"
    try:
        requirement = Requirement(line)
    except InvalidRequirement as exc:
        if "://" in line or line.startswith((".", "/", "~")) or line.lower().endswith(_ARCHIVE_EXTENSIONS):
            return _URL_ADVICE
        reason = (str(exc).splitlines() or ["unparsable"])[0][:100]
        return f"not a valid requirement ({reason}): {_REQUIREMENT_FORM}"
    if requirement.url:
        return _URL_ADVICE
    if requirement.name.lower().endswith(_ARCHIVE_EXTENSIONS):
        return _ARCHIVE_ADVICE
    return ""


def parse_requirements_txt(path: Path, text: str) -> list[str]:
    """The requirements of a requirements.txt, each normalised by packaging (markers kept), or refused."""
    requirements: list[str] = []
    for number, line in _logical_lines(text):
        why = _why_refused(line)
        if why:
            raise PluginDefinitionError(f"{path}:{number}: {shown(line, 80)} is refused: {why}")
        requirements.append(str(Requirement(line)))
    return requirements


def check_dependencies(pyproject: Path, dependencies: list[str]) -> list[str]:
    """pyproject's [project].dependencies, each normalised by packaging (markers kept), or refused."""
    requirements: list[str] = []
    for index, dependency in enumerate(dependencies):
        why = _why_refused(dependency.strip())
        if why:
            raise PluginDefinitionError(
                f"{pyproject}: [project].dependencies[{index}] {shown(dependency, 80)} is refused: {why}",
                hint="[project].dependencies must be a list of requirement strings",
            )
        requirements.append(str(Requirement(dependency)))
    return requirements
