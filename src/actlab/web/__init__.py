"""The explorer: a local web app over actlab artifacts (``actlab serve DIR...``) and the static export of feature
pages (``export_html``). FastAPI/uvicorn are imported only when a server is made (``create_app``, the web extra)."""
from actlab.web.export import export_html
from actlab.web.live import Limits


def create_app(dirs, **kw):
    """The FastAPI app serving ``dirs`` (see ``actlab.web.app.create_app``)."""
    from actlab.web.app import create_app as make

    return make(dirs, **kw)


__all__ = ["Limits", "create_app", "export_html"]
