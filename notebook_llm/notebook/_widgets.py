"""Widgets as MIME bundles, the same on ipywidgets 7 (Colab) and 8.

The Stop buttons sit in a display slot that is later replaced by a line of
text (``display(..., display_id=True)`` then ``handle.update(...)``), so a
saved notebook holds no widget output. ipywidgets 8 widgets have
``_repr_mimebundle_``, which IPython's ``display`` turns into one output
carrying the display id. ipywidgets 7 widgets (Colab's runtime) display
themselves through ``_ipython_display_`` instead, which drops the display id:
the later update would then match no output and the button would stay. So the
widget's bundle is built here and displayed raw, with the display id, on both.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WIDGET_MIME", "widget_bundle"]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
_PLAIN_LIMIT = 110


def widget_bundle(widget: Any, fallback: dict[str, str] | None = None) -> dict[str, Any]:
    """The MIME bundle that shows ``widget`` (a view of its model, and a text form).

    ``fallback`` (``text/plain`` and ``text/html``) goes into the same bundle:
    what a notebook saved while the widget was live shows where no kernel
    holds the widget's model (a reopened notebook, nbconvert, GitHub).
    """
    bundle = _widget_bundle(widget)
    if fallback:
        bundle.update(fallback)
    return bundle


def _widget_bundle(widget: Any) -> dict[str, Any]:
    to_bundle = getattr(widget, "_repr_mimebundle_", None)
    if callable(to_bundle):  # ipywidgets 8
        shown: dict[str, Any] | None = to_bundle()
        if shown:
            return dict(shown)
    # ipywidgets 7: what Widget._ipython_display_ sends, kept in one bundle.
    plain = repr(widget)
    if len(plain) > _PLAIN_LIMIT:
        plain = plain[:_PLAIN_LIMIT] + "…"
    bundle: dict[str, Any] = {"text/plain": plain}
    if getattr(widget, "_view_name", None) is not None:
        bundle[WIDGET_MIME] = {"version_major": 2, "version_minor": 0,
                               "model_id": widget.model_id}
        handle_displayed = getattr(widget, "_handle_displayed", None)
        if callable(handle_displayed):  # the widget's on_displayed callbacks
            handle_displayed()
    return bundle
