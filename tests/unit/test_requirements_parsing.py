"""A plugin's requirements are parsed with packaging; what the build cannot honour is refused (exit 4), never dropped.

Issue 14 item 4: `-r other.txt` used to be silently dropped. Each refusal is one line naming file:line (or the
pyproject entry) and what to do; environment markers are kept for pip to evaluate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sysops.errors import ExitCode, PluginDefinitionError
from sysops.imaging.image import plugin_requirements


def _requirements_txt(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "requirements.txt").write_text(text)
    return plugin_requirements(tmp_path)


def test_plain_requirements_markers_extras_comments_and_continuations(tmp_path: Path) -> None:
    text = (
        "# tools\n"
        "requests>=2.31  # http\n"
        "\n"
        "rich[jupyter] ==13.7.1\n"
        'tomli>=2; python_version < "3.11"\n'
        "pyyaml \\\n"
        "  >=6.0\n"
        "sysops-sdk==0.1.0\n"  # the SDK is in the base image: left out
    )
    assert _requirements_txt(tmp_path, text) == [
        "requests>=2.31",
        "rich[jupyter]==13.7.1",
        'tomli>=2; python_version < "3.11"',
        "pyyaml>=6.0",
    ]


@pytest.mark.parametrize(
    ("line", "advice"),
    [
        ("-r other.txt", "nested requirement files are not followed"),
        ("--requirement=other.txt", "nested requirement files are not followed"),
        ("-rother.txt", "nested requirement files are not followed"),
        ("-c constraints.txt", "constraint files are not supported"),
        ("-e ./mylib", "editable installs are not supported"),
        ("--editable git+https://example.org/x.git#egg=x", "editable installs are not supported"),
        ("--index-url https://mirror.example/simple", "index options are not supported"),
        ("-i https://mirror.example/simple", "index options are not supported"),
        ("--extra-index-url https://mirror.example/simple", "index options are not supported"),
        ("--find-links ./wheels", "index options are not supported"),
        ("requests==2.31.0 --hash=sha256:abcd", "hash-checking is not supported"),
        ("--pre", "pip options are not supported"),
        ("mylib @ https://example.org/mylib-1.0.tar.gz", "direct URL and path requirements are not supported"),
        ("git+https://example.org/mylib.git", "direct URL and path requirements are not supported"),
        ("./vendor/mylib", "direct URL and path requirements are not supported"),
        ("https://example.org/mylib-1.0-py3-none-any.whl", "direct URL and path requirements are not supported"),
        ("requests>>2", "not a valid requirement"),
    ],
)
def test_what_the_build_cannot_honour_is_refused_naming_file_line_and_what_to_do(
    tmp_path: Path, line: str, advice: str
) -> None:
    with pytest.raises(PluginDefinitionError) as caught:
        _requirements_txt(tmp_path, f"# deps\nrequests>=2\n{line}\n")
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.INVALID_PLUGIN
    assert message.startswith(f"{tmp_path / 'requirements.txt'}:3: ")
    assert advice in message and "\n" not in message


def test_a_continued_line_is_named_by_its_first_line(tmp_path: Path) -> None:
    with pytest.raises(PluginDefinitionError, match=r"requirements.txt:2: .*nested requirement files"):
        _requirements_txt(tmp_path, "requests\n-r \\\n  other.txt\n")


def test_a_url_fragment_is_not_a_comment(tmp_path: Path) -> None:
    with pytest.raises(PluginDefinitionError, match="direct URL"):
        _requirements_txt(tmp_path, "x @ https://example.org/x.zip#sha256=00\n")


def test_pyproject_dependencies_keep_markers_and_refuse_urls(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[project]\ndependencies = ['requests>=2', 'tomli; python_version < \"3.11\"']\n")
    assert plugin_requirements(tmp_path) == ["requests>=2", 'tomli; python_version < "3.11"']
    pyproject.write_text("[project]\ndependencies = ['requests', 'x @ file:///tmp/x']\n")
    with pytest.raises(PluginDefinitionError) as caught:
        plugin_requirements(tmp_path)
    assert str(caught.value).startswith(f"{pyproject}: [project].dependencies[1] 'x @ file:///tmp/x' is refused: ")
    assert "direct URL" in str(caught.value)


@pytest.mark.parametrize(
    "name",
    ["evil-1.0.tar.gz", "foo.whl", "x.zip", "x.tar", "x.TGZ", "x.tar.bz2", "x.tbz", "x.tar.xz", "x.txz", "x.tlz",
     "x.tar.lz", "x.tar.lzma", "evil-1.0.tar.gz[extra]>=1 ; python_version > '3'"],
)  # fmt: skip
def test_a_name_pip_would_read_as_a_local_archive_is_refused(tmp_path: Path, name: str) -> None:
    """Valid PEP 508 names, but pip takes them for a file relative to its working directory and builds it."""
    with pytest.raises(PluginDefinitionError) as caught:
        _requirements_txt(tmp_path, f"humanize>=4.0\n{name}\n")
    assert str(caught.value).startswith(f"{tmp_path / 'requirements.txt'}:2: ")
    assert "archive extension" in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == ExitCode.INVALID_PLUGIN
    (tmp_path / "pyproject.toml").write_text(f'[project]\ndependencies = ["{name}", "humanize>=4.0"]\n')
    with pytest.raises(PluginDefinitionError, match=r"\[project\]\.dependencies\[0\] .* is refused: a name ending"):
        plugin_requirements(tmp_path)


def test_names_that_only_contain_an_archive_word_are_kept(tmp_path: Path) -> None:
    assert _requirements_txt(tmp_path, "zipp>=3\ntarfile-stream\nwhl-tools\n") == [
        "zipp>=3",
        "tarfile-stream",
        "whl-tools",
    ]
