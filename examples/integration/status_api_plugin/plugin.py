"""An integration plugin: asks an HTTP API for its status with a bearer token from `self.secret()`.

The token is read through the host each call (a rotated file is used at once) and never printed, stored or
published. The API's address is configuration (`base_url`) and must be on the manifest's egress allow-list.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from sysops_sdk import IntegrationPlugin, option, plugin_command


class StatusApiPlugin(IntegrationPlugin):
    name = "status-api"
    version = "1.0.0"
    description = "Asks an external status API"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("api-status")
    @option("--base-url", help="The API's base URL (default: the base_url configuration)")
    def api_status(self, base_url: str = "") -> dict[str, Any]:
        """GET BASE_URL/status with the api-token secret; the HTTP status and the answer."""
        url = (base_url or str(self.get_service("config").get("base_url"))).rstrip("/") + "/status"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.secret('api-token')}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return {"url": url, "status": response.status, "answer": json.loads(response.read() or b"null")}
        except urllib.error.HTTPError as error:
            return {"url": url, "status": error.code, "answer": None}
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise RuntimeError(f"cannot reach {url}: {reason}") from None
