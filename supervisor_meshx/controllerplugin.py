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
        status = commands.run(argv, self.ctl.get_server_proxy("meshx"), self.ctl.output)
        if status:
            self.ctl.exitstatus = status

    def help_meshx(self):
        self.ctl.output(commands.build_parser().format_help().rstrip())


def make_meshx_controllerplugin(controller, **config):
    return MeshxControllerPlugin(controller)
