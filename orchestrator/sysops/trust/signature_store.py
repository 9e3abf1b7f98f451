"""Where plugin signatures are kept: the local cache, and a registry beside the image as an OCI artifact.

The cache holds every signature known for an image in `$SYSOPS_HOME/cache/signatures/<config digest hex>.json`
(written by builds and `plugin sign`, read by the trust gate of the same installation). A registry holds them
beside the image, as cosign does: an OCI artifact pushed with `oras` to the image's repository under the tag
`sha256-<config digest hex>.sig`, one layer `signatures.json` of media type `SIGNATURES_MEDIA_TYPE`. A server
in a cluster, which never sees the CLI's cache, reads them from there. A registry on a loopback address is
spoken to over plain HTTP (as Docker does); any other over HTTPS unless `$SYSOPS_REGISTRY_INSECURE=1`. Where
the server reaches the registry at another address than the nodes' engines do (a registry on the node's
loopback, which a pod reaches at the node's address), `$SYSOPS_REGISTRY_ENDPOINT` (HOST:PORT) is where the
server asks for images of `$SYSOPS_REGISTRY` (chart values trust.registryEndpoint, trust.registryInsecure).

A tag can be moved at any time, so what the server verifies is a manifest by its digest: `registry_manifest`
reads the manifest a reference names and takes its digest from the bytes served (for a reference by digest,
bytes that do not hash to it are refused), and `pinned_reference` names the image by that digest
(`REPO@sha256:...`), which the kubelet pulls and checks against the same digest (core/trust_gate.py).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sysops.errors import EngineUnavailableError, PolicyDeniedError, UsageError
from sysops.private_paths import ensure_private_dir, write_private_file
from sysops.trust.signing import MalformedSignature, Signature

SIGNATURES_MEDIA_TYPE = "application/vnd.sysops.plugin.signatures.v1+json"
SIGNATURES_FILE = "signatures.json"
INSECURE_ENV = "SYSOPS_REGISTRY_INSECURE"
ENDPOINT_ENV = "SYSOPS_REGISTRY_ENDPOINT"
REGISTRY_ENV = "SYSOPS_REGISTRY"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_SIGNATURES_BYTES = 1 << 20
#: A registry's own limit on a manifest (CNCF distribution: 4 MiB).
_MAX_MANIFEST_BYTES = 4 << 20
#: Seconds each registry request may take (connect and each read).
REQUEST_SECONDS = 20.0
_IMAGE_MANIFEST_TYPES = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
]


def check_digest(image_digest: str) -> str:
    """The hex part of a `sha256:<hex>` digest, or a UsageError naming it."""
    if not _DIGEST.fullmatch(image_digest):
        raise UsageError(f"{image_digest[:80]!r} is not an image digest (sha256:<64 hex>)")
    return image_digest.removeprefix("sha256:")


def cache_path(home: Path, image_digest: str) -> Path:
    """The cache file of the signatures of an image."""
    return home / "cache" / "signatures" / f"{check_digest(image_digest)}.json"


def cached_signatures(home: Path, image_digest: str) -> list[Signature]:
    """The signatures the cache holds for an image (none when it holds no file)."""
    path = cache_path(home, image_digest)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the signatures: {exc}") from None
    return parse_signatures(text, str(path))


def cache_signature(home: Path, image_digest: str, signature: Signature) -> None:
    """Add `signature` to the cache of the image (replacing one by the same key)."""
    kept = [known for known in cached_signatures(home, image_digest) if known.key_id != signature.key_id]
    path = cache_path(home, image_digest)
    ensure_private_dir(ensure_private_dir(ensure_private_dir(home) / "cache") / "signatures")
    write_private_file(path, signatures_json([*kept, signature]))


def signatures_json(signatures: list[Signature]) -> str:
    """The stored form of a list of signatures."""
    return json.dumps({"signatures": [signature.as_dict() for signature in signatures]}, indent=1, sort_keys=True)


def parse_signatures(text: str, where: str) -> list[Signature]:
    """Signatures from their stored form; a UsageError names `where` when it is not that."""
    try:
        document = json.loads(text)
        records = document["signatures"] if isinstance(document, dict) else None
        if not isinstance(records, list):
            raise MalformedSignature('expected {"signatures": [...]}')
        return [Signature.from_dict(record) for record in records]
    except (ValueError, KeyError, RecursionError) as exc:
        raise UsageError(f"{where}: not a signatures file ({exc})") from None


def split_reference(image: str) -> tuple[str, str, str] | None:
    """(registry host to ask, repository, tag or digest) of an image reference in a registry, None without one."""
    first, slash, rest = image.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return None
    first = _api_host(first)
    if "@" in rest:
        repository, _, reference = rest.partition("@")
        repository = repository.partition(":")[0]  # `REPO:TAG@sha256:...`: the digest names the image
    else:
        repository, _, reference = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
    return first, repository, reference


def _api_host(host: str) -> str:
    """Where to reach the registry `host` of an image reference (`$SYSOPS_REGISTRY_ENDPOINT` for `$SYSOPS_REGISTRY`)."""
    endpoint = os.environ.get(ENDPOINT_ENV, "")
    return endpoint if endpoint and host == os.environ.get(REGISTRY_ENV, "").rstrip("/") else host


def _client(host: str) -> Any:
    """An oras client for the registry at `host` (as `_api_host` gives it)."""
    import oras.provider  # type: ignore[import-untyped]  # imported on use: a routed command never needs it

    class OneAttempt(oras.provider.Registry):  # type: ignore[misc]
        """oras retries a failed request 5 times, sleeping 2 min in all: a roll waiting on the gate would hang."""

        do_request = oras.provider.Registry.do_request.__wrapped__

    client = OneAttempt(hostname=host, insecure=_is_loopback(host) or os.environ.get(INSECURE_ENV) == "1")
    client.session.request = functools.partial(client.session.request, timeout=REQUEST_SECONDS)
    return client


def _is_loopback(host: str) -> bool:
    """Whether a registry HOST[:PORT] is on this machine (see `is_loopback_name`)."""
    return is_loopback_name(urlsplit(f"//{host}").hostname or "")


def is_loopback_name(name: str) -> bool:
    """Whether a host name (no port, no brackets) is this machine: `localhost` or a loopback address, not a
    name that merely begins like one (`localhost.example.org`, `127.example.org`), reached over the network."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _registry_error(host: str, action: str, exc: Exception) -> EngineUnavailableError:
    return EngineUnavailableError(
        f"registry {host}: {action} failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}",
        hint="check that the registry runs and is reachable (and $SYSOPS_REGISTRY_INSECURE for plain HTTP)",
    )


@dataclass(frozen=True)
class RegistryManifest:
    """An image manifest as a registry serves it: its digest (of the bytes served) and its config's digest."""

    digest: str
    config_digest: str


def registry_manifest(image: str) -> RegistryManifest | None:
    """The manifest `image` names in its registry now (None when it names no registry). For a reference by
    digest the bytes served must hash to that digest (else PolicyDeniedError: the registry served another)."""
    parts = split_reference(image)
    if parts is None:
        return None
    host, repository, reference = parts
    by_digest = reference.startswith("sha256:")
    named = f"{repository}{'@' if by_digest else ':'}{reference}"
    client = _client(host)
    try:
        container = client.get_container(f"{host}/{named}")
        client.auth.load_configs(container)
        url = f"{client.prefix}://{container.manifest_url()}"
        accept = {"Accept": ", ".join(_IMAGE_MANIFEST_TYPES)}
        with client.do_request(url, "GET", headers=accept, stream=True) as response:
            response.raise_for_status()
            body = response.raw.read(_MAX_MANIFEST_BYTES + 1, decode_content=True)  # a hostile one may be endless
    except Exception as exc:  # oras raises ValueError, requests errors and its own
        raise _registry_error(host, f"reading the manifest of {named}", exc) from None
    if len(body) > _MAX_MANIFEST_BYTES:
        raise EngineUnavailableError(f"registry {host}: the manifest of {named} is over {_MAX_MANIFEST_BYTES} bytes")
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    if by_digest and digest != reference:
        raise PolicyDeniedError(
            f"registry {host}: the manifest served for {named} has digest {digest}: not the image asked for"
        )
    try:
        document = json.loads(body)
        config = document.get("config", {}).get("digest") if isinstance(document, dict) else None
    except (ValueError, RecursionError, AttributeError):
        config = None
    if not isinstance(config, str) or not _DIGEST.fullmatch(config):
        raise EngineUnavailableError(f"registry {host}: the manifest of {named} names no config")
    return RegistryManifest(digest, config)


def config_digest(image: str) -> str | None:
    """The config digest of an image in a registry (the signed image digest), None when it names no registry."""
    manifest = registry_manifest(image)
    return manifest.config_digest if manifest else None


def pinned_reference(image: str) -> str | None:
    """`image` by the digest of the manifest its registry serves for it now (`REPO@sha256:...`, under the
    registry host as `image` names it, which the nodes pull from); None when it names no registry. A reference
    by digest is returned as given (after its manifest is checked to be that digest's)."""
    manifest = registry_manifest(image)
    if manifest is None:
        return None
    if "@" in image:
        return image
    name, _, last = image.rpartition("/")
    return f"{name}/{last.partition(':')[0]}@{manifest.digest}"


def signature_tag(image_digest: str) -> str:
    """The tag of an image's signatures artifact in its repository."""
    return f"sha256-{check_digest(image_digest)}.sig"


def push_signatures(image: str, image_digest: str, signatures: list[Signature]) -> str:
    """Push the signatures of an image to its repository (the `.sig` tag); return the artifact's reference."""
    parts = split_reference(image)
    if parts is None:
        raise UsageError(f"image {image[:200]!r} names no registry: its signatures stay in the cache")
    host, repository, _ = parts
    target = f"{host}/{repository}:{signature_tag(image_digest)}"
    with tempfile.TemporaryDirectory(prefix="sysops-sig-") as work:
        path = Path(work) / SIGNATURES_FILE
        path.write_text(signatures_json(signatures), encoding="utf-8")
        cwd = os.getcwd()
        os.chdir(work)  # oras names the layer after the path as given
        try:
            _client(host).push(target, files=[f"{SIGNATURES_FILE}:{SIGNATURES_MEDIA_TYPE}"], quiet=True)
        except Exception as exc:
            raise _registry_error(host, f"pushing {target}", exc) from None
        finally:
            os.chdir(cwd)
    return target


def registry_signatures(image: str, image_digest: str) -> list[Signature]:
    """The signatures the registry holds beside an image (none when there is no `.sig` artifact)."""
    parts = split_reference(image)
    if parts is None:
        return []
    host, repository, _ = parts
    target = f"{host}/{repository}:{signature_tag(image_digest)}"
    client = _client(host)
    try:
        manifest = client.get_manifest(target)
    except Exception as exc:
        if "404" in str(exc) or "not found" in str(exc).lower() or "MANIFEST_UNKNOWN" in str(exc):
            return []
        raise _registry_error(host, f"reading {target}", exc) from None
    layers = [layer for layer in manifest.get("layers", []) if layer.get("mediaType") == SIGNATURES_MEDIA_TYPE]
    if len(layers) != 1 or int(layers[0].get("size", 0)) > _MAX_SIGNATURES_BYTES:
        raise UsageError(f"{target}: not a sysops signatures artifact (one {SIGNATURES_MEDIA_TYPE} layer)")
    try:
        response = client.get_blob(f"{host}/{repository}", layers[0]["digest"])
        response.raise_for_status()
    except Exception as exc:
        raise _registry_error(host, f"reading {target}", exc) from None
    return parse_signatures(response.content[:_MAX_SIGNATURES_BYTES].decode("utf-8", "replace"), target)


def publish_signatures(home: Path, image: str, image_digest: str) -> str | None:
    """Push the cached signatures of an image beside it in its registry (`plugin push`); None when none are cached."""
    signatures = cached_signatures(home, image_digest)
    return push_signatures(image, image_digest, signatures) if signatures else None


def fetch_signatures(home: Path, image: str, image_digest: str) -> int:
    """Copy the signatures a registry holds beside `image` into the cache (`plugin pull`, installs from a
    registry: the gate then finds them under the image's local tag); return how many."""
    signatures = registry_signatures(image, image_digest)
    for signature in signatures:
        cache_signature(home, image_digest, signature)
    return len(signatures)
