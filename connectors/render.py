"""Render a Delivery with its template: what the recipient will actually get.

A template is `templates/<channel>/<name>.j2` (see `journeys.templates`): YAML front matter, then a
Jinja2 body, rendered in a sandbox. The front-matter fields are templates too (`subject: "About
{{ product }}"`). Every template sees:

- `user`: the profile's traits, plus `user.id`;
- `event`: the event that started the journey (its properties, plus `event.event` its name and
  `event.timestamp`), the same in every action of the run; empty for a scheduled entry, or a
  segment entry that a profile update caused;
- `current_event`: the event the step ran on (the one that started the run, ended a `wait for`,
  or ended the run, in `on exit`), read like `event`; empty after a timer;
- `journey`: the journey's name (`journey.step` is the step's path);
- each event the journey bound with `as` (`viewed`, `order`...), read like `event`;
- the `with {...}` values as top-level variables (they win over everything above);
- `last_viewed`: the latest bound event whose name ends in "Viewed" (e.g. "Product Viewed"), and
  `product` / `category` taken from it when the send does not give them;
- `recommended`: `recommended.products` (dicts with `product_id` and `category`, best first) and
  `recommended.categories`, the user's next best products and categories as the models saw them
  when the engine decided the message; empty lists when the project predicts nothing yet;
- `predicted`: the user's scores at that moment, `predicted.purchase_30d`, `predicted.churn_30d`
  and every horizon the project's journeys read (null before the first training);
- email only: `unsubscribe_url`, the signed link of `connectors.unsubscribe`.

Nothing renders a hole. A variable that does not exist fails the delivery with a PermanentError
naming it (`category` is undefined, line 12); a property or trait that is absent is false in an
`{% if %}` and takes `| default(...)`, but printing it fails the same way; printing a value that
is null (`None`) fails too. Anything that tries to reach Python internals from a template is a
SecurityError of the sandbox, reported as a PermanentError and never executed.

Each message has a render budget (`RENDER_SECONDS` of the thread's CPU time, `RENDER_CHARS` of
output, all its fields together): the output is checked as `generate()` yields it, and every
`{% for %}` (every `_LOOP_CHECK` items), call and filter or test applied by name checks the time,
so a template that loops for seconds fails that message with a PermanentError naming it and the
limit, in the daemon, the dry-run and `journeys render` alike (docs/connectors.md#templates).

The HTML body of an email is autoescaped (an event property is data, never markup); subjects,
text and push fields are plain text, with line breaks folded so that a value can never start a
new header.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Mapping

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError, nodes, pass_context
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from journeys.templates import VIEWED_SUFFIX

from .base import Delivery
from .errors import ConfigurationError, InvalidRecipient, PermanentError

EMAIL_FIELDS = ("subject", "from", "reply_to", "preheader", "text", "headers")
PUSH_FIELDS = ("title", "url", "image", "data")
# Headers a template's `headers:` may not set: the connector owns them.
RESERVED_HEADERS = {"from", "to", "cc", "bcc", "subject", "reply-to", "message-id", "date", "sender",
                    "list-unsubscribe", "list-unsubscribe-post", "mime-version", "content-type",
                    "content-transfer-encoding", "return-path"}
# The helpers the renderer adds when the send does not provide them (see the module docstring).
HELPERS = {"last_viewed", "product", "category"}


# ---------------------------------------------------------------------------------- results

@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    sender: str
    reply_to: str | None
    preheader: str | None
    html: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)  # extra headers, List-Unsubscribe included


@dataclass(frozen=True)
class RenderedPush:
    title: str
    body: str
    url: str | None = None
    image: str | None = None
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderedSms:
    body: str


# ---------------------------------------------------------------------------------- context

class _Absent(StrictUndefined):
    """A trait or property the user or event does not have: false in `if`, usable with
    `default` and `is defined`, an error anywhere it would print or be computed with."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False


class _View:
    """Read-only dot access to a mapping for templates (`viewed.name`, `user.first_name`).

    A plain class with no public attributes of its own, so a property called `items` or `keys`
    is the property, not a dict method; attributes starting with `_` are never looked up."""

    __slots__ = ("_label", "_values", "_text")

    def __init__(self, label: str, values: Mapping[str, Any], text: str = ""):
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_text", text)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: Any) -> Any:
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        label = object.__getattribute__(self, "_label")
        return _Absent(name=f"{label}.{name}")

    def __contains__(self, name: Any) -> bool:
        return name in object.__getattribute__(self, "_values")

    def __iter__(self):
        return iter(object.__getattribute__(self, "_values"))

    def __len__(self) -> int:
        return len(object.__getattribute__(self, "_values"))

    def __bool__(self) -> bool:
        return bool(object.__getattribute__(self, "_values"))

    def __str__(self) -> str:
        return object.__getattribute__(self, "_text")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("read-only")


def _is_event(value: Any) -> bool:
    return isinstance(value, Mapping) and "event" in value and set(value) <= {"event", "timestamp", "properties"}


def _wrap(label: str, value: Any) -> Any:
    """Events become views (properties first-class, `event`/`timestamp` special); mappings views;
    lists element-wise; anything else as it is."""
    if _is_event(value):
        props = value.get("properties") or {}
        values = {str(k): _wrap(f"{label}.{k}", v) for k, v in props.items()} if isinstance(props, Mapping) else {}
        values["event"] = value.get("event")
        values["timestamp"] = value.get("timestamp")
        values["properties"] = _View(f"{label}.properties", dict(values)) if isinstance(props, Mapping) else props
        return _View(label, values, str(value.get("event") or ""))
    if isinstance(value, Mapping):
        return _View(label, {str(k): _wrap(f"{label}.{k}", v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return [_wrap(f"{label}[{i}]", v) for i, v in enumerate(value)]
    return value


def _event_of(raw: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The triggering event in the `{"event", "timestamp", "properties"}` shape; a Segment-style
    track call (with `type`, `messageId`...) keeps only those three."""
    if not raw:
        return {}
    if "properties" in raw or "event" in raw:
        return {"event": raw.get("event") or raw.get("name"), "timestamp": raw.get("timestamp"),
                "properties": raw.get("properties") or {}}
    return {"event": None, "timestamp": None, "properties": dict(raw)}


def context(delivery: Delivery, **extra: Any) -> dict[str, Any]:
    """Every variable a template of this delivery can use."""
    ctx: dict[str, Any] = {}
    user = {str(k): _wrap(f"user.{k}", v) for k, v in (delivery.profile or {}).items()}
    user["id"] = delivery.user_id
    ctx["user"] = _View("user", user, str(delivery.user_id))
    for key, raw in (("event", delivery.event), ("current_event", delivery.current_event)):
        event = _event_of(raw)
        ctx[key] = _wrap(key, event) if event else _View(key, {})
    ctx["journey"] = _View("journey", {"name": delivery.journey, "step": delivery.step}, delivery.journey)
    named = {str(k): v for k, v in (delivery.named or {}).items()}
    viewed = [v for v in named.values() if _is_event(v) and str(v.get("event") or "").endswith(VIEWED_SUFFIX)]
    if viewed:
        last = max(viewed, key=lambda v: str(v.get("timestamp") or ""))
        props = last.get("properties") or {}
        ctx["last_viewed"] = _wrap("last_viewed", last)
        for key in ("product", "category"):
            source = props.get("name") if key == "product" else props.get("category")
            if source is not None:
                ctx[key] = source
    for name, value in named.items():
        ctx[name] = _wrap(name, value)
    predictions = delivery.predictions or {}
    ctx["recommended"] = _wrap("recommended", predictions.get("recommended") or {"products": [], "categories": []})
    ctx["predicted"] = _wrap("predicted", predictions.get("predicted") or {})
    for name, value in (delivery.data or {}).items():
        ctx[str(name)] = _wrap(str(name), value)
    ctx.update(extra)  # what the renderer itself provides (unsubscribe_url) cannot be overridden
    return ctx


# ---------------------------------------------------------------------------------- rendering

class _NullPrinted(Exception):
    pass


def _finalize(value: Any) -> Any:
    if value is None:
        raise _NullPrinted()
    return value


# ---------------------------------------------------------------------------------- the render budget

RENDER_SECONDS = 1.0  # CPU seconds one message may take to render, all its fields together
RENDER_CHARS = 1_000_000  # characters one message may render, all its fields together
MAX_OUTPUT = RENDER_CHARS  # characters one operator may build: `{{ "x" * 10**9 }}` is refused, not attempted
_LOOP_CHECK = 32  # loop iterations between two looks at the clock


class _OverBudget(Exception):
    """A message's render went over its budget (`what`: which limit, in words)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class _Budget:
    """One message's render budget: CPU time and characters of output, spent by every field of it.

    CPU time of the rendering thread (`time.thread_time`), not the wall clock, so a busy machine
    or the daemon's other threads never make a template fail that would render in time alone.
    The thread's CPU time cannot have passed the budget before as much wall time has, so the
    cheap monotonic clock is read first and the CPU clock (0.2 µs a reading) only after that."""

    __slots__ = ("seconds", "chars", "left", "started", "cpu_started")

    def __init__(self) -> None:
        self.seconds, self.chars = RENDER_SECONDS, RENDER_CHARS
        self.left = self.chars
        self.started, self.cpu_started = time.monotonic(), time.thread_time()

    def check(self) -> None:
        """Between two steps of work (loop iterations, calls, chunks of output)."""
        if (time.monotonic() - self.started > self.seconds
                and time.thread_time() - self.cpu_started > self.seconds):
            raise _OverBudget(f"{self.seconds:g} s of CPU time")

    def spend(self, chars: int) -> None:
        self.left -= chars
        if self.left < 0:
            raise _OverBudget(f"{self.chars:,} characters")
        self.check()


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("journeys_render_budget", default=None)


@contextlib.contextmanager
def _message_budget() -> Iterator[_Budget]:
    """The budget of the message being rendered: a new one, or the one already running (so every
    field of a message spends the same one)."""
    running = _BUDGET.get()
    if running is not None:
        yield running
        return
    budget = _Budget()
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def _check() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.check()


_LOOP_FILTER = "_journeys_budget"  # what every `{% for %}` iterates through (see `_compiled`)


@pass_context
def _counted(context: Any, iterable: Any) -> Iterator[Any]:
    """A loop's items, the budget checked every `_LOOP_CHECK` of them, so loops that print nothing
    are bounded too. Chained slices: no Python code runs for the items in between."""
    budget = _BUDGET.get()
    if budget is None:
        return iter(iterable)
    items = iter(iterable)

    def chunk() -> list[Any]:
        budget.check()
        return list(itertools.islice(items, _LOOP_CHECK))

    return itertools.chain.from_iterable(iter(chunk, []))


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox (which refuses a `range` of more than MAX_RANGE items), `*` / `**` bounded
    so a template cannot exhaust memory or CPU in one operation, and every call (functions,
    methods, macros) and every filter or test applied by name (`map`, `select`...) a check of
    the message's render budget."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if (isinstance(left, int) and isinstance(right, int) and abs(left) > 1
                    and left.bit_length() * abs(right) > 4096):
                raise SecurityError("power too large for a template")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_OUTPUT:
                    raise SecurityError("repetition too large for a template")
        return super().call_binop(context, operator, left, right)

    def call(self, context, obj, /, *args, **kwargs):
        _check()
        return super().call(context, obj, *args, **kwargs)

    def call_filter(self, *args, **kwargs):
        _check()
        return super().call_filter(*args, **kwargs)

    def call_test(self, *args, **kwargs):
        _check()
        return super().call_test(*args, **kwargs)


def _env(html: bool) -> SandboxedEnvironment:
    env = _Sandbox(undefined=StrictUndefined, autoescape=html, keep_trailing_newline=True, finalize=_finalize)
    env.filters[_LOOP_FILTER] = _counted
    return env


_ENVS = {True: _env(True), False: _env(False)}


@functools.lru_cache(maxsize=512)
def _compiled(source: str, html: bool):
    """The template, each `{% for %}` iterating through `_counted` (Jinja compiles a parsed tree as
    well as a source: `Environment.from_string` takes either)."""
    env = _ENVS[html]
    tree = env.parse(source)
    for loop in list(tree.find_all(nodes.For)):
        loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.iter.lineno)
    return env.from_string(tree)


def _template_line(tb: TracebackType | None, filename: str, first_line: int) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return None if line is None else first_line + line - 1


def _render(source: str, ctx: Mapping[str, Any], *, where: str, html: bool = False, first_line: int = 1,
            field_name: str | None = None) -> str:
    """Render one template string, mapping every failure to a PermanentError that names the
    template, the field or line, and the variable."""
    label = f"{where}" + (f" ({field_name})" if field_name else "")
    filename = "<template>"  # what Jinja names the code of a template compiled from a string
    try:
        with _message_budget() as budget:
            out: list[str] = []
            for chunk in _compiled(source, html).generate(ctx):  # the output checked as it comes
                budget.spend(len(chunk))
                out.append(chunk)
            return "".join(out)
    except _OverBudget as e:
        line = _template_line(e.__traceback__, filename, first_line)
        at = f" (stopped at line {line})" if line and not field_name else ""
        raise PermanentError(f"template {label} went over its render budget of {e.what}{at}; "
                             "render less: fewer or smaller loops") from None
    except TemplateSyntaxError as e:
        raise PermanentError(f"template {label}: syntax error at line {first_line + (e.lineno or 1) - 1}: "
                             f"{e.message}") from None
    except SecurityError as e:
        raise PermanentError(f"template {label} tried something the sandbox forbids: {e}") from None
    except UndefinedError as e:
        line = _template_line(e.__traceback__, filename, first_line)
        name = _undefined_name(str(e))
        at = f" at line {line}" if line and not field_name else ""
        raise PermanentError(f"template {label}: {name} is undefined{at}; give it in `with {{...}}` "
                             f"or write `{{{{ {name.strip('`')} | default(\"...\") }}}}`") from None
    except _NullPrinted as e:
        line = _template_line(e.__traceback__, filename, first_line)
        at = f" at line {line}" if line and not field_name else ""
        raise PermanentError(f"template {label}: a value printed{at} is null; "
                             "use `| default(\"...\", true)` where a value may be missing") from None
    except TemplateError as e:
        raise PermanentError(f"template {label}: {e}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as e:
        raise PermanentError(f"template {label} failed: {type(e).__name__}: {e}") from None


def _undefined_name(message: str) -> str:
    m = re.match(r"'(.+?)' is undefined", message)
    if m:
        return f"`{m.group(1)}`"
    m = re.match(r"'(.+?)' has no attribute '(.+?)'", message)
    if m:
        return f"`{m.group(2)}` (of {m.group(1)})"
    return message


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _field(tpl, key: str, ctx: Mapping[str, Any], *, required: bool = False) -> str | None:
    raw = tpl.front.get(key)
    if raw is None:
        if required:
            raise PermanentError(f"template {tpl.channel}/{tpl.name} has no `{key}` in its front matter")
        return None
    if not isinstance(raw, (str, int, float)):
        raise PermanentError(f"template {tpl.channel}/{tpl.name}: `{key}` must be text")
    value = _one_line(_render(str(raw), ctx, where=f"{tpl.channel}/{tpl.name}", field_name=key))
    if required and not value:
        raise PermanentError(f"template {tpl.channel}/{tpl.name}: `{key}` rendered empty")
    return value or None


def _field_map(tpl, key: str, ctx: Mapping[str, Any]) -> dict[str, str]:
    raw = tpl.front.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise PermanentError(f"template {tpl.channel}/{tpl.name}: `{key}` must be `name: value` pairs")
    return {str(k): _one_line(_render(str(v), ctx, where=f"{tpl.channel}/{tpl.name}", field_name=f"{key}.{k}"))
            for k, v in raw.items()}


def render_email(template, delivery: Delivery, *, unsubscribe_url: str, default_sender: str | None = None) -> RenderedEmail:
    """The email of this delivery. `template`: a `journeys.templates.Template` of channel email."""
    with _message_budget():
        return _render_email(template, delivery, unsubscribe_url, default_sender)


def _render_email(template, delivery: Delivery, unsubscribe_url: str, default_sender: str | None) -> RenderedEmail:
    where = f"{template.channel}/{template.name}"
    ctx = context(delivery, unsubscribe_url=unsubscribe_url)
    subject = _field(template, "subject", ctx, required=True)
    sender = _field(template, "from", ctx) or default_sender
    if not sender:
        raise ConfigurationError(f"template {where} has no `from` and the connector has no default `from`")
    reply_to = _field(template, "reply_to", ctx)
    preheader = _field(template, "preheader", ctx)
    body = _render(template.body, ctx, where=where, html=True, first_line=template.body_line)
    raw_text = template.front.get("text")
    if raw_text is not None:
        text = _render(str(raw_text), ctx, where=where, field_name="text").strip() + "\n"
    else:
        text = html_to_text(body)
    headers: dict[str, str] = {}
    for name, value in _field_map(template, "headers", ctx).items():
        if name.lower() in RESERVED_HEADERS or not re.fullmatch(r"[A-Za-z0-9-]+", name):
            raise PermanentError(f"template {where}: header `{name}` cannot be set by a template")
        headers[name] = value
    headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    html = _with_preheader(body, preheader) if preheader else body
    return RenderedEmail(subject=subject or "", sender=sender, reply_to=reply_to, preheader=preheader,
                         html=html, text=text, headers=headers)


def render_push(template, delivery: Delivery) -> RenderedPush:
    where = f"{template.channel}/{template.name}"
    ctx = context(delivery)
    with _message_budget():
        title = _field(template, "title", ctx, required=True) or ""
        body = _one_line(_render(template.body, ctx, where=where, first_line=template.body_line))
        return RenderedPush(title=title, body=body, url=_field(template, "url", ctx),
                            image=_field(template, "image", ctx), data=_field_map(template, "data", ctx))


def render_sms(template, delivery: Delivery) -> RenderedSms:
    where = f"{template.channel}/{template.name}"
    body = _render(template.body, context(delivery), where=where, first_line=template.body_line).strip()
    if not body:
        raise PermanentError(f"template {where} rendered an empty message")
    return RenderedSms(body=body)


def _with_preheader(html: str, preheader: str) -> str:
    """The preheader as the hidden first text of the body: what inboxes show after the subject."""
    from html import escape

    block = ('<div style="display:none; max-height:0; overflow:hidden; mso-hide:all;" aria-hidden="true">'
             f"{escape(preheader)}</div>")
    m = re.search(r"<body\b[^>]*>", html, re.I)
    if m:
        return html[:m.end()] + "\n" + block + html[m.end():]
    return block + "\n" + html


# ---------------------------------------------------------------------------------- text from HTML

_BLOCK = {"p", "div", "table", "tr", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre",
          "section", "article", "header", "footer", "center", "dl", "dt", "dd", "address", "hr", "title"}
_SKIP = {"head", "style", "script", "title", "template", "noscript"}


class _TextMaker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.links: list[tuple[str | None, int]] = []  # (href, where its text starts in out)
        self.pre = 0

    def _newline(self, n: int = 1) -> None:
        self.out.append("\n" * n)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
            return
        if self.skip:
            return
        a = dict(attrs)
        if tag in _BLOCK:
            self._newline(2 if tag in ("p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote") else 1)
        if tag == "pre":
            self.pre += 1
        elif tag == "br":
            self._newline()
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "hr":
            self.out.append("\n----\n")
        elif tag == "img":
            alt = (a.get("alt") or "").strip()
            if alt:
                self.out.append(alt)
        elif tag == "a":
            self.links.append((a.get("href"), len(self.out)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "a":
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag == "a" and self.links:
            href, start = self.links.pop()
            label = _one_line("".join(self.out[start:]))
            href = (href or "").strip()
            if href and not href.startswith("#") and not href.lower().startswith("javascript:"):
                shown = href[7:] if href.lower().startswith("mailto:") else href
                if label and label != shown and label != href:
                    self.out[start:] = [f"{label} ({href[7:] if href.lower().startswith('mailto:') else href})"]
                else:
                    self.out[start:] = [shown]
        elif tag in _BLOCK:
            self._newline(2 if tag in ("p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote") else 1)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self.out.append(data if self.pre else re.sub(r"[ \t\r\n\f]+", " ", data))


def html_to_text(html: str) -> str:
    """A plain-text alternative of an HTML email: paragraphs and lines kept, links as
    "text (url)", styles, scripts and the head dropped. Standard library only."""
    maker = _TextMaker()
    maker.feed(html)
    maker.close()
    lines = [line.strip(" \t") for line in "".join(maker.out).splitlines()]
    text = "\n".join(lines)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return text + "\n" if text else ""


# ---------------------------------------------------------------------------------- templates on disk

class TemplateStore:
    """A project's templates, loaded on first use and reloaded when their file changes."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, channel: str, name: str):
        from journeys.diagnostics import Diagnostics
        from journeys.templates import load_template

        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise ConfigurationError(f"no {channel} template named {name!r}")
        path = self.root / "templates" / channel / f"{name}.j2"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            raise ConfigurationError(f"no {channel} template `{name}`: {path} does not exist") from None
        with self._lock:
            hit = self._cache.get((channel, name))
            if hit and hit[0] == mtime:
                return hit[1]
        diags = Diagnostics()
        tpl = load_template(path, channel, str(path), diags)
        if diags.has_errors:
            first = next(d for d in diags.sorted() if d.is_error)
            raise ConfigurationError(f"template {channel}/{name} is broken: {first.message}")
        with self._lock:
            self._cache[(channel, name)] = (mtime, tpl)
        return tpl


# ---------------------------------------------------------------------------------- email plumbing

_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+\.[^@\s<>(),;:\"\[\]\\]+$")


def recipient(delivery: Delivery, trait: str = "email") -> str:
    """The recipient's address from the profile, or InvalidRecipient."""
    value = (delivery.profile or {}).get(trait)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidRecipient(f"user {delivery.user_id} has no `{trait}` in their profile")
    if not isinstance(value, str) or not _ADDRESS.match(value.strip()):
        raise InvalidRecipient(f"user {delivery.user_id}'s `{trait}` is not an email address: {str(value)[:80]!r}",
                               stale=value if isinstance(value, str) else None)
    return value.strip()


class EmailRenderer:
    """Template lookup, unsubscribe link and rendering, shared by every email connector."""

    def __init__(self, templates: "TemplateStore | Path | str", *, public_url: str | None,
                 env: Mapping[str, str], default_sender: str | None = None):
        self.templates = templates if isinstance(templates, TemplateStore) else TemplateStore(Path(templates))
        self.public_url = public_url
        self.env = env
        self.default_sender = default_sender

    def render(self, delivery: Delivery) -> RenderedEmail:
        from . import unsubscribe

        url = unsubscribe.url_for(delivery.user_id, "email", public_url=self.public_url,
                                  secret=unsubscribe.secret_from(self.env))
        tpl = self.templates.get("email", delivery.target)
        return render_email(tpl, delivery, unsubscribe_url=url, default_sender=self.default_sender)
