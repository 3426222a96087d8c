"""``mmreward info`` without ``--load`` names a PRM folder copied without its tokenizer or weights."""
import os
import shutil

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from mmreward.cli import main  # noqa: E402
from mmreward.text.prm.model import ProcessRewardModel  # noqa: E402
from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama  # noqa: E402


def test_info_without_load_names_a_prm_folder_missing_its_tokenizer_or_weights(tmp_path, capsys):
    tok = char_tokenizer("step", max_value=5)
    torch.manual_seed(0)
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=16, layers=1, seed=0), tok, head="lm", max_length=32)
    folder = tmp_path / "prm"
    prm.save_pretrained(str(folder))
    os.remove(folder / "manifest.json")
    assert main(["info", str(folder)]) == 0
    capsys.readouterr()
    shutil.rmtree(folder / "tokenizer")
    assert main(["info", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "tokenizer/tokenizer.json" in err and len(err.strip().splitlines()) == 1
