"""Sidecar proxies as supervisord process groups added at runtime.

Main thread only: every method here touches supervisord's own objects.
Operations that take time (stopping a proxy) are generators run by
``tasks.run``.
"""
import os
import shlex

from supervisor.options import ProcessGroupConfig, UnhosedConfigParser
from supervisor.states import STOPPED_STATES, ProcessStates, getProcessStateDescription

from supervisor_meshx import ownership
from supervisor_meshx.executables import CommandNotAllowed, ExecutablePolicy
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.names import checked_service_id, group_name
from supervisor_meshx.proxy_process import NEVER, ProxyProcessConfig
from supervisor_meshx.restart_policy import RestartRecord
from supervisor_meshx.tasks import Wait
from supervisor_meshx.wire import NOT_XML


class Proxy:
    """What the plugin knows of one proxy besides supervisord's own objects."""

    def __init__(self, service_id, cmd, group_config, record):
        self.service_id = service_id
        self.cmd = cmd
        self.group_config = group_config
        self.record = record
        self._identity = (0, None)  # (pid, start time) last looked up

    def identity(self, pid):
        """``pid`` with its start time, read once per pid."""
        if pid and self._identity[0] != pid:
            self._identity = (pid, ownership.start_time(pid))
        return self._identity if pid else (0, None)


class ProxyGroups:
    def __init__(self, supervisord, settings, instance, log_error, on_change):
        self._supervisord = supervisord
        self._instance = instance
        self._on_change = on_change
        self._settings = settings
        self._log_error = log_error
        self._policy = settings.restart_policy()
        self._environment = dict(supervisord.options.configroot.supervisord.environment or {})
        self._environment.update(settings.proxy_environment)
        self._executables = ExecutablePolicy(settings.proxy_executables, self._environment.get("PATH"))
        self._proxies = {}
        self._keep_groups_across_rereads(supervisord.options)

    # -- queries ---------------------------------------------------------

    def ids(self):
        return sorted(self._proxies)

    def process(self, service_id):
        """supervisord's process of the proxy, or None."""
        name = group_name(service_id)
        group = self._supervisord.process_groups.get(name)
        return group.processes.get(name) if group else None

    def state_name(self, service_id):
        """The proxy's supervisord state name; None if the service has no proxy."""
        if service_id not in self._proxies:
            return None
        process = self.process(service_id)
        return getProcessStateDescription(process.get_state() if process else ProcessStates.STOPPED)

    def info(self, service_id):
        proxy = self._get(service_id)
        process = self.process(service_id)
        return {
            "service_id": service_id,
            "group": proxy.group_config.name,
            "cmd": list(proxy.cmd),
            "restarts": proxy.record.restarts,
            "max_restarts": -1 if self._policy.max_restarts is None else self._policy.max_restarts,
            "state": self.state_name(service_id),
            "pid": process.pid if process else 0,
            "spawnerr": (process.spawnerr or "") if process else "",
        }

    # -- changes ---------------------------------------------------------

    def check(self, service_id, cmd):
        """The argv to run for ``cmd``, or the fault ``start`` would raise."""
        checked_service_id(service_id)
        cmd = _checked_argv(cmd)
        if service_id in self._proxies or group_name(service_id) in self._supervisord.process_groups:
            raise MeshxFault("ALREADY_STARTED", service_id)
        try:
            return self._executables.check(cmd) if cmd else []
        except CommandNotAllowed as exc:
            raise MeshxFault("COMMAND_NOT_ALLOWED", str(exc))

    def start(self, service_id, cmd, restarts=0):
        """Add the proxy's group and spawn it; False (nothing started) for an empty cmd."""
        argv = self.check(service_id, cmd)
        if not argv:
            return False
        record = RestartRecord(restarts)
        group_config = self._group_config(service_id, argv, record)
        try:
            self._supervisord.add_process_group(group_config)  # creates the log files
        except OSError as exc:
            raise MeshxFault("FAILED", "cannot add group %s: %s" % (group_config.name, exc))
        self._proxies[service_id] = Proxy(service_id, cmd, group_config, record)
        self.process(service_id).spawn()
        self._on_change()
        return True

    def stop(self, service_id):
        """Steps: stop the proxy (kill after the stop timeout) and remove its group."""
        proxy = self._get(service_id)
        yield from self._stopped(service_id)
        name = proxy.group_config.name
        if not self._supervisord.remove_process_group(name):
            raise MeshxFault("FAILED", "%s did not stop" % name)
        del self._proxies[service_id]
        _remove_logs(proxy.group_config)
        self._on_change()
        return True

    def restart(self, service_id):
        """Steps: stop the proxy, reset its restart count and start it again."""
        proxy = self._get(service_id)
        yield from self._stopped(service_id)
        proxy.record.reset()
        self.process(service_id).spawn()
        self._on_change()
        return True

    def snapshot(self):
        """What a restart needs to run the proxies again, and to find their orphans."""
        saved = {}
        for service_id, proxy in self._proxies.items():
            process = self.process(service_id)
            pid, started = proxy.identity(process.pid if process else 0)
            saved[service_id] = {
                "cmd": proxy.cmd,
                "restarts": proxy.record.restarts,
                "pid": pid,
                "start_time": started,
            }
        return saved

    def _stopped(self, service_id):
        process = self.process(service_id)
        if process.get_state() not in STOPPED_STATES:
            process.stop()
            stopped = yield Wait(lambda: process.get_state() in STOPPED_STATES,
                                 timeout=self._settings.proxy_stopwaitsecs + 5)
            if not stopped:
                raise MeshxFault("FAILED", "proxy of %s did not stop" % service_id)

    # -- internals -------------------------------------------------------

    def _get(self, service_id):
        checked_service_id(service_id)
        proxy = self._proxies.get(service_id)
        if proxy is None:
            raise MeshxFault("BAD_NAME", "no proxy for %s" % service_id)
        return proxy

    def _group_config(self, service_id, argv, record):
        options = self._supervisord.options
        name = group_name(service_id)
        section = "program:%s" % name
        parser = UnhosedConfigParser()
        parser.add_section(section)
        for key, value in {
            "command": "true",  # replaced below, so that no '%' in argv is expanded
            "autostart": "false",
            "autorestart": "false",
            "startretries": str(NEVER),
            "stopasgroup": "true",
            "killasgroup": "true",
            "redirect_stderr": "false",
        }.items():
            parser.set(section, key, value)
        [config] = options.processes_from_section(parser, section, name, klass=ProxyProcessConfig)
        config.command = shlex.join(argv)
        config.environment = dict(self._environment, **ownership.process_environment(self._instance, service_id))
        config.startsecs = self._settings.proxy_startsecs
        config.stopwaitsecs = self._settings.proxy_stopwaitsecs
        config.policy = self._policy
        config.record = record
        config.service_id = service_id
        config.on_error = self._log_error
        return ProcessGroupConfig(options, name, 999, [config])

    def _keep_groups_across_rereads(self, options):
        """Make ``reread``/``update``/``avail`` see proxy groups as configured.

        supervisord's ``update`` stops and removes every group missing from its
        config files; re-appending the proxies' configs after each parse makes
        them "unchanged" instead.
        """
        parse = options.process_config

        def process_config(*args, **kwargs):
            result = parse(*args, **kwargs)
            names = {config.name for config in options.process_group_configs}
            options.process_group_configs.extend(
                proxy.group_config for proxy in self._proxies.values()
                if proxy.group_config.name not in names)
            return result

        options.process_config = process_config


def _checked_argv(cmd):
    if not isinstance(cmd, list) or not all(isinstance(arg, str) for arg in cmd):
        raise MeshxFault("BAD_ARGUMENTS", "cmd must be a list of strings")
    if any(NOT_XML.search(arg) for arg in cmd):
        raise MeshxFault("BAD_ARGUMENTS", "cmd must not hold control characters")
    return list(cmd)


def _remove_logs(group_config):
    for config in group_config.process_configs:
        for path in (config.stdout_logfile, config.stderr_logfile):
            if not path:
                continue
            backups = max(config.stdout_logfile_backups, config.stderr_logfile_backups)
            for name in [path] + ["%s.%d" % (path, n) for n in range(1, backups + 1)]:
                try:
                    os.remove(name)
                except OSError:
                    pass
