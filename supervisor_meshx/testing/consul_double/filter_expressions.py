"""go-bexpr filters (?filter=): a boolean expression over the JSON views, Go field names as selectors."""

import json
import re


class FilterError(Exception):
    pass


class Filter:
    """A go-bexpr boolean expression evaluated over the JSON views (Go field names as selectors)."""

    _TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<num>-?[0-9]+(?:\.[0-9]+)?)'
                        r'|(?P<op>==|!=|\(|\))|(?P<word>[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*))')

    def __init__(self, expression):
        self.expression = expression
        self.tokens = self._tokenize(expression)
        self.pos = 0
        self.tree = self._or()
        if self.pos < len(self.tokens):
            self._fail()

    def _tokenize(self, text):
        tokens, offset = [], 0
        while offset < len(text):
            if not text[offset:].strip():
                break
            match = self._TOKEN.match(text, offset)
            if not match or match.end() == offset:
                start = len(text) - len(text[offset:].lstrip())
                tokens.append(("bad", text[start:], start))
                break
            kind = match.lastgroup
            tokens.append((kind, match.group(kind), match.start(kind)))
            offset = match.end()
        return tokens

    def _peek(self, *words):
        if self.pos < len(self.tokens):
            kind, value, _ = self.tokens[self.pos]
            if not words or (kind in ("word", "op") and value in words):
                return self.tokens[self.pos]
        return None

    def _take(self, *words):
        token = self._peek(*words)
        if token is not None:
            self.pos += 1
        return token

    def _fail(self):
        offset = self.tokens[self.pos][2] if self.pos < len(self.tokens) else len(self.expression)
        line = self.expression.count("\n", 0, offset) + 1
        column = offset - (self.expression.rfind("\n", 0, offset) + 1) + 1
        raise FilterError('%d:%d (%d): no match found, expected: "!=", ".", "==", "[", [ \\t\\r\\n] or [a-zA-Z0-9_/]'
                          % (line, column, offset))

    def _or(self):
        node = self._and()
        while self._take("or"):
            node = ("or", node, self._and())
        return node

    def _and(self):
        node = self._not()
        while self._take("and"):
            node = ("and", node, self._not())
        return node

    def _not(self):
        if self._take("not"):
            return ("not", self._not())
        if self._take("("):
            node = self._or()
            if not self._take(")"):
                self._fail()
            return node
        return self._match()

    def _match(self):
        first = self._take()
        if first is None or first[0] not in ("word", "str", "num"):
            self.pos -= first is not None
            self._fail()
        if first[0] != "word" or self._peek("in", "not"):
            # value [not] in selector
            negate = bool(self._take("not"))
            if not self._take("in"):
                self._fail()
            selector = self._take()
            if selector is None or selector[0] != "word":
                self._fail()
            node = ("in", self._literal(first), selector[1])
            return ("not", node) if negate else node
        selector = first[1]
        if self._take("is"):
            negate = bool(self._take("not"))
            if not self._take("empty"):
                self._fail()
            node = ("empty", selector)
            return ("not", node) if negate else node
        negate = False
        if self._take("not"):
            negate = True
        operator = self._take("==", "!=", "contains", "matches")
        if operator is None or (negate and operator[1] in ("==", "!=")):
            self._fail()
        value = self._take()
        if value is None or value[0] not in ("word", "str", "num"):
            self.pos -= value is not None
            self._fail()
        node = (operator[1], selector, self._literal(value))
        return ("not", node) if negate else node

    @staticmethod
    def _literal(token):
        kind, value, _ = token
        if kind == "str":
            return json.loads(value) if value.startswith('"') else value[1:-1]
        return value

    def matches(self, view):
        return self._eval(self.tree, view)

    def _eval(self, node, view):
        op = node[0]
        if op == "or":
            return self._eval(node[1], view) or self._eval(node[2], view)
        if op == "and":
            return self._eval(node[1], view) and self._eval(node[2], view)
        if op == "not":
            return not self._eval(node[1], view)
        if op == "in":
            return self._contains(self._select(view, node[2]), node[1])
        if op == "empty":
            value = self._select(view, node[1])
            return value is _MISSING or not value
        value = self._select(view, node[1])
        if op == "contains":
            return self._contains(value, node[2])
        if op == "matches":
            return isinstance(value, str) and re.search(node[2], value) is not None
        equal = value is not _MISSING and self._equal(value, node[2])
        return equal if op == "==" else not equal

    @staticmethod
    def _select(view, selector):
        value = view
        for part in selector.split("."):
            if isinstance(value, list):
                value = [item.get(part, _MISSING) for item in value if isinstance(item, dict)]
            elif isinstance(value, dict) and part in value:
                value = value[part]
            else:
                return _MISSING
        return value

    @staticmethod
    def _equal(value, literal):
        if isinstance(value, bool):
            return literal in ("true", "false") and value == (literal == "true")
        if isinstance(value, (int, float)):
            try:
                return value == float(literal)
            except ValueError:
                return False
        return isinstance(value, str) and value == literal

    @classmethod
    def _contains(cls, value, literal):
        if isinstance(value, dict):
            return literal in value
        if isinstance(value, list):
            return any(item is not _MISSING and cls._equal(item, literal) for item in value)
        if isinstance(value, str):
            return literal in value
        return False


_MISSING = object()
