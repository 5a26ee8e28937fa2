"""The admin surface on `config.adminAddr`: a JSON API (api.py) and a web UI for operators (ui.py)."""

from gateway.admin.api import AdminServer, build_admin_app

__all__ = ["AdminServer", "build_admin_app"]
