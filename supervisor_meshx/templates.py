"""Rendering of MeshxConsul-style templates.

A template is JSON-like data (dicts with string keys, lists, strings, numbers,
bools, None).  Every string leaf is a Mustache template rendered with the
caller's variables; dict keys and non-string leaves are left alone.  A leaf
that is exactly ``"{{$name$}}"`` is replaced by the variable's value itself,
keeping its type (so ``"{{$port$}}"`` gives an int, as MeshxConsul does).
"""

import copy
import json
import math
import re

from chevron.tokenizer import ChevronError, tokenize

from supervisor_meshx.wire import NOT_XML

MAX_DEPTH = 32  # nested dicts/lists in templates and variables; nested sections
MAX_STRING = 64 * 1024  # characters in one template string
MAX_OUTPUT = 1024 * 1024  # characters of rendered text, whole template together
MAX_STEPS = 1024 * 1024  # tags and section iterations, whole template together

# "{{$name$}}", whitespace allowed inside the braces and the dollars.
_TYPED_LEAF = re.compile(r"\{\{\s*\$\s*([^\s${}]+)\s*\$\s*\}\}")
_MISSING = object()


class TemplateError(ValueError):
    """A template or its variables cannot be rendered; str() is the reason."""


def render(template, variables):
    """Render *template* with *variables* and return a new structure.

    String leaves are Mustache templates.  Values are inserted without HTML
    escaping (``{{x}}`` and ``{{{x}}}`` are the same); strings as they are,
    None as "", anything else as JSON (``true``, ``12``, ``[1, 2]``).  A
    variable tag naming an unknown variable is an error (MeshxConsul renders
    with ``raise_on_context_miss``); a section on an unknown name is simply
    false, so ``{{#token}}...{{/token}}`` works as an optional part.  Dotted
    names (``a.b``, ``list.0``) look into dicts and lists only.  Partials are
    not supported.

    A leaf that is exactly ``{{$name$}}`` (whitespace allowed inside the
    braces) becomes a copy of the variable's value with its own type; an
    unknown name is an error, and so is ``{{$name$}}`` inside a longer string.

    Raises TemplateError for malformed Mustache, non-JSON-like data, nesting
    deeper than MAX_DEPTH, or rendering work beyond MAX_OUTPUT/MAX_STEPS.
    """
    if not isinstance(variables, dict):
        raise TemplateError("variables must be a dict")
    _check(variables, ("variables",))
    _check(template, ("template",))
    return _render_node(template, ("template",), variables, _Budget())


def merge_defaults(given, defaults):
    """Return a new dict: *given* plus every top-level key of *defaults* it lacks.

    Keys are defaulted independently, as MeshxConsul does for ``registration``,
    ``ttl`` and ``proxy``.  A key that is present keeps its value even when it
    is None or empty: that is how a caller disables e.g. the proxy.  *given*
    None means "all defaults".  Default values are deep-copied so the result
    can be modified without touching *defaults*.
    """
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise TemplateError(f"template must be a dict, got {type(given).__name__}")
    return {**copy.deepcopy(defaults), **given}


def _where(path):
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return text.lstrip(".")


def check_data(value, name):
    """Raise TemplateError unless ``value`` is JSON-like, nested at most
    MAX_DEPTH levels, and its strings hold only characters XML can carry."""
    _check(value, (name,))


def _check(value, path):
    """Reject anything that is not JSON-like or is nested too deeply."""
    if isinstance(value, (dict, list, tuple)) and len(path) > MAX_DEPTH:
        raise TemplateError(f"{_where(path)}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TemplateError(f"{_where(path)}: key {key!r} is not a string")
            _check(item, path + (key,))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check(item, path + (index,))
    elif isinstance(value, str) and NOT_XML.search(value):
        raise TemplateError(f"{_where(path)}: holds a control character")
    elif isinstance(value, float) and not math.isfinite(value):
        raise TemplateError(f"{_where(path)}: {value} is not a valid number")
    elif value is not None and not isinstance(value, (str, int, float)):
        raise TemplateError(f"{_where(path)}: unsupported type {type(value).__name__}")


class _Budget:
    """Work done so far by one render() call, so absurd templates fail fast."""

    def __init__(self):
        self.output = 0
        self.steps = 0

    def step(self):
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateError(f"rendering takes more than {MAX_STEPS} steps")

    def emit(self, out, text):
        self.output += len(text)
        if self.output > MAX_OUTPUT:
            raise TemplateError(f"rendered output larger than {MAX_OUTPUT} characters")
        out.append(text)


def _render_node(node, path, variables, budget):
    if isinstance(node, dict):
        return {k: _render_node(v, path + (k,), variables, budget) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_render_node(v, path + (i,), variables, budget) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    try:
        typed = _TYPED_LEAF.fullmatch(node)
        if typed:
            value = _lookup(typed.group(1), [variables])
            if value is _MISSING:
                raise TemplateError(f"unknown variable {typed.group(1)!r}")
            return copy.deepcopy(value)
        out = []
        _render_tree(_parse(node), [variables], budget, out)
        return "".join(out)
    except TemplateError as err:
        raise TemplateError(f"{_where(path)}: {err}") from None


# Why not chevron.render(): it HTML-escapes {{x}} through a module-level
# function (turning that off means patching chevron for the whole process),
# resolves names with getattr() as a fallback (so "{{port.__class__}}" or
# "{{#name.upper}}" reach Python internals) and reads partials from the current
# directory.  Its tokenizer has none of these problems, so we tokenize with
# chevron and evaluate the few Mustache tag kinds here, on plain data only.
# (The tokenizer keeps line numbers in module globals: under concurrent use only
# the line numbers in error messages can be off.)
def _parse(text):
    """Tokenize *text* with chevron and nest sections: a list of nodes.

    A node is ("literal", text), ("variable", name) or
    (kind, name, children) with kind "section" or "inverted section".
    """
    if len(text) > MAX_STRING:
        raise TemplateError(f"template string longer than {MAX_STRING} characters")
    try:
        tokens = list(tokenize(text))
    except ChevronError as err:
        # chevron's messages span lines; the reason must fit on one.
        raise TemplateError(" ".join(str(err).split())) from None
    except IndexError:  # chevron's way of failing on "{{}}"
        raise TemplateError("empty tag") from None

    root = []
    stack = [root]
    left, right = "{{", "}}"
    for kind, key in tokens:
        if kind == "literal":
            stack[-1].append((kind, key))
            continue
        if kind == "set delimiter":
            delimiters = key.split(" ")
            left, right = delimiters[0], delimiters[-1]
            if len(delimiters) < 2 or not left or not right:
                raise TemplateError(f"bad set-delimiter tag {key!r}")
            continue
        if not key:
            raise TemplateError("empty tag")
        if kind in ("variable", "no escape"):
            if len(key) > 1 and key[0] == key[-1] == "$":
                raise TemplateError(f"typed tag {{{{{key}}}}} must be the whole string")
            stack[-1].append(("variable", key))
        elif kind in ("section", "inverted section"):
            if len(stack) > MAX_DEPTH:
                raise TemplateError(f"sections nested deeper than {MAX_DEPTH} levels")
            children = []
            stack[-1].append((kind, key, children))
            stack.append(children)
        elif kind == "end":
            stack.pop()  # chevron has already checked that sections balance
        elif kind == "partial":
            raise TemplateError(f"partials are not supported ({{{{>{key}}}}})")
        else:  # "no escape?": "{{{name}}" without the third closing brace
            raise TemplateError(f"triple mustache {{{{{{{key}}}}} lacks a closing brace")
    # chevron silently drops an opening delimiter at the very end.
    if text.endswith(left) and left != right:
        raise TemplateError(f"unclosed tag {left!r} at end of string")
    return root


def _lookup(name, scopes):
    """Mustache name resolution through dicts and lists only (no attributes)."""
    if name == ".":
        return scopes[-1]
    first, *rest = name.split(".")
    for scope in reversed(scopes):
        if isinstance(scope, dict) and first in scope:
            value = scope[first]
            break
    else:
        return _MISSING
    for part in rest:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and part.isascii() and part.isdigit() \
                and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _format(value):
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def _render_tree(nodes, scopes, budget, out):
    for node in nodes:
        budget.step()
        kind, name = node[0], node[1]
        if kind == "literal":
            budget.emit(out, name)
            continue
        value = _lookup(name, scopes)
        if kind == "variable":
            if value is _MISSING:
                raise TemplateError(f"unknown variable {name!r}")
            budget.emit(out, _format(value))
        elif kind == "inverted section":
            if value is _MISSING or not value:
                _render_tree(node[2], scopes, budget, out)
        elif value is not _MISSING and value:
            for item in value if isinstance(value, (list, tuple)) else [value]:
                budget.step()
                scopes.append(item)
                _render_tree(node[2], scopes, budget, out)
                scopes.pop()
