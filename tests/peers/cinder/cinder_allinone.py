"""Runs cinder-api, cinder-scheduler and cinder-volume in ONE process for tests.

The services talk over oslo.messaging's in-process `fake:/` transport, so no message broker
is needed; the volume service uses Cinder's own fake driver (shipped in the wheel under
cinder.tests) with a few hooks that let a test reach the states a real cloud shows:

    FAKE_DELAY=<seconds>        every create and delete of a volume or snapshot takes this long
                                (so `creating` / `deleting` can be observed)
    name starting "fail-"       create fails: the object ends in status `error`
    name starting "faildel-"    delete fails: the object ends in status `error_deleting`

Usage: python cinder_allinone.py --config-file cinder.conf
"""
from cinder import monkey_patch

monkey_patch.patch()

import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from oslo_config import cfg  # noqa: E402
from oslo_log import log as logging  # noqa: E402
from oslo_service import service as oslo_service  # noqa: E402

from cinder import i18n  # noqa: E402

i18n.enable_lazy()

from cinder import coordination, exception, objects, rpc, service, utils, version  # noqa: E402
from cinder.common import config, constants  # noqa: E402


def _injected(obj, failing_prefix):
    """Sleeps FAKE_DELAY seconds, then fails if the object's name asks for it."""
    delay = float(os.environ.get("FAKE_DELAY", "0") or "0")
    if delay > 0:
        time.sleep(delay)
    name = getattr(obj, "display_name", None) or ""
    if name.startswith(failing_prefix):
        raise exception.VolumeBackendAPIException(data="test hook: name starts with %s" % failing_prefix)


def _driver_class():
    from cinder.tests import fake_driver

    class HookedFakeDriver(fake_driver.FakeLoggingVolumeDriver):
        def create_volume(self, volume):
            _injected(volume, "fail-")
            return super().create_volume(volume)

        def create_volume_from_snapshot(self, volume, snapshot):
            _injected(volume, "fail-")

        def create_cloned_volume(self, volume, src_vref):
            _injected(volume, "fail-")

        def delete_volume(self, volume):
            _injected(volume, "faildel-")

        def create_snapshot(self, snapshot):
            _injected(snapshot, "fail-")

        def delete_snapshot(self, snapshot):
            _injected(snapshot, "faildel-")

        def _update_volume_stats(self):
            super()._update_volume_stats()
            # Like the LVM driver the fake one stands in for: volumes of a type with
            # multiattach="<is> True" can be placed here (and attached to several servers).
            for pool in self._stats.get("pools", []):
                pool["multiattach"] = True

    return HookedFakeDriver


# The volume manager imports the driver by dotted path (volume_driver =
# cinder_allinone.HookedFakeDriver); the class is built only there, not when this file runs as
# the launcher (importing the fake driver before the services start is not needed).
if __name__ != "__main__":
    HookedFakeDriver = _driver_class()


class OwnIdService(service.Service):
    """A Service whose heartbeat updates its own row.

    Cinder keeps the service id in a class attribute (`Service.service_id`), which is right
    for one service per process. Here three share a process, so the last one created would
    win and the volume service's heartbeat would refresh the scheduler's row: the volume
    service then looks "down" a minute after start and every create fails with "No valid
    backend". Each heartbeat first puts back the id this service was created with (the
    attribute is read before the heartbeat's first yield to another green thread).
    """

    def report_state(self):
        if getattr(self, "origin_service_id", None) is not None:
            service.Service.service_id = self.origin_service_id
        return super().report_state()


def main():
    conf = cfg.CONF
    objects.register_all()
    conf(sys.argv[1:], project="cinder", version=version.version_string())
    config.set_middleware_defaults()
    logging.setup(conf, "cinder")
    utils.monkey_patch()
    coordination.COORDINATOR.start()
    rpc.init(conf)
    launcher = oslo_service.ServiceLauncher(conf, restart_method="mutate")
    for backend in [b for b in conf.enabled_backends if b]:
        launcher.launch_service(
            OwnIdService.create(
                host="%s@%s" % (conf.host, backend),
                service_name=backend,
                binary=constants.VOLUME_BINARY,
                coordination=True,
            )
        )
    launcher.launch_service(OwnIdService.create(binary=constants.SCHEDULER_BINARY))
    launcher.launch_service(service.WSGIService("osapi_volume"))
    launcher.wait()


if __name__ == "__main__":
    main()
