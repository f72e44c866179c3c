"""Go's encoding/json as Consul uses it: strict decoding of request bodies (DisallowUnknownFields, Go's error
texts) and the encoding of answers."""

import json

from .go_duration import GoDuration


class DecodeError(Exception):
    pass


class _Pairs(list):
    """A JSON object as decoded: its (key, value) pairs in document order."""


class _Number(float):
    """A JSON number with a fraction or exponent, remembering its literal for Go's error text."""

    def __new__(cls, literal):
        number = float.__new__(cls, literal)
        number.literal = literal
        return number


class Scalar:
    def __init__(self, go_type):
        self.go_type = go_type


STRING, INT, BOOL, DURATION, ANY = (Scalar("string"), Scalar("int"), Scalar("bool"),
                                    Scalar("time.Duration"), Scalar("interface {}"))


class ListOf:
    def __init__(self, item):
        self.item = item
        self.go_type = "[]" + item.go_type


class MapOf:
    def __init__(self, value):
        self.value = value
        self.go_type = "map[string]" + value.go_type


class Struct:
    """A Go struct: canonical field names (matched case-insensitively) plus explicit snake_case aliases."""

    def __init__(self, go_type, fields, aliases=None, lenient=False):
        self.go_type = go_type
        self.fields = fields
        self.lenient = lenient  # decoded with plain json.Unmarshal: unknown keys are ignored
        self.keys = {name.lower(): name for name in fields}
        for alias, name in (aliases or {}).items():
            self.keys[alias.lower()] = name

    def add_field(self, name, kind):
        """For recursive structs (a SidecarService is a ServiceDefinition)."""
        self.fields[name] = kind
        self.keys[name.lower()] = name


def _struct_name(struct):
    return struct.go_type.rsplit(".", 1)[-1]


class GoJSONDecoder:
    """Decodes a request body the way Consul's decodeBody does, with Go's error texts."""

    def decode(self, body, struct):
        text = body.decode("utf-8", "replace")
        start = len(text) - len(text.lstrip(" \t\r\n"))
        if start == len(text):
            raise DecodeError("EOF")
        try:
            # json.Decoder.Decode reads one value: trailing data is never looked at
            value, _ = json.JSONDecoder(object_pairs_hook=_Pairs, parse_float=_Number,
                                        parse_constant=self._reject_constant).raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise DecodeError(self._syntax_error(text, exc))
        except _ConstantError as exc:
            raise DecodeError("invalid character %s looking for beginning of value" % _go_char(str(exc)[0]))
        if not isinstance(value, _Pairs):
            if value is None:
                return {}
            raise DecodeError("json: cannot unmarshal %s into Go value of type %s"
                              % (self._json_kind(value), struct.go_type))
        return self._struct(value, struct, _struct_name(struct), [])

    @staticmethod
    def _reject_constant(name):
        raise _ConstantError(name)

    def _struct(self, pairs, struct, root, path):
        out = {}
        for key, value in pairs:
            name = struct.keys.get(key.lower())
            if name is None:
                if struct.lenient:
                    continue
                raise DecodeError("json: unknown field " + json.dumps(key, ensure_ascii=False))
            converted = self._value(value, struct.fields[name], root, path + [name])
            if converted is not None:
                out[name] = converted
            else:
                out.pop(name, None)
        return out

    def _value(self, value, kind, root, path):
        if value is None:
            return None
        if kind is ANY:
            return self._plain(value)
        if kind is DURATION:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                self._type_error(value, kind, root, path)
            if isinstance(value, str):
                try:
                    return GoDuration.parse(value)
                except ValueError as exc:
                    raise DecodeError(str(exc))
            return int(value)  # a JSON number is nanoseconds
        if kind is STRING:
            if not isinstance(value, str):
                self._type_error(value, kind, root, path)
            return value
        if kind is BOOL:
            if not isinstance(value, bool):
                self._type_error(value, kind, root, path)
            return value
        if kind is INT:
            if isinstance(value, bool) or not isinstance(value, int):
                self._type_error(value, kind, root, path)
            return value
        if isinstance(kind, Struct):
            if not isinstance(value, _Pairs):
                self._type_error(value, kind, root, path)
            return self._struct(value, kind, root, path)
        if isinstance(kind, ListOf):
            if not isinstance(value, list) or isinstance(value, _Pairs):
                self._type_error(value, kind, root, path)
            return [self._zero(kind.item) if item is None else self._value(item, kind.item, root, path)
                    for item in value]
        if isinstance(kind, MapOf):
            if not isinstance(value, _Pairs):
                self._type_error(value, kind, root, path)
            out = {}
            for key, item in value:
                out[key] = self._zero(kind.value) if item is None else self._value(item, kind.value, root, path)
            return out
        raise AssertionError(kind)

    @staticmethod
    def _zero(kind):
        return {STRING: "", INT: 0, BOOL: False, DURATION: 0}.get(kind, {} if isinstance(kind, Struct) else None)

    def _plain(self, value):
        if isinstance(value, _Pairs):
            return {key: self._plain(item) for key, item in value}
        if isinstance(value, list):
            return [self._plain(item) for item in value]
        if isinstance(value, _Number):
            return float(value)
        return value

    def _type_error(self, value, kind, root, path):
        raise DecodeError("json: cannot unmarshal %s into Go struct field %s of type %s"
                          % (self._json_kind(value), ".".join([root] + path), kind.go_type))

    @staticmethod
    def _json_kind(value):
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, _Number):
            return "number " + value.literal
        if isinstance(value, int):
            return "number " + str(value)
        if isinstance(value, str):
            return "string"
        if isinstance(value, _Pairs):
            return "object"
        return "array"

    @staticmethod
    def _syntax_error(text, exc):
        pos = exc.pos
        if pos >= len(text) or exc.msg.startswith("Unterminated string"):
            return "unexpected EOF"
        char = _go_char(text[pos])
        if exc.msg.startswith("Invalid control character"):
            return "invalid character %s in string literal" % char
        if exc.msg.startswith("Expecting property name"):
            return "invalid character %s looking for beginning of object key string" % char
        if exc.msg.startswith("Expecting ':'"):
            return "invalid character %s after object key" % char
        if exc.msg.startswith("Expecting ','"):
            return "invalid character %s after %s" % (char, GoJSONDecoder._container(text, pos))
        if exc.msg.startswith("Invalid \\escape"):
            return "invalid character %s in string escape code" % _go_char(text[pos + 1:pos + 2] or " ")
        return "invalid character %s looking for beginning of value" % char

    @staticmethod
    def _container(text, pos):
        in_string, escaped, stack = False, False, []
        for char in text[:pos]:
            if in_string:
                escaped = char == "\\" and not escaped
                if char == '"' and not escaped:
                    in_string = False
                continue
            if char == '"':
                in_string = True
            elif char in "[{":
                stack.append(char)
            elif char in "]}" and stack:
                stack.pop()
        return "array element" if stack and stack[-1] == "[" else "object key:value pair"


class _ConstantError(Exception):
    pass


def _go_char(char):
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    if char.isprintable():
        return "'%s'" % char
    return "'%s'" % json.dumps(char)[1:-1]


def go_json(value, pretty=False):
    """json.Marshal (HTML-escaped, compact) or MarshalIndent with 4 spaces and a trailing newline."""
    if pretty:
        text = json.dumps(value, ensure_ascii=False, indent=4, separators=(",", ": ")) + "\n"
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text.encode("utf-8")


def sorted_map(value):
    """Go marshals map keys in sorted order."""
    if isinstance(value, dict):
        return {key: sorted_map(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_map(item) for item in value]
    return value


def omit_empty(mapping, names):
    return {name: mapping[name] for name in names if mapping.get(name) not in (None, "", 0, False, [], {})}


def sorted_keys(mapping):
    return {key: mapping[key] for key in sorted(mapping)}
