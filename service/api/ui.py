"""``/ui``: the dashboard, static files shipped in the package (``noisefa/service/ui/``).

The pages are plain HTML and ES modules that call the public API with the bearer key the
browser keeps in session storage, so serving them needs no session state and no login route:
any API replica serves the same bytes. Only files that exist in the folder when the app is
built can be served (no path from the URL reaches the file system), each with a strict
Content-Security-Policy: scripts and styles from this origin only, nothing inline.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from ..problems import ProblemError

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE
}

# blob: images are the PNG plots, fetched with the bearer header; connect-src 'self' is the
# API itself (fetch, and the SSE streams read through fetch).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate each load, so a new release's scripts are never mixed with old ones.
    "Cache-Control": "no-cache",
}

router = APIRouter(prefix="/ui", include_in_schema=False)


def shipped_files(root: Path = UI_DIR) -> dict[str, Path]:
    """URL path (relative to ``/ui/``) → file, for every servable file under ``root``."""
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


FILES = shipped_files()


def _file_response(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise ProblemError(404, f"no dashboard file {name!r}", slug="not-found")
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=SECURITY_HEADERS)


@router.get("")
def ui_root() -> RedirectResponse:
    """``/ui`` → ``/ui/`` (relative module paths resolve against the folder). A ``#key=``
    fragment survives: browsers carry the fragment across a redirect."""
    return RedirectResponse("/ui/", status_code=308)


@router.get("/")
def ui_index() -> FileResponse:
    """The single page; its routes live in the URL fragment."""
    return _file_response("index.html")


@router.get("/{name:path}")
def ui_file(name: str) -> FileResponse:
    """One shipped script, stylesheet or licence."""
    return _file_response(name)
