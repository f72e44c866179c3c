"""``supervisorctl meshx ...``, enabled with::

    [ctlplugin:meshx]
    supervisor.ctl_factory = supervisor_meshx.controllerplugin:make_meshx_controllerplugin
"""
import shlex

from supervisor.supervisorctl import ControllerPluginBase

from supervisor_meshx import commands


class MeshxControllerPlugin(ControllerPluginBase):
    name = "meshx"

    def do_meshx(self, arg):
        try:
            argv = shlex.split(arg)
        except ValueError as exc:
            self.ctl.output("ERROR: %s" % exc)
            self.ctl.exitstatus = commands.LSBInitExitStatuses.INVALID_ARGS
            return
        if argv and argv[0] != "help" and not self.ctl.upcheck():
            return
        status = commands.run(argv, self.ctl.get_server_proxy("meshx"), self.ctl.output,
                              server_url=self.ctl.options.serverurl)
        if status:
            self.ctl.exitstatus = status

    def help_meshx(self):
        self.ctl.output(commands.build_parser().format_help().rstrip())

    def do_help(self, arg):
        if arg.strip() != "meshx":  # supervisorctl's own plugin shows this one (see below)
            ControllerPluginBase.do_help(self, arg)


def make_meshx_controllerplugin(controller, **config):
    plugin = MeshxControllerPlugin(controller)
    # supervisorctl asks every plugin for "help meshx", its own first, which
    # would print "*** No help on meshx": let it print ours instead.
    for other in controller.options.plugins:
        if other is not plugin and not hasattr(other, "help_meshx"):
            other.help_meshx = plugin.help_meshx
            break
    return plugin
