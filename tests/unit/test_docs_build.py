"""The documentation site (issue 14 item 5): the generators, and `mkdocs build --strict` of docs/ with them.

scripts/build-docs.sh is run as CI runs it; the generated reference pages are checked against the code they
come from (every manifest key, every built-in command, every proto message, every example plugin), and a
broken link, a missing anchor or a page left out of the nav must fail the build. Nothing is skipped: mkdocs
comes with the dev extras.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

from figures import Figure  # noqa: E402  (bench/ on sys.path, as the bench runner has it)
from gen_docs import bench_page, manifest_ref, plugins_page, protocol_ref, repo_links  # noqa: E402
from gen_docs.__main__ import main as gen_docs_main  # noqa: E402
from gen_docs.__main__ import write_pages  # noqa: E402
from gen_docs.markdown import cell, prose  # noqa: E402

BIN = Path(sys.executable).parent


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SYSOPS_HOME": str(home), "NO_MKDOCS_2_WARNING": "1", **extra}


def _mkdocs_build(docs_dir: Path, site: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=ROOT,
        env=_env(home, SYSOPS_DOCS_DIR=str(docs_dir)),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _warnings(log: str) -> list[str]:
    """mkdocs's WARNING entries, each with its continuation lines (the omitted pages come on the next lines)."""
    entries: list[str] = []
    for line in log.splitlines():
        if line.startswith("WARNING"):
            entries.append(line)
        elif line.startswith(" ") and entries and entries[-1].startswith("WARNING"):
            entries[-1] += "\n" + line
        else:
            entries.append(line)
    return [entry for entry in entries if entry.startswith("WARNING")]


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text(encoding="utf-8")


# -- the whole build ------------------------------------------------------------------------------------------


def test_the_site_builds_strict_with_every_generated_page(tmp_path: Path, home: Path) -> None:
    site = tmp_path / "site"
    built = subprocess.run(
        [str(ROOT / "scripts" / "build-docs.sh"), "--out", str(site)],
        cwd=ROOT,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr

    for page in ROOT.joinpath("docs").rglob("*.md"):  # every page of docs/ is in the site (and the nav)
        relative = page.relative_to(ROOT / "docs").with_suffix("")
        target = site / ("index.html" if relative.name == "index" else relative / "index.html")
        assert target.is_file(), f"{page} not built"

    from sysops.core.manifest import Manifest

    manifest = _page(site, "reference/manifest")
    for key in Manifest.model_json_schema()["properties"]:
        assert f"<code>{key}</code>" in manifest, key
    assert 'href="#limits"' in manifest and 'id="limits"' in manifest

    cli = _page(site, "reference/cli")
    for words in ("sysops plugin up", "sysops plugin down", "sysops host status", "sysops events"):
        assert f'id="{words.replace(" ", "-")}">{words}<' in cli, words
    assert "--watch" in cli

    protocol = _page(site, "reference/protocol")
    for include, proto in protocol_ref.PROTOS:
        descriptor = protocol_ref.compile_descriptor(ROOT, include, proto)
        for message in descriptor.message_type:
            assert f'id="{protocol_ref.anchor(descriptor.package, message.name)}"' in protocol, message.name
    assert "Python parameter name" in protocol  # a field's trailing comment in plugin.proto

    plugins = _page(site, "available-plugins")
    for manifest_file in ROOT.joinpath("examples").glob("*/plugin.yaml"):
        assert f"<code>{yaml.safe_load(manifest_file.read_text())['name']}</code>" in plugins
    assert "<code>greet</code>" in plugins  # from the hello example's code
    assert "No index was configured" in plugins  # SYSOPS_HOME of the test has none

    sdk = _page(site, "reference/sdk")
    assert "plugin_command" in sdk and "requires_permission" in sdk and "PluginHarness" in sdk
    assert 'class="mermaid"' in _page(site, "architecture")
    assert "Benchmarks" in _page(site, "benchmarks")
    # A link to a repository file outside docs/ is shown as its path, not left broken.
    assert "<code>charts/sysops/README.md</code>" in _page(site, "kubernetes")


def test_strict_mode_refuses_a_broken_link_a_missing_anchor_and_a_page_left_out_of_the_nav(
    tmp_path: Path, home: Path
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    write_pages(docs, ROOT, home)
    with (docs / "getting-started.md").open("a", encoding="utf-8") as page:
        page.write("\n[gone](no-such-page.md) and [nowhere](hot-loading.md#no-such-heading)\n")
    (docs / "orphan.md").write_text("# Left out of the nav\n", encoding="utf-8")

    built = _mkdocs_build(docs, tmp_path / "site", home)

    assert built.returncode != 0
    warnings = _warnings(built.stderr)
    for named in ("no-such-page.md", "no-such-heading", "orphan.md"):
        assert any(named in warning for warning in warnings), f"{named} not warned of:\n{built.stderr}"


def test_gen_docs_refuses_to_write_into_docs_itself(capsys: pytest.CaptureFixture[str]) -> None:
    assert gen_docs_main([str(ROOT / "docs"), "--root", str(ROOT)]) == 2
    assert "not docs/ itself" in capsys.readouterr().err


def test_a_source_that_cannot_become_a_page_is_one_line_exit_2(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gen_docs_main([str(tmp_path / "out"), "--root", str(tmp_path)]) == 2  # a tree without the protos
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gen_docs: protoc failed on sdk/sysops_sdk/protocol/v1/plugin.proto")


# -- the generators -------------------------------------------------------------------------------------------


def test_prose_from_code_is_shown_as_written() -> None:
    assert prose("Registry host[:port][/path] <name> *.py") == "Registry host\\[:port\\]\\[/path\\] &lt;name&gt; \\*.py"
    assert prose("keep `a <b> [c]` as code") == "keep `a <b> [c]` as code"
    assert cell("a | b\n c") == "a \\| b c"
    assert cell("") == "-"


def test_manifest_types_read_and_link_nested_objects() -> None:
    assert manifest_ref.type_of({"$ref": "#/$defs/Limits"}) == "[Limits](#limits)"
    assert manifest_ref.type_of({"anyOf": [{"type": "integer"}, {"type": "null"}]}) == "integer or null"
    assert manifest_ref.type_of({"type": "array", "items": {"type": "string"}}) == "list of string"
    assert (
        manifest_ref.type_of({"type": "object", "additionalProperties": {"$ref": "#/$defs/ConfigOption"}})
        == "map of [ConfigOption](#configoption)"
    )
    page = manifest_ref.generate()
    assert "| `name` | string | **required** |" in page
    assert "## Limits" in page and "| `memory_mb` | integer | `256` |" in page


def test_links_to_repository_files_become_paths_and_others_are_left() -> None:
    markdown = "\n".join(
        [
            "See [the chart](../charts/sysops/README.md#values) and [`examples/hello`](../examples/hello).",
            "Also [a page](cli.md), [a site](https://example.com/x) and [gone](../no/such/file.txt).",
            "```",
            "[in code](../examples/hello)",
            "```",
        ]
    )
    rewritten = repo_links.rewrite_markdown(markdown, "security.md").split("\n")
    assert rewritten[0] == "See the chart (`charts/sysops/README.md`) and `examples/hello/`."
    assert rewritten[1] == "Also [a page](cli.md), [a site](https://example.com/x) and [gone](../no/such/file.txt)."
    assert rewritten[3] == "[in code](../examples/hello)"
    assert repo_links.repo_path("tutorials/first-plugin.md", "../../examples/hello/plugin.yaml") == (
        "examples/hello/plugin.yaml"
    )


def test_the_protocol_reference_keeps_comments_and_tells_same_named_messages_apart() -> None:
    page = protocol_ref.generate(ROOT)
    assert "{#sysops-plugin-v1-invokerequest}" in page and "{#sysops-control-v1-invokerequest}" in page
    assert "### service PluginService" in page and "### service Host" in page and "### service Control" in page
    assert "| `name` | 1 | string | Python parameter name |" in page
    assert "[CallerIdentity](#sysops-plugin-v1-calleridentity)" in page


def test_commands_are_read_from_the_code_without_importing_it(tmp_path: Path) -> None:
    package = tmp_path / "thing"
    package.mkdir()
    (package / "plugin.py").write_text(
        "import module_that_does_not_exist\n"
        "from sysops_sdk import plugin_command\n"
        "import sysops_sdk\n\n"
        '@plugin_command("thing run")\ndef run(): ...\n\n'
        '@sysops_sdk.plugin_command("thing stop", read_only=True)\ndef stop(): ...\n',
        encoding="utf-8",
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text('@plugin_command("not-a-command")\ndef x(): ...\n')
    assert plugins_page.commands_in(tmp_path) == ["thing run", "thing stop"]


def test_the_available_plugins_page_lists_examples_and_each_index_or_why_not() -> None:
    examples = plugins_page.read_examples(ROOT)
    names = {plugin.name for plugin in examples}
    assert names == {yaml.safe_load(path.read_text())["name"] for path in ROOT.glob("examples/*/plugin.yaml")}
    hello = next(plugin for plugin in examples if plugin.name == "hello")
    assert "greet" in hello.commands
    assert hello.has_tests == any(ROOT.glob("examples/hello/tests/test_*.py"))
    tested = plugins_page.ExamplePlugin("examples/x", "x", "1.0.0", "X", ["command"], [], ["x run"], has_tests=True)
    assert "| `examples/x` | `pytest examples/x` |" in plugins_page.render([tested], [])
    listings = [
        plugins_page.IndexListing(
            "official",
            "official",
            [{"name": "disk", "version": "1.2.0", "stage": "stable", "description": "Disks", "spec": "disk==1.2.0"}],
        ),
        plugins_page.IndexListing("broken", "community", [], problem="index 'broken' cannot be reached"),
    ]
    page = plugins_page.render(examples, listings)
    assert "### official (official)" in page and "| `disk` | 1.2.0 | stable | Disks | `disk==1.2.0` |" in page
    assert "Could not be read when this site was built: index 'broken' cannot be reached" in page
    assert "No index was configured" in plugins_page.render(examples, [])


def test_the_benchmarks_page_shows_each_figure_beside_its_baseline(tmp_path: Path) -> None:
    assert "No benchmark report" in bench_page.generate(tmp_path)

    figures = [
        {**Figure("reload median", 0.21, "s", 0.05, "docker restart", "<= 0.25 s", True).as_json(), "module": "r"},
        {**Figure("idle memory per plugin", 52.0, "MiB", goal="<= 40 MiB", passed=False).as_json(), "module": "s"},
    ]
    report = {"machine": {"cpus": 2}, "when": "2026-12-03T18:00:00+00:00", "figures": figures}
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / bench_page.REPORT).write_text(json.dumps(report), encoding="utf-8")
    page = bench_page.generate(tmp_path)
    assert "| reload median | 0.21 s | 0.05 s (docker restart) | 4.20x | &lt;= 0.25 s | pass | `r` |" in page
    assert "| idle memory per plugin | 52 MiB | - | - | &lt;= 40 MiB | **FAIL** | `s` |" in page
    assert "Measured 2026-12-03T18:00:00+00:00" in page and "| `cpus` | 2 |" in page

    assert "Reload latency" not in page and bench_page.assets(tmp_path) == {}
    (tmp_path / bench_page.CHART).write_bytes(b"\x89PNG\r\n")
    assert f"![Latency of each reload in the run]({bench_page.CHART_IN_DOCS})" in bench_page.generate(tmp_path)
    assert bench_page.assets(tmp_path) == {bench_page.CHART_IN_DOCS: tmp_path / bench_page.CHART}

    (tmp_path / bench_page.REPORT).write_text('{"figures": [{"ours": 1}]}', encoding="utf-8")
    with pytest.raises(bench_page.ReportError, match="not a report"):
        bench_page.generate(tmp_path)


def test_configured_indexes_are_read_through_tuf_or_named_with_the_reason(tmp_path: Path, home: Path) -> None:
    from sysops.core.manifest import load_manifest
    from sysops.distribution.index_client import bootstrap_index
    from sysops.distribution.index_registry import IndexConfig, add_index
    from sysops.distribution.index_writer import IndexRepository

    repository = IndexRepository.create(tmp_path / "index")
    repository.add_version(load_manifest(ROOT / "examples" / "hello"), "hello-plugin==1.0.0")
    repository.publish(repository.read_source())
    served = IndexConfig("main", f"file://{repository.repository_dir}", "community")
    bootstrap_index(home, served, repository.root_file)
    add_index(home, served)
    add_index(home, IndexConfig("gone", f"file://{tmp_path / 'nothing'}", "private"))

    main, gone = plugins_page.read_indexes(home)

    assert (main.name, main.problem) == ("main", "")
    assert [(row["name"], row["version"], row["spec"]) for row in main.rows] == [
        ("hello", "1.0.0", "hello-plugin==1.0.0")
    ]
    assert gone.rows == [] and "index 'gone'" in gone.problem
    page = plugins_page.render([], [main, gone])
    assert "### main (community)" in page and "| `hello` | 1.0.0 | stable |" in page
