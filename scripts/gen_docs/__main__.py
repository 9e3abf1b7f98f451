"""`python -m gen_docs DOCS_DIR`: write every generated page into DOCS_DIR (a copy of docs/, never docs/ itself).

Run from the repository's root with `scripts/` on `sys.path` (scripts/build-docs.sh does). Exit 2 with one
line when a source cannot be turned into a page (a broken example manifest, a report of the wrong shape).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from gen_docs import bench_page, cli_ref, manifest_ref, plugins_page, protocol_ref


def pages(root: Path, home: Path) -> dict[str, Callable[[], str]]:
    """Each generated page's path inside the docs directory, and how to make it."""
    return {
        "reference/manifest.md": manifest_ref.generate,
        "reference/cli.md": cli_ref.generate,
        "reference/protocol.md": lambda: protocol_ref.generate(root),
        "available-plugins.md": lambda: plugins_page.generate(root, home),
        "benchmarks.md": lambda: bench_page.generate(root),
    }


def write_pages(docs_dir: Path, root: Path, home: Path) -> list[Path]:
    """Generate every page (and the files they show) into `docs_dir`; the paths written."""
    written = []
    for relative, make in pages(root, home).items():
        target = docs_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(make(), encoding="utf-8")
        written.append(target)
    for relative, source in bench_page.assets(root).items():
        written.append(Path(shutil.copyfile(source, docs_dir / relative)))
    return written


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and write the pages."""
    parser = argparse.ArgumentParser(prog="gen_docs", description=__doc__)
    parser.add_argument("docs_dir", type=Path, help="the copy of docs/ to write into")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository's root (default: .)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.docs_dir.resolve() == root / "docs":
        print(
            "gen_docs: write into a copy of docs/, not docs/ itself (generated pages are not committed)",
            file=sys.stderr,
        )
        return 2
    from sysops.errors import SysopsError
    from sysops.settings import Settings

    try:
        written = write_pages(args.docs_dir, root, Settings().home)
    except (SysopsError, ValueError, OSError, SyntaxError) as error:  # a broken source: one line, exit 2
        print(f"gen_docs: {error}", file=sys.stderr)
        return 2
    print(f"gen_docs: {len(written)} pages written into {args.docs_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
