#!/usr/bin/env python3
"""The image's HEALTHCHECK: GET one URL on this container, exit 0 if it answers 2xx.

Standard library only, because the slim runtime has no curl. The URL defaults to the API's
`/healthz` on SHELFWISE_PORT; a worker points SHELFWISE_HEALTHCHECK_URL at its metrics port
(`http://127.0.0.1:8001/metrics`), since a worker serves no API. Proxies from the
environment are ignored: the check is always about this container.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def health_url(environ: dict[str, str]) -> str:
    explicit = environ.get("SHELFWISE_HEALTHCHECK_URL")
    if explicit:
        return explicit
    return f"http://127.0.0.1:{environ.get('SHELFWISE_PORT', '8000')}/healthz"


def check(url: str, timeout: float) -> str | None:
    """None when healthy, else why not."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return None if 200 <= response.status < 300 else f"status {response.status}"
    except urllib.error.HTTPError as exc:
        return f"status {exc.code}"
    except (OSError, ValueError) as exc:  # refused, timed out, bad URL
        return f"{type(exc).__name__}: {exc}"


def main() -> int:
    environ = dict(os.environ)
    url = health_url(environ)
    problem = check(url, float(environ.get("SHELFWISE_HEALTHCHECK_TIMEOUT", "2")))
    if problem is not None:
        print(f"unhealthy: {url}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
