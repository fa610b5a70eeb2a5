"""The README's table of models against pythae and PyTorch-VAE stays true: every aelab family is in it, every
aelab entry in it runs, and (where pythae is installed) its pythae column is pythae's own list."""

from __future__ import annotations

import re

import pytest
import torch

from aelab.data import build_data
from aelab.engine.build import build_model
from conftest import REPO, TINY, model_names

AELAB, PYTHAE, PYTORCH_VAE = 1, 2, 3  # the table's columns (0: the model's name)


def _rows() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Compared with pythae and PyTorch-VAE", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    assert rows and rows[0][AELAB].strip() == "aelab", "the table's header changed: update this test"
    return [[cell.strip() for cell in row] for row in rows[1:]]


def _names(cell: str) -> list[str]:
    return re.findall(r"`([A-Za-z_0-9]+)`", cell)


def _aelab_entries() -> list[list[str]]:
    """Each aelab cell's command-line entries: ['model=iwae', 'model.objective=miwae'], ['prior=maf'], ..."""
    entries = []
    for row in _rows():
        for code in re.findall(r"`([^`]+)`", row[AELAB]):
            words = [w for w in code.split() if "=" in w]
            if words:
                entries.append(words)
    return entries


def test_every_family_is_in_the_table_and_nothing_else_is_named_a_family() -> None:
    named = {w.split("=", 1)[1] for entry in _aelab_entries() for w in entry if w.startswith("model=")}
    assert named == set(model_names()), (f"missing from the README table: {sorted(set(model_names()) - named)}; "
                                         f"not families: {sorted(named - set(model_names()))}")


@pytest.mark.parametrize("entry", [e for e in _aelab_entries() if len(e) > 1 and e[0].startswith("model=")],
                         ids=lambda e: " ".join(e))
def test_each_family_option_in_the_table_builds_a_model(compose_cfg, entry: list[str]) -> None:
    cfg = compose_cfg([*TINY, "device=cpu", *entry])
    data = build_data(cfg.data, torch.device("cpu"))
    model = build_model(cfg, data.shape, data.num_classes)
    key, value = entry[1].split("=", 1)
    assert str(getattr(model, key.split(".", 1)[1])) == value  # the option reached the family


def test_each_fitted_prior_in_the_table_is_one_fit_prior_offers() -> None:
    from aelab.models.fitted_prior import FITTED_PRIORS

    priors = {w.split("=", 1)[1] for entry in _aelab_entries() for w in entry if w.startswith("prior=")}
    assert priors and priors <= set(FITTED_PRIORS)


def test_the_pythae_column_is_pythae_s_list_of_models() -> None:
    models = pytest.importorskip("pythae.models")
    samplers = pytest.importorskip("pythae.samplers")
    theirs = {n for n in (*models.__all__, *samplers.__all__)
              if not n.endswith("Config") and n not in ("AutoModel", "BaseAE", "BaseSampler")}
    ours = {n for row in _rows() for n in _names(row[PYTHAE])}
    assert ours == theirs
