"""Membership signal appears with training: the AUC of the tiny VLM's scores grows with the epochs on the members."""
from __future__ import annotations

import numpy as np
import torch

from lionsnb.vlmia.experiments import attack, auc_table, finetune, load_tiny, make_tiny_data, tiny_config


def test_auc_grows_with_epochs() -> None:
    torch.manual_seed(0)
    cfg = tiny_config({"image_size": 16, "n_embd": 32, "n_layer": 1})
    data = make_tiny_data(32, 32, 0, 16, 11)
    run = finetune(data["members"], None, cfg, 20, [0, 5, 10], lr=5e-3, batch_size=8)
    assert run["losses"][-1] < run["losses"][0] / 3
    images = torch.cat([data["members"].images, data["nonmembers"].images])
    labels = np.r_[np.ones(32), np.zeros(32)]
    captions = data["members"].captions + data["nonmembers"].captions   # the known-caption (text) setting
    keys = ["ppl", "Min_20.0% Prob", "Max_10.0% renyi_1"]
    auc = {e: auc_table(attack(load_tiny(cfg, run["states"][str(e)]), images, labels, descriptions=captions),
                        keys, ["desp"])["desp"] for e in (0, 10, 20)}
    for k in keys:
        assert 0.35 <= auc[0][k] <= 0.65, (k, auc[0][k])                 # no membership signal before training
        assert auc[10][k] >= auc[0][k] + 0.1, (k, auc)
        assert auc[20][k] >= auc[10][k] - 0.03, (k, auc)
    assert auc[20]["ppl"] >= 0.9
