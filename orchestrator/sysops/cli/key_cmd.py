"""`sysops key generate|trust|ls`: the signing keys of this installation and the public keys it trusts."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer

from sysops.cli.output import emit
from sysops.cli.plugin_cmd import Output, OutputOption
from sysops.settings import Settings

key_app = typer.Typer(help="Signing keys: generate your own, trust others' per tier, list them.", no_args_is_help=True)


@key_app.command("generate")
def generate(name: Annotated[str, typer.Argument(help="Name of the new key (lowercase, digits, . _ -).")]) -> None:
    """Create an ed25519 key pair in $SYSOPS_HOME/keys (private key 0600); print its id and public key file."""
    from sysops.trust.keys import generate_key, keys_dir

    home = Settings().home
    key = generate_key(home, name)
    typer.echo(f"key {key.name} {key.key_id}: public key {keys_dir(home) / f'{name}.pub'}")


@key_app.command("trust")
def trust(
    file: Annotated[Path, typer.Argument(help="A PEM ed25519 public key (NAME.pub of `sysops key generate`).")],
    tier: Annotated[str, typer.Option("--tier", help="official, community or private.")],
    name: Annotated[str, typer.Option("--name", help="Name to trust it under (default: the file's stem).")] = "",
) -> None:
    """Trust a public key for a tier: signatures by it count where the trust policy accepts that tier."""
    from sysops.trust.keys import read_public_key, trust_key

    key = trust_key(Settings().home, read_public_key(file), name or file.stem, tier)
    typer.echo(f"trusted key {key.name} {key.key_id} for tier {key.tier}")


@key_app.command("ls")
def ls(output: OutputOption = Output.TEXT) -> None:
    """List own and trusted keys: name, id, tier (own keys count as private), public key (base64, raw)."""
    from sysops.trust.keys import keyring, raw_public_bytes

    rows = [
        {
            "name": key.name,
            "key_id": key.key_id,
            "tier": key.tier,
            "own": key.own,
            "public_key": base64.b64encode(raw_public_bytes(key.public_key)).decode(),
        }
        for key in sorted(keyring(Settings().home).values(), key=lambda key: (not key.own, key.name))
    ]
    emit(rows, output.value, ["name", "key_id", "tier", "own", "public_key"])
