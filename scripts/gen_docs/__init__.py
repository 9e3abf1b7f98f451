"""Generators of the documentation site's reference pages (issue 14 item 5).

Each module writes one page from the code it documents, so the site cannot drift from what the code does:
the manifest reference from the pydantic model, the CLI reference from the typer/click app, the protocol
reference from the .proto files, the available-plugins page from `examples/*/plugin.yaml` and the configured
indexes, and the benchmarks page from `bench/results/latest.json`. `python -m gen_docs DOCS_DIR` (with
`scripts/` on `sys.path`, as scripts/build-docs.sh runs it) writes them all into a copy of docs/.
"""
