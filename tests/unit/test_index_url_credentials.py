"""Index URLs carrying credentials: refused, and the secret never echoed (indexes.json, `index ls` and every
index error show the URL; a private index's token belongs in --token-file)."""

from __future__ import annotations

import pytest
from sysops.distribution.index_registry import check_index_url
from sysops.errors import UsageError


@pytest.mark.parametrize(
    "url", ["https://alice:s3cret-token@index.example/repo", "https://s3cret-token@index.example/repo"]
)
def test_an_index_url_with_credentials_is_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_index_url(url)
    assert "s3cret-token" not in str(caught.value) and "token-file" in (caught.value.hint or "")


def test_an_index_url_without_credentials_is_kept() -> None:
    assert check_index_url("https://index.example/repo/") == "https://index.example/repo"
