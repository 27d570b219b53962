"""The console's routes: server-rendered pages whose panels htmx refreshes every 2 s, behind the
admin token.

    GET  /console                   the console: health, pauses (and the latest pauses and resumes),
                                    journeys, recent actions, dead letters
    GET  /console/panel/{name}      one panel's fragment (what htmx swaps in)
    GET  /console/users?id=ID       the user page (any id: anonymous ids resolve through identities)
    GET  /console/static/{file}     htmx (vendored, 0BSD), the console's script and stylesheet
    GET  /console/sign-in           the sign-in form (public)
    POST /console/sign-in           the token, form-encoded: a good one sets the cookie (public)
    POST /console/sign-out          clears the cookie

Why a cookie: a browser cannot put the Bearer header on a page it navigates to. The sign-in sets
the admin token itself as the cookie `auth.COOKIE` (HttpOnly: no script reads it; SameSite=Strict:
no other site's page sends it; Secure when the request came over https; Path=/ so the admin API's
routes, which the buttons call, accept it too), and `AdminAuth.refusal` takes it on every route
but sign-in: a change (the buttons' POST and DELETE) must also come from this origin. A refusal
of a page sends the browser to the sign-in page (htmx, asking for a fragment, gets 401 with
`HX-Redirect`); a refusal of a change from another origin stays the JSON 403. The sign-in page
says nothing but whether the token was right.

The buttons call the admin API itself (`POST /admin/dead-letters/{id}/retry`, `POST
/admin/inbox/failed/{seq}/retry`, `POST /admin/pauses`, `DELETE /admin/pauses/{journey}`): one
implementation of each action, which `journeys admin` uses too; the console's script shows the
answer and refreshes the panel.

Every page is rendered by jinja2 with autoescape on (user text: journey, step and template names,
ids, traits, errors), with a Content-Security-Policy that allows only this origin's scripts and
styles (no inline script; the sign-in page's inline style carries a nonce), in no frame, never
cached. Routes stay out of the OpenAPI document: they answer HTML, not the API.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qs, quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from journeys.graph_svg import CSS as GRAPH_CSS

from ..auth import COOKIE, AdminAuth
from . import panels
from .tally import Tally

HERE = Path(__file__).resolve().parent
STATIC = {"htmx.min.js": "text/javascript", "console.js": "text/javascript", "console.css": "text/css"}
PANELS = ("health", "pauses", "journeys", "actions", "letters")
SIGN_IN_MAX_BYTES = 4096
RECENT_SHOWN = 25


def _templates() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["part"] = lambda value: quote(str(value), safe="")  # one URL path segment
    env.filters["age"] = _age
    env.filters["n"] = lambda value: f"{value:,}" if isinstance(value, int) else value
    return env


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _headers(nonce: str | None = None) -> dict[str, str]:
    style = f"'self' 'nonce-{nonce}'" if nonce else "'self'"
    return {"Content-Security-Policy": f"default-src 'self'; script-src 'self'; style-src {style}; "
                                       "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
                                       "base-uri 'none'",
            "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
            "X-Content-Type-Options": "nosniff"}


def add_console_routes(app: Any, worker: Any) -> None:
    """Add the console's routes (see the module's docstring) to the daemon's app."""
    env: Mapping[str, str] = worker.environ if worker.environ is not None else os.environ
    auth = AdminAuth(env)
    templates = _templates()
    tally = Tally()

    def base(request: Request) -> str:
        return request.scope.get("root_path", "")

    def render(request: Request, name: str, status: int = 200, nonce: str | None = None, **context: Any) -> Response:
        root = base(request)
        html = templates.get_template(name).render(console=f"{root}/console", admin=f"{root}/admin", nonce=nonce,
                                                   **context)
        return HTMLResponse(html, status_code=status, headers=_headers(nonce))

    def refused(request: Request) -> Response | None:
        """None when the request may go on; a browser that is not signed in goes to sign in."""
        refusal = auth.refusal(request)
        if refusal is None or refusal.status_code != 401:
            return refusal
        sign_in = f"{base(request)}/console/sign-in"
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": sign_in, **_headers()})
        return RedirectResponse(sign_in, status_code=303, headers={"Cache-Control": "no-store"})

    on_worker = worker.call

    async def panel_context(name: str) -> dict[str, Any]:
        """What the template of panel `name` shows; `error` when it could not be read."""
        try:
            if name == "health":
                return {"health": await run_in_threadpool(panels.health, worker)}
            if name == "journeys":
                return {"journeys": await run_in_threadpool(panels.journeys, worker, tally),
                        "trail_off": not worker.config.serve.trail_days}
            if name == "actions":
                await run_in_threadpool(panels.tallied, worker, tally)
                ids = tally.newest_actions()[:RECENT_SHOWN]
                return {"actions": await on_worker(lambda: panels.actions(worker, ids))}
            if name == "letters":
                return {"letters": await on_worker(lambda: panels.letters(worker))}
            if name == "pauses":
                return await on_worker(lambda: {"pauses": panels.pauses(worker),
                                                "history": panels.pause_history(worker)})
        except Exception as exc:  # noqa: BLE001 - a store or the worker did not answer: the panel says so
            return {"error": f"{type(exc).__name__}: {exc}"}
        raise KeyError(name)

    async def console(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        from markupsafe import Markup

        contexts = await asyncio.gather(*(panel_context(n) for n in PANELS))
        root = base(request)
        drawn = {n: Markup(templates.get_template(f"panel_{n}.html").render(
            console=f"{root}/console", admin=f"{root}/admin", **c)) for n, c in zip(PANELS, contexts)}
        return render(request, "console.html", panel_names=PANELS, drawn=drawn,
                      pause_names=list(worker.program.journeys))

    async def panel(name: str, request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        if name not in PANELS:
            return render(request, "missing.html", 404, what=f"panel {name}")
        return render(request, f"panel_{name}.html", **await panel_context(name))

    async def user(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        any_id = request.query_params.get("id", "").strip()
        if not any_id:
            return RedirectResponse(f"{base(request)}/console", status_code=303)
        found = await on_worker(lambda: panels.user(worker, any_id))
        if found is None:
            return render(request, "missing.html", 404, what=f"profile {any_id!r}", asked=any_id)
        return render(request, "user.html", user=found, asked=any_id)

    async def static(name: str, request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        if name not in STATIC:
            return Response(status_code=404)
        body = (HERE / "static" / name).read_text(encoding="utf-8")
        if name == "console.css":
            body += GRAPH_CSS  # the diagram's own, as the dry-run's report has it
        return Response(body, media_type=STATIC[name],
                        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"})

    def sign_in_page(request: Request, status: int = 200, wrong: bool = False) -> Response:
        return render(request, "sign_in.html", status, nonce=secrets.token_urlsafe(16), wrong=wrong,
                      off=not auth.token, css=(HERE / "static" / "console.css").read_text(encoding="utf-8"))

    async def sign_in_form(request: Request) -> Response:
        return sign_in_page(request)

    async def sign_in(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > SIGN_IN_MAX_BYTES:
                return sign_in_page(request, 413, wrong=True)
        token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0].strip()
        if not auth.valid(token):
            return sign_in_page(request, 401, wrong=True)
        done = RedirectResponse(f"{base(request)}/console", status_code=303, headers={"Cache-Control": "no-store"})
        done.set_cookie(COOKIE, token, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
        return done

    async def sign_out(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        done = RedirectResponse(f"{base(request)}/console/sign-in", status_code=303)
        done.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return done

    for path, endpoint, method in (
            ("/console", console, "GET"),
            ("/console/panel/{name}", panel, "GET"),
            ("/console/users", user, "GET"),
            ("/console/static/{name}", static, "GET"),
            ("/console/sign-in", sign_in_form, "GET"),
            ("/console/sign-in", sign_in, "POST"),
            ("/console/sign-out", sign_out, "POST")):
        app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)
