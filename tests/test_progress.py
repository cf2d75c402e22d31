"""Progress bars: on unless the caller or the user's environment turns them off."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from hwprune.progress import bars_off
from hwprune.train import fine_tune


@pytest.mark.parametrize(
    ("progress", "env", "off"),
    [
        (True, None, False),
        (False, None, True),
        (True, "1", True),
        (True, "True", True),
        (True, "0", False),
        (True, "", False),
        (False, "0", True),
    ],
)
def test_bars_off(monkeypatch: pytest.MonkeyPatch, progress: bool, env: str | None, off: bool) -> None:
    if env is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", env)
    assert bars_off(progress) is off


def test_tqdm_disable_silences_a_bar_the_caller_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = TensorDataset(torch.randn(8, 2), torch.randint(0, 2, (8,)))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    fine_tune(nn.Linear(2, 2), data, steps=2, batch_size=4, progress=True)
    assert "fine-tune" not in capsys.readouterr().err
    monkeypatch.delenv("TQDM_DISABLE")
    fine_tune(nn.Linear(2, 2), data, steps=2, batch_size=4, progress=True)
    assert "fine-tune" in capsys.readouterr().err
