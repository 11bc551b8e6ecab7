"""The reduced fault drills, in CI: nothing lost, nothing stale."""

from __future__ import annotations

import pytest

from tests.chaos.drills import DRILLS, run
from tests.rabbitmq import rabbit_up

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("drill", DRILLS)
def test_quick_drill_loses_nothing(drill: str) -> None:
    if drill.endswith("_rabbitmq") and not rabbit_up():
        pytest.skip("no RabbitMQ at 127.0.0.1:5672 (CI has one)")
    (result,) = run(quick=True, only=drill)
    assert result.lost == 0, result.show()
    assert result.stale == 0, result.show()
    assert result.accepted > 0 and result.delivered > 0, result.show()
    assert result.dead_lettered == 0, result.show()
    assert not result.problems, result.show()
