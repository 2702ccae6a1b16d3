"""The PRIVATE Huey names erpq/runtime still uses exist in the installed Huey,
so an upgrade that renames one fails here, loudly, instead of in production.

Each use is commented where it is made (grep "PRIVATE Huey name" in
erpq/runtime); everything else goes through Huey's public extension points
(storage_class, signals, pre/post-execute hooks, create_consumer,
Consumer.scheduler_class, Consumer.worker_class)."""

from __future__ import annotations

import inspect

import pytest
from huey import MemoryHuey
from huey.consumer import Consumer, Scheduler, Worker
from huey.exceptions import HueyException

import erpq.runtime


def test_huey_registry_is_there_with_the_methods_erpq_calls():
    huey = MemoryHuey("private-names")
    registry = huey._registry  # app.py: erpq's (message, meta) envelope

    @huey.task(name="PrivateNamesTask")
    def private_names_task(x):
        return x

    task = private_names_task.s(1)
    message = registry.create_message(task)
    assert message.name == f"{__name__}.PrivateNamesTask"  # "module.JobName": erpq reads the last part
    assert registry.create_task(message).args == (1,)
    assert registry.string_to_task(message.name) is type(task)
    with pytest.raises(HueyException):  # how erpq tells an unknown task
        registry.string_to_task("NoSuchTask")


def test_consumer_set_signal_handlers_is_there_and_called_by_start():
    # runner.py: an embedded consumer overrides it to install no handlers.
    assert callable(getattr(Consumer, "_set_signal_handlers", None))
    assert "self._set_signal_handlers()" in inspect.getsource(Consumer.start)


def test_public_extension_points_erpq_relies_on():
    # Not private, but undocumented enough to check as well.
    assert Consumer.scheduler_class is Scheduler
    assert isinstance(Scheduler.periodic_task_seconds, int)
    assert "self.scheduler_class(" in inspect.getsource(Consumer._create_scheduler)
    # runner.ErpqWorker: an idle worker's sleep() waits for a wake-up, and
    # resets the delay/default_delay backoff when woken.
    assert Consumer.worker_class is Worker
    assert "self.worker_class(" in inspect.getsource(Consumer._create_worker)
    loop = inspect.getsource(Worker.loop)
    assert "self.huey.dequeue()" in loop and "self.sleep()" in loop
    sleep = inspect.getsource(Worker.sleep)
    assert "self.delay" in sleep and "self.backoff" in sleep and "self.max_delay" in sleep
    assert "self.delay = self.default_delay" in loop


def test_every_private_use_in_the_runtime_is_listed_here():
    """The runtime's comments name exactly the private names tested above."""
    import pathlib
    import re

    root = pathlib.Path(erpq.runtime.__file__).parent
    named = set()
    for path in root.glob("*.py"):
        named |= set(re.findall(r"PRIVATE Huey name: ([\w.]+)", path.read_text()))
    assert named == {"Huey._registry", "Consumer._set_signal_handlers"}
