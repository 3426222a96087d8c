"""docs/models.md: "Paths may start with `~`" — for data files and run folders too, not only model folders."""
import json
import os


def test_tilde_paths_are_the_home_folder_for_data_and_run_folders(tmp_path, monkeypatch):
    # TrainConfig(output_dir="~/runs/rm") wrote its logs and snapshots into a folder literally named "~"
    # in the working folder, while save_pretrained (which expands "~") put model/ in the home folder; and
    # read_records("~/pairs.jsonl") said the file does not exist
    from mmreward.core.data import read_records
    from mmreward.core.trainer import TrainConfig
    from mmreward.text.recipes.reward_ranked import RaftConfig

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    (home / "pairs.jsonl").write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    assert read_records("~/pairs.jsonl") == [{"prompt": "a", "chosen": "b", "rejected": "c"}]
    assert TrainConfig(output_dir="~/runs/rm").output_dir == str(home / "runs" / "rm")
    assert RaftConfig(output_dir="~/runs/raft").output_dir == str(home / "runs" / "raft")
    assert TrainConfig(output_dir="runs/~rm").output_dir == "runs/~rm"  # only a leading "~" is the home folder
    assert not os.path.exists(work / "~")
