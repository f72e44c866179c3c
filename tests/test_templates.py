"""Specification of supervisor_meshx.templates."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor_meshx import templates
from supervisor_meshx.templates import TemplateError, merge_defaults, render

VARS = {"id": "web-host1", "name": "web", "address": "127.0.0.1", "port": 1025}

DEFAULT_REGISTRATION = {
    "ID": "{{id}}",
    "Name": "{{name}}",
    "Checks": [{"Name": "TTL check", "CheckID": "ttl:{{id}}", "TTL": "10s"}],
    "Connect": {
        "SidecarService": {
            "Proxy": {"LocalServiceAddress": "{{address}}", "LocalServicePort": "{{$port$}}"}
        }
    },
}


def reason(template, variables=VARS):
    with pytest.raises(TemplateError) as info:
        render(template, variables)
    return str(info.value)


# --- string leaves are Mustache -------------------------------------------

def test_meshx_default_registration_renders_with_typed_port():
    assert render(DEFAULT_REGISTRATION, VARS) == {
        "ID": "web-host1",
        "Name": "web",
        "Checks": [{"Name": "TTL check", "CheckID": "ttl:web-host1", "TTL": "10s"}],
        "Connect": {
            "SidecarService": {
                "Proxy": {"LocalServiceAddress": "127.0.0.1", "LocalServicePort": 1025}
            }
        },
    }


def test_default_proxy_command_renders_as_argv():
    cmd = ["/bin/sh", "-c", "consul connect proxy -log-level err -sidecar-for {{id}}"]
    assert render(cmd, VARS) == ["/bin/sh", "-c", "consul connect proxy -log-level err -sidecar-for web-host1"]


@pytest.mark.parametrize("tag", ["{{v}}", "{{{v}}}", "{{& v}}"])
def test_values_are_not_html_escaped(tag):
    assert render(tag, {"v": "a&b<c>\"'"}) == "a&b<c>\"'"


def test_chevron_itself_is_left_alone():
    import chevron

    render("{{v}}", {"v": "<"})
    assert chevron.render("{{v}}", {"v": "<"}) == "&lt;"


def test_dict_keys_and_non_string_leaves_are_not_rendered():
    template = {"{{name}}": [1, 2.5, True, None, "{{name}}"]}
    assert render(template, VARS) == {"{{name}}": [1, 2.5, True, None, "web"]}


def test_render_returns_a_new_structure():
    template = {"a": ["x"], "b": {"c": "{{$obj$}}"}}
    variables = {"obj": {"k": [1]}}
    result = render(template, variables)
    result["a"].append("y")
    result["b"]["c"]["k"].append(2)
    assert template == {"a": ["x"], "b": {"c": "{{$obj$}}"}}
    assert variables == {"obj": {"k": [1]}}


def test_tuples_render_as_lists():
    assert render(("{{name}}", 1), VARS) == ["web", 1]


@pytest.mark.parametrize("value, text", [
    ("s", "s"), (7, "7"), (1.5, "1.5"), (True, "true"), (False, "false"),
    (None, ""), ([1, "a"], '[1, "a"]'), ({"k": 1}, '{"k": 1}'),
])
def test_non_string_values_are_inserted_as_json(value, text):
    assert render("{{v}}", {"v": value}) == text


def test_sections_iterate_lists_and_enter_dicts():
    variables = {"ups": [{"n": "a"}, {"n": "b"}], "meta": {"dc": "dc1"}, "name": "web"}
    assert render("{{#ups}}{{n}}@{{name}};{{/ups}}", variables) == "a@web;b@web;"
    assert render("{{#meta}}{{dc}}{{/meta}}", variables) == "dc1"
    assert render("{{#ups}}{{.}}{{/ups}}", {"ups": [1, 2]}) == "12"


def test_missing_section_is_false_and_inverted_section_shows():
    assert render("-token={{#token}}{{token}}{{/token}}", {}) == "-token="
    assert render("{{^token}}no token{{/token}}", {}) == "no token"
    assert render("{{^token}}no token{{/token}}", {"token": ""}) == "no token"
    assert render("{{^token}}no token{{/token}}", {"token": "t"}) == ""


def test_dotted_names_look_into_dicts_and_lists_only():
    variables = {"a": {"b": ["x", "y"]}, "name": "web"}
    assert render("{{a.b.1}}", variables) == "y"
    assert "unknown variable 'name.upper'" in reason("{{name.upper}}", variables)
    assert "unknown variable 'name.__class__'" in reason("{{name.__class__}}", variables)
    assert render("{{#name.upper}}x{{/name.upper}}", variables) == ""


def test_comments_and_set_delimiters_work():
    assert render("{{! note }}{{=<% %>=}}{{literal}} <%name%>", VARS) == "{{literal}} web"


def test_unknown_variable_is_an_error_naming_it():
    assert reason({"x": ["{{nope}}"]}) == "template.x[0]: unknown variable 'nope'"


# --- the {{$var$}} rule ---------------------------------------------------

@pytest.mark.parametrize("leaf", ["{{$port$}}", "{{ $port$ }}", "{{$ port $}}"])
def test_typed_leaf_keeps_the_value_type(leaf):
    assert render({"LocalBindPort": leaf}, VARS) == {"LocalBindPort": 1025}


@pytest.mark.parametrize("value", [{"a": [1, None]}, [1, 2], None, False, 2.5, "s"])
def test_typed_leaf_inserts_any_value(value):
    assert render(["{{$v$}}"], {"v": value}) == [value]


def test_typed_leaf_supports_dotted_names():
    assert render("{{$meta.port$}}", {"meta": {"port": 9}}) == 9


def test_unknown_typed_variable_is_an_error_naming_it():
    assert reason({"p": "{{$prot$}}"}) == "template.p: unknown variable 'prot'"


@pytest.mark.parametrize("leaf", ["x{{$port$}}", " {{$port$}}", "{{$port$}}{{$port$}}"])
def test_typed_tag_must_be_the_whole_string(leaf):
    assert "typed tag {{$port$}} must be the whole string" in reason(leaf)


# --- malformed and absurd input -------------------------------------------

@pytest.mark.parametrize("template, why", [
    ("{{name", "unclosed tag"),
    ("name}}{{", "unclosed tag '{{' at end of string"),
    ("{{#a}}x", 'the tag "a" was never closed'),
    ("{{/a}}", 'close tag "a"'),
    ("{{#a}}{{/b}}", 'close tag "b"'),
    ("{{}}", "empty tag"),
    ("{{ }}", "empty tag"),
    ("{{{name}}", "lacks a closing brace"),
    ("{{=}}", "set delimiter"),
    ("{{= =}}", "bad set-delimiter tag"),
    ("{{> file}}", "partials are not supported"),
])
def test_malformed_mustache_is_a_template_error(template, why):
    assert why in reason(["ok", template])
    assert reason(["ok", template]).startswith("template[1]: ")
    assert "\n" not in reason(["ok", template])


def nested(depth):
    value = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_up_to_32_levels_is_fine():
    assert render(nested(32), {}) == nested(32)
    assert render("{{$v$}}", {"v": nested(31)}) == nested(31)


@pytest.mark.parametrize("where", ["template", "variables"])
def test_nesting_deeper_than_32_levels_is_rejected(where):
    deep = nested(33)
    template, variables = (deep, {}) if where == "template" else ("", {"v": deep})
    assert "nested deeper than 32 levels" in reason(template, variables)


def test_self_referencing_structures_are_rejected():
    loop = []
    loop.append(loop)
    assert "nested deeper than 32 levels" in reason(loop)


def test_sections_nested_deeper_than_32_levels_are_rejected():
    ok = "{{#t}}" * 32 + "x" + "{{/t}}" * 32
    assert render(ok, {"t": True}) == "x"
    assert "sections nested deeper than 32 levels" in reason("{{#t}}" + ok + "{{/t}}", {"t": True})


def test_output_larger_than_1_mib_is_rejected():
    assert len(render(["a" * 60000] * 17, {})) == 17
    assert "rendered output larger than" in reason(["a" * 60000] * 18, {})


def test_exploding_sections_are_rejected():
    variables = {"xs": list(range(100))}
    assert "rendered output larger than" in reason("{{#xs}}{{#xs}}{{#xs}}abcdefgh{{/xs}}{{/xs}}{{/xs}}", variables)
    assert "rendering takes more than" in reason("{{#xs}}{{#xs}}{{#xs}}{{#xs}}{{/xs}}{{/xs}}{{/xs}}{{/xs}}", variables)


def test_overlong_template_string_is_rejected():
    assert "longer than" in reason("{{name}}" + "x" * templates.MAX_STRING, VARS)


@pytest.mark.parametrize("bad, why", [
    ({1: "x"}, "key 1 is not a string"),
    ({"a": {"x", "y"}}, "template.a: unsupported type set"),
    ([b"x"], "template[0]: unsupported type bytes"),
    ([object()], "unsupported type object"),
    ({"ttl": math.nan}, "template.ttl: nan is not a valid number"),
    ({"ttl": math.inf}, "inf is not a valid number"),
])
def test_non_json_like_templates_are_rejected(bad, why):
    assert why in reason(bad)


def test_non_json_like_variables_are_rejected():
    assert "variables.f: unsupported type function" in reason("x", {"f": lambda: 1})
    assert "variables must be a dict" in reason("x", ["not", "a", "dict"])


# --- merge_defaults ---------------------------------------------------------

DEFAULTS = {"registration": DEFAULT_REGISTRATION, "ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": 5000},
            "proxy": ["/bin/sh", "-c", "consul connect proxy -sidecar-for {{id}}"]}


def test_each_missing_key_takes_its_default_independently():
    merged = merge_defaults({"proxy": ["envoy"]}, DEFAULTS)
    assert merged == {**DEFAULTS, "proxy": ["envoy"]}


def test_present_empty_or_none_values_disable_rather_than_default():
    merged = merge_defaults({"ttl": None, "proxy": []}, DEFAULTS)
    assert merged["ttl"] is None and merged["proxy"] == []
    assert merged["registration"] == DEFAULT_REGISTRATION


def test_none_means_all_defaults_and_result_is_independent_copy():
    merged = merge_defaults(None, DEFAULTS)
    assert merged == DEFAULTS
    merged["registration"]["Name"] = "changed"
    assert DEFAULT_REGISTRATION["Name"] == "{{name}}"


def test_unknown_keys_are_kept_and_non_dicts_rejected():
    assert merge_defaults({"extra": 1}, {})["extra"] == 1
    with pytest.raises(TemplateError, match="template must be a dict, got list"):
        merge_defaults([], DEFAULTS)


# --- properties -------------------------------------------------------------

keys = st.text(max_size=8)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
# what XML-RPC can carry: no control characters (they are refused, see below)
xml_text = st.text(st.characters(exclude_categories=("Cc", "Cs"), include_characters="\t\n\r"))
json_like = st.recursive(
    scalars | xml_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)
mustache_ish = st.text(alphabet="{}#^/&!=>$. ab\n", max_size=30)
random_templates = st.recursive(
    scalars | mustache_ish | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(template=random_templates, variables=st.dictionaries(st.sampled_from(["a", "b", "$a$"]), json_like))
def test_random_input_never_fails_other_than_with_template_error(template, variables):
    try:
        render(template, variables)
    except TemplateError:
        pass


def without_tags(value):
    if isinstance(value, str):
        return "{{" not in value
    if isinstance(value, list):
        return all(without_tags(v) for v in value)
    if isinstance(value, dict):
        return all(without_tags(v) for v in value.values())
    return True


@settings(max_examples=200, deadline=None)
@given(template=json_like.filter(without_tags), variables=st.dictionaries(keys, json_like, max_size=3))
def test_template_without_tags_renders_to_an_equal_structure(template, variables):
    assert render(template, variables) == template


@pytest.mark.parametrize("text", ["\x00", "a\x1b[2J", "\x7f\x01", "\ud800"])
def test_control_characters_are_refused(text):
    with pytest.raises(TemplateError, match="control character"):
        render({"Name": text}, {})
    with pytest.raises(TemplateError, match="control character"):
        render({"Name": "{{x}}"}, {"x": text})
