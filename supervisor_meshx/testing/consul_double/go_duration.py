"""Go's time.Duration in JSON and query parameters: ParseDuration and String, in integer nanoseconds."""

import json
import re


SECOND = 10 ** 9


class GoDuration:
    """Go's time.ParseDuration and Duration.String, in integer nanoseconds."""

    UNITS = {"ns": 1, "us": 10 ** 3, "\u00b5s": 10 ** 3, "\u03bcs": 10 ** 3, "ms": 10 ** 6, "s": SECOND,
             "m": 60 * SECOND, "h": 3600 * SECOND}
    _NUMBER = re.compile(r"([0-9]*)(?:\.([0-9]*))?")
    _UNIT = re.compile(r"[^0-9.]*")

    @classmethod
    def parse(cls, text):
        quoted = json.dumps(text, ensure_ascii=False)
        invalid = ValueError("time: invalid duration " + quoted)
        rest, negative = text, False
        if rest[:1] in ("-", "+"):
            negative, rest = rest[0] == "-", rest[1:]
        if rest == "0":
            return 0
        if not rest:
            raise invalid
        total = 0
        while rest:
            number = cls._NUMBER.match(rest)
            whole, frac = number.group(1), number.group(2)
            if not whole and not frac:
                raise invalid
            rest = rest[number.end():]
            unit = cls._UNIT.match(rest).group()
            rest = rest[len(unit):]
            if not unit:
                raise ValueError("time: missing unit in duration " + quoted)
            if unit not in cls.UNITS:
                raise ValueError("time: unknown unit %s in duration %s"
                                 % (json.dumps(unit, ensure_ascii=False), quoted))
            scale = cls.UNITS[unit]
            total += int(whole or 0) * scale
            if frac:
                total += int(int(frac) * scale / 10 ** len(frac))
        return -total if negative else total

    @classmethod
    def format(cls, ns):
        if ns == 0:
            return "0s"
        sign, ns = ("-" if ns < 0 else ""), abs(int(ns))
        if ns < SECOND:
            for unit, size in (("ms", 10 ** 6), ("\u00b5s", 10 ** 3), ("ns", 1)):
                if ns >= size:
                    return sign + cls._fraction(ns, size) + unit
        hours, rest = divmod(ns, 3600 * SECOND)
        minutes, rest = divmod(rest, 60 * SECOND)
        seconds = cls._fraction(rest, SECOND) + "s"
        if hours:
            return "%s%dh%dm%s" % (sign, hours, minutes, seconds)
        if minutes:
            return "%s%dm%s" % (sign, minutes, seconds)
        return sign + seconds

    @staticmethod
    def _fraction(value, size):
        whole, frac = divmod(value, size)
        if not frac:
            return str(whole)
        return "%d.%s" % (whole, str(frac).rjust(len(str(size)) - 1, "0").rstrip("0"))
