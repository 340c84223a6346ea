"""A browser's part in TikTok's OAuth, for tests: open the authorize URL, fill in the consent form
the sandbox shows, press Approve or Deny, and follow the redirect back to Reelay's callback."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx


@dataclass
class Form:
    """One HTML form as a browser sees it."""

    action: str
    method: str
    hidden: list[tuple[str, str]] = field(default_factory=list)
    checkboxes: list[tuple[str, str, bool]] = field(default_factory=list)  # name, value, checked
    selects: dict[str, list[tuple[str, str, bool]]] = field(default_factory=dict)  # value, text, selected
    buttons: list[tuple[str, str]] = field(default_factory=list)  # name, value


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._select: str | None = None
        self._option: tuple[str, bool] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(action=a.get("action", ""), method=a.get("method", "get").lower()))
        elif not self.forms:
            return
        form = self.forms[-1]
        if tag == "input" and a.get("type") == "hidden":
            form.hidden.append((a["name"], a.get("value", "")))
        elif tag == "input" and a.get("type") == "checkbox":
            form.checkboxes.append((a["name"], a.get("value", "on"), "checked" in a))
        elif tag == "select":
            self._select = a["name"]
            form.selects[self._select] = []
        elif tag == "option" and self._select is not None:
            self._option = (a.get("value", ""), "selected" in a)
        elif tag == "button" and a.get("type", "submit") == "submit":
            form.buttons.append((a.get("name", ""), a.get("value", "")))

    def handle_data(self, data: str) -> None:
        if self._option is not None and self._select is not None:
            value, selected = self._option
            self.forms[-1].selects[self._select].append((value, data.strip(), selected))
            self._option = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def forms_of(page: str) -> list[Form]:
    """The forms of an HTML page."""
    parser = _FormParser()
    parser.feed(page)
    return parser.forms


async def consent(
    http: httpx.AsyncClient,
    authorize_url: str,
    *,
    decision: str = "approve",
    creator: str | None = None,
    grant: set[str] | None = None,
    follow: bool = True,
) -> httpx.Response:
    """Open `authorize_url`, choose the sandbox `creator` (its username; else the page's choice),
    tick only `grant` (else what the page ticked), press `decision`; the callback's answer when
    `follow`, else TikTok's redirect."""
    page = await http.get(authorize_url)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    [form] = forms_of(page.text)
    assert form.method == "post"
    fields: list[tuple[str, str]] = list(form.hidden)
    for name, options in form.selects.items():
        if creator is not None and name == "sandbox_user":
            chosen = [v for v, text, _ in options if text.split(" ", 1)[0] == creator]
            assert chosen, f"no creator {creator!r} on the consent page: {options}"
        else:
            chosen = [v for v, _, selected in options if selected] or [options[0][0]]
        fields.append((name, chosen[0]))
    for name, value, checked in form.checkboxes:
        if (grant is None and checked) or (grant is not None and value in grant):
            fields.append((name, value))
    assert (("decision", decision)) in form.buttons, f"no {decision} button: {form.buttons}"
    fields.append(("decision", decision))
    return await http.post(
        urljoin(str(page.url), form.action), data=dict(_multi(fields)), follow_redirects=follow
    )


def _multi(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in fields:
        out.setdefault(name, []).append(value)
    return out
