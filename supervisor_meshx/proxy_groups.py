"""Sidecar proxies as supervisord process groups added at runtime.

Main thread only: every method here touches supervisord's own objects.
Operations that take time (stopping a proxy) are generators run by
``tasks.run``.
"""
import os
import shlex

from supervisor.options import UnhosedConfigParser
from supervisor.states import STOPPED_STATES, ProcessStates, getProcessStateDescription

from supervisor_meshx import limits, ownership
from supervisor_meshx.executables import CommandNotAllowed, ExecutablePolicy
from supervisor_meshx.faults import MeshxFault
from supervisor_meshx.names import GROUP_PREFIX, checked_service_id, group_name
from supervisor_meshx.proxy_process import NEVER, ProxyGroupConfig, ProxyProcessConfig
from supervisor_meshx.restart_policy import RestartRecord
from supervisor_meshx.state_file import Section
from supervisor_meshx.tasks import Wait
from supervisor_meshx.wire import NOT_XML


class Proxy:
    """What the plugin knows of one proxy besides supervisord's own objects."""

    def __init__(self, service_id, cmd, group_config, record):
        self.service_id = service_id
        self.cmd = cmd
        self.group_config = group_config
        self.record = record
        self.process = None  # supervisord's process, once its group is added (it lives as long as this)
        self._identity = (0, None)  # (pid, start time) last looked up

    def identity(self, pid):
        """``pid`` with its start time, read once per pid."""
        if pid and self._identity[0] != pid:
            self._identity = (pid, ownership.start_time(pid))
        return self._identity if pid else (0, None)


class ProxyGroups:
    def __init__(self, supervisord, settings, agent_environment, instance, log_error, on_change):
        """``agent_environment``: how a proxy reaches the agent; ``proxy_environment`` overrides it."""
        self._supervisord = supervisord
        self._instance = instance
        self._on_change = on_change
        self._settings = settings
        self._log_error = log_error
        self._policy = settings.restart_policy()
        self._environment = dict(supervisord.options.configroot.supervisord.environment or {})
        self._environment.update(agent_environment)
        self._environment.update(settings.proxy_environment)
        self._executables = ExecutablePolicy(settings.proxy_executables, self._environment.get("PATH"))
        for program in self._executables.missing():
            supervisord.options.logger.warn("meshx: proxy_executables: %s is not an executable file "
                                            "(absolute path or name on PATH); proxies can't use it" % program)
        self._proxies = {}
        self._removing = None  # the group stop() is removing
        self._keep_groups_across_rereads(supervisord.options)

    # -- queries ---------------------------------------------------------

    def ids(self):
        return sorted(self._proxies)

    def has(self, service_id):
        return service_id in self._proxies

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
        return dict(proxy.record.history(), **{
            "service_id": service_id,
            "group": proxy.group_config.name,
            "cmd": list(proxy.cmd),
            "max_restarts": -1 if self._policy.max_restarts is None else self._policy.max_restarts,
            "state": self.state_name(service_id),
            "pid": process.pid if process else 0,
            "spawnerr": (process.spawnerr or "") if process else "",
        })

    def evidence(self, service_id):
        """Why a proxy is not running, for a failed start's fault and the log:
        its state, last exit and the tail of its output (which its removal deletes)."""
        proxy = self._proxies.get(service_id)
        process = self.process(service_id)
        if proxy is None or process is None:
            return ""
        parts = ["proxy %s" % self.state_name(service_id)]
        if proxy.record.last_exit:
            parts.append("last exit: %s" % proxy.record.last_exit)
        if process.spawnerr:
            parts.append(process.spawnerr)
        tail = _output_tail(process.config)
        return "; ".join(parts) + (("; its output ends:\n" + tail) if tail else "")

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

    def start(self, service_id, cmd, history=None, environment=None):
        """Add the proxy's group and spawn it; False (nothing started) for an empty cmd.
        ``history``: the restart record saved by an earlier run; ``environment``: this proxy's own
        (a service's own token file replaces the plugin's token)."""
        argv = self.check(service_id, cmd)
        if not argv:
            return False
        record = RestartRecord.from_history(history or {})
        group_config = self._group_config(service_id, argv, record, environment or {})
        try:
            self._supervisord.add_process_group(group_config)  # creates the log files
        except OSError as exc:
            raise MeshxFault("FAILED", "cannot add group %s: %s" % (group_config.name, exc))
        proxy = self._proxies[service_id] = Proxy(service_id, cmd, group_config, record)
        proxy.process = self.process(service_id)
        self._supervisord.options.process_group_configs.append(group_config)  # for avail, add, remove
        proxy.process.spawn()
        self._on_change()
        return True

    def stop(self, service_id):
        """Steps: stop the proxy (kill after the stop timeout) and remove its group."""
        proxy = self._get(service_id)
        yield from self._stopped(service_id)
        name = proxy.group_config.name
        self._removing = name
        try:
            if not self._supervisord.remove_process_group(name):
                raise MeshxFault("FAILED", "%s did not stop" % name)
        finally:
            self._removing = None
        self._forget(service_id)
        _remove_logs(proxy.group_config)
        self._on_change()
        return True

    def group_removed(self, name):
        """supervisord removed a group (``supervisorctl remove``): the service id if it
        was one of these proxies, now forgotten; else None."""
        if name == self._removing or not name.startswith(GROUP_PREFIX):
            return None
        service_id = name[len(GROUP_PREFIX):]
        proxy = self._proxies.get(service_id)
        if proxy is None or name in self._supervisord.process_groups:
            return None
        self._forget(service_id)
        return service_id

    def _forget(self, service_id):
        proxy = self._proxies.pop(service_id)
        configs = self._supervisord.options.process_group_configs
        if proxy.group_config in configs:
            configs.remove(proxy.group_config)
        self._on_change()

    def restart_unhealthy(self, service_id, problem):
        """A RUNNING proxy whose health probes failed: restart it, within max_proxy_restarts."""
        process = self.process(service_id)
        proxy = self._proxies.get(service_id)
        if proxy is None or process is None or process.get_state() != ProcessStates.RUNNING:
            return
        if not self._policy.allows(proxy.record.restarts):
            self._log_error("meshx: proxy of %s is unhealthy (%s) but has had max_proxy_restarts "
                            "restarts; left as it is" % (service_id, problem))
            return
        self._log_error("meshx: proxy of %s is unhealthy (%s); restarting it" % (service_id, problem))
        process.restart_unhealthy()

    def hold_stops(self, service_ids, until):
        """Let supervisord's shutdown stop these proxies only after ``until`` (time.time())."""
        for service_id in service_ids:
            proxy = self._proxies.get(service_id)
            if proxy is not None:
                proxy.group_config.process_configs[0].stop_after = until

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
        return Section(self._proxies, self._fingerprint, self._saved)

    @staticmethod
    def _fingerprint(proxy):
        # each proxy has a restart record of its own, whose versions are never another's; taken
        # for every proxy at every save, so straight from the proxy's own objects
        return proxy.record.version, proxy.process.pid

    @staticmethod
    def _saved(proxy):
        pid, started = proxy.identity(proxy.process.pid)
        return dict(proxy.record.history(), cmd=proxy.cmd, pid=pid, start_time=started)

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

    def _group_config(self, service_id, argv, record, environment):
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
        if "CONSUL_HTTP_TOKEN_FILE" in environment:
            config.environment.pop("CONSUL_HTTP_TOKEN", None)  # it would win over the service's own file
        config.environment.update(environment)
        config.startsecs = self._settings.proxy_startsecs
        config.stopwaitsecs = self._settings.proxy_stopwaitsecs
        config.policy = self._policy
        config.executables = self._executables
        config.record = record
        config.service_id = service_id
        config.on_error = self._log_error
        group_config = ProxyGroupConfig(options, name, 999, [config])
        group_config.supervisord = self._supervisord
        return group_config

    def _keep_groups_across_rereads(self, options):
        """Make ``reread``/``update``/``avail`` see exactly the proxy groups there are.

        supervisord's ``update`` stops and removes every group missing from its
        config files; re-appending the proxies' configs after each parse makes
        them "unchanged" instead.  A group in the files named like a proxy
        group is dropped (with a warning): ``supervisorctl add`` must not make a
        group the plugin would take for one of its own.
        """
        parse = options.process_config

        def process_config(*args, **kwargs):
            result = parse(*args, **kwargs)
            ours = [proxy.group_config for proxy in self._proxies.values()]
            for config in list(options.process_group_configs):
                if config.name.startswith(GROUP_PREFIX) and config not in ours:
                    options.process_group_configs.remove(config)
                    options.logger.warn("meshx: [program:%s] ignored: names starting with %r are "
                                        "reserved for proxy groups" % (config.name, GROUP_PREFIX))
            options.process_group_configs.extend(ours)
            return result

        options.process_config = process_config


def _checked_argv(cmd):
    if not isinstance(cmd, list) or not all(isinstance(arg, str) for arg in cmd[:limits.MAX_ARGS + 1]):
        raise MeshxFault("BAD_ARGUMENTS", "cmd must be a list of strings")
    limits.check_argv(cmd)
    if any(NOT_XML.search(arg) for arg in cmd):
        raise MeshxFault("BAD_ARGUMENTS", "cmd must not hold control characters")
    return list(cmd)


TAIL_LINES, TAIL_BYTES = 20, 2048


def _output_tail(config):
    """The last lines a process wrote (stderr, then stdout), at most TAIL_LINES / TAIL_BYTES."""
    lines = []
    for path in (config.stderr_logfile, config.stdout_logfile):
        if not path:
            continue
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - TAIL_BYTES))
                lines += f.read().decode(errors="replace").splitlines()[-TAIL_LINES:]
        except OSError:
            continue
    text = "\n".join(line for line in lines[-TAIL_LINES:] if line.strip())
    return text[-TAIL_BYTES:]


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
