"""CORS with refusals in the API's own error format.

Starlette's `CORSMiddleware` answers a preflight it refuses (an origin not listed, a
method or header not allowed) with a plain-text 400. The browser only looks at the
missing `Access-Control-Allow-*` headers, but everything else that reads the answer
(curl, monitors, a developer) gets problem+json like any other error: `403 cors_refused`
naming what was refused. An allowed preflight is unchanged (200, no body of interest).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from shelfwise.http.problems import problem


class ProblemCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = bytes(response.body).decode(errors="replace")  # "Disallowed CORS origin"
        scope = {"path": "", "headers": []}
        refusal = problem(403, "cors_refused", f"{refused}: see the API's CORS settings", scope)
        # The CORS headers Starlette computed (Vary, Max-Age) still apply; no Allow-Origin.
        for name, value in response.headers.items():
            if name.lower().startswith("access-control-") or name.lower() == "vary":
                refusal.headers[name] = value
        return refusal
