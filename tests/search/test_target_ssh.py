"""The search timed on a device of a devices.yml group (real OpenSSH on loopback): every trial's
figure measured there, batches over one connection each; a stopped device is one line naming it."""

from __future__ import annotations

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

from kedro_edge.config import CompressionParams
from kedro_edge.errors import ConfigError, KedroEdgeError
from kedro_edge.fleet import ssh
from kedro_edge.search.driver import search
from tests.conftest import needs_sshd
from tests.fleet.loopback import registry
from tests.search.test_study import TRAIN, params

pytestmark = needs_sshd


@pytest.fixture(scope="module")
def loopback(tmp_path_factory):
    from kedro_edge.testing import start_fleet

    with start_fleet(tmp_path_factory.mktemp("fleet"), ["s1"], port=0) as running:
        yield running


def on_device(tmp_path, **search_cfg) -> CompressionParams:
    return params(f"journal:{tmp_path / 'study.log'}", target="loopback", **search_cfg)


def test_every_candidate_is_timed_on_the_groups_device_in_batches(
    loopback, _trained, splits, tmp_path, monkeypatch
):
    opened, connect = [], ssh.connect

    def counting(*args, **kwargs):
        opened.append(args[0].name)
        return connect(*args, **kwargs)

    monkeypatch.setattr(ssh, "connect", counting)
    rec = search(_trained, splits, on_device(tmp_path, trials=4, batch=2), TRAIN, registry(loopback))
    assert rec["target"] == {"name": "loopback", "where": "s1"}
    assert all(t["latency"]["where"] == "s1" for t in rec["trials"])
    # two batches of two, and the chosen model timed once more: three connections, not five
    assert opened == ["s1", "s1", "s1"]
    assert rec["chosen"]["latency"]["where"] == "s1"


def test_a_stopped_target_device_is_one_line_naming_it(loopback, _trained, splits, tmp_path):
    loopback.stop_device("s1")
    try:
        with pytest.raises(KedroEdgeError, match=r"search target 'loopback': s1 \(") as err:
            search(_trained, splits, on_device(tmp_path, trials=1), TRAIN, registry(loopback))
    finally:
        loopback.start_device("s1")
    assert "\n" not in str(err.value)
    # the trials it had asked for are FAIL, not left RUNNING in the study
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))
    states = {t.state for t in optuna.load_study(study_name=None, storage=storage).trials}
    assert states == {optuna.trial.TrialState.FAIL}


def test_an_unknown_group_names_the_key_and_the_known_ones(loopback, _trained, splits, tmp_path):
    cfg = params(f"journal:{tmp_path / 'study.log'}", target="nope")
    with pytest.raises(
        ConfigError, match=r"compression\.search\.target.*no group 'nope'.*known: host, loopback"
    ):
        search(_trained, splits, cfg, TRAIN, registry(loopback))
