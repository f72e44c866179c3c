"""The examples stay true: the demo runs, the example configuration and templates load."""
import configparser
import json
import os
import subprocess

from supervisor_meshx import templates
from supervisor_meshx.config import Settings
from supervisord_harness import free_port_range

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def test_the_demo_runs_end_to_end():
    # ranges of its own: another demo (a second copy of the suite) may run beside it
    endpoints = free_port_range(20)
    sidecars = free_port_range(20, avoid=endpoints)
    env = dict(os.environ, MESHX_DEMO_PORT_RANGE="%d-%d" % endpoints, MESHX_DEMO_SIDECAR_PORT_RANGE="%d-%d" % sidecars)
    result = subprocess.run(["bash", os.path.join(EXAMPLES, "demo.sh")],
                            capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "hello from web" in result.stdout
    assert "restarts: 1" in result.stdout
    assert "demo finished: all steps passed" in result.stdout


def test_the_example_configuration_names_every_key_and_loads():
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(os.path.join(EXAMPLES, "supervisord.conf"))
    section = dict(parser.items("rpcinterface:meshx"))
    del section["supervisor.rpcinterface_factory"]
    assert set(section) == set(Settings.KEYS)
    Settings(**section)
    assert parser.get("ctlplugin:meshx", "supervisor.ctl_factory").endswith("make_meshx_controllerplugin")


def test_the_example_templates_render():
    variables = {"id": "web-node1", "name": "web", "address": "127.0.0.1", "port": 1024,
                 "sidecar_port": 21000, "admin_port": 19000}
    for name in ("service_template.json", "service_template_connect_proxy.json"):
        with open(os.path.join(EXAMPLES, name)) as f:
            rendered = templates.render(json.load(f), variables)
        assert rendered["registration"]["ID"] == "web-node1"
        assert rendered["proxy"][0] == "consul"
        if name == "service_template.json":
            assert "127.0.0.1:19000" in rendered["proxy"]  # Envoy's admin port
    with open(os.path.join(EXAMPLES, "upstream_template.json")) as f:
        assert templates.render(json.load(f), dict(variables, name="db"))["LocalBindPort"] == 1024
