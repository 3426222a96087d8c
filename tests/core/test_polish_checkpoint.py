"""A refused resume names what the saved run really had: fingerprints store some settings only when
they are not the default, and the message used to read "nstep: saved None, now 2" for those."""
import pytest

from mmreward.core import checkpoint as ck


def _refusal(folder, fp, **kw):
    with pytest.raises(ValueError, match="other settings") as e:
        ck.start_run(str(folder), fp, resume=True, overwrite=False, run_files=(), **kw)
    return str(e.value)


def test_a_setting_left_out_of_the_saved_fingerprint_is_named_as_the_default(tmp_path):
    base = {"task": "t", "seed": 0}  # nstep=3, the default, is not in the fingerprint
    ck.write_run_config(str(tmp_path / "a"), base, {"config": {"nstep": 3, "seed": 0}})
    msg = _refusal(tmp_path / "a", {**base, "nstep": 2})
    assert "nstep: saved 3 (the default), now 2" in msg and "None" not in msg
    # the same from a snapshot, whose state records the config too
    snaps = ck.Snapshots(str(tmp_path / "b"))
    snaps.save(4, {"step": 4, "fingerprint": ck.fingerprint_text(base), "config": {"nstep": 3}})
    assert "nstep: saved 3 (the default), now 2" in _refusal(tmp_path / "b", {**base, "nstep": 2})
    # a record without the value: "the default"; the caller's defaults name it
    ck.write_run_config(str(tmp_path / "c"), base, {})
    assert "nstep: saved the default, now 2" in _refusal(tmp_path / "c", {**base, "nstep": 2})
    assert "nstep: saved 3 (the default), now 2" in _refusal(tmp_path / "c", {**base, "nstep": 2},
                                                             defaults={"nstep": 3})


def test_a_setting_back_at_its_default_now_and_groups_on_one_side_are_named(tmp_path):
    saved = {"task": "t", "nstep": 5, "reward_options": {"scale": 2.0}}
    ck.write_run_config(str(tmp_path), saved, {"config": {"nstep": 5, "scale": 2.0}})
    msg = _refusal(tmp_path, {"task": "t"})
    # the saved run's record is not the current default: the "now" side says only "the default"
    assert "nstep: saved 5, now the default" in msg
    assert "reward_options.scale: saved 2.0, now the default" in msg and "None" not in msg
    assert "nstep: saved 5, now 3 (the default)" in _refusal(tmp_path, {"task": "t"}, defaults={"nstep": 3})


def test_which_runs_resume_is_unchanged(tmp_path):
    fp = {"task": "t", "nstep": 2}
    snaps = ck.Snapshots(str(tmp_path))
    snaps.save(3, {"step": 3, "fingerprint": ck.fingerprint_text(fp), "config": {"nstep": 2}})
    assert ck.start_run(str(tmp_path), dict(fp), resume=True, overwrite=False, run_files=(),
                        defaults={"nstep": 3})[1]["step"] == 3
    # an explicit null is not the absent default: another fingerprint, refused as before, and named
    assert "nstep: saved 2, now None" in _refusal(tmp_path, {"task": "t", "nstep": None})
    assert "extra: saved the default, now None" in _refusal(tmp_path, {**fp, "extra": None})


def test_numpy_numbers_are_fingerprinted_as_the_python_numbers_they_equal():
    """A run configured from numpy values (``np.int64(4)``) resumes one configured with 4: the fingerprint
    held them as text ("4") before, in every trainer."""
    import numpy as np

    numpy = {"batch": np.int64(4), "flag": np.bool_(True), "lr": np.float32(0.5), "sizes": np.array([1, 2])}
    assert ck.fingerprint_text(numpy) == ck.fingerprint_text({"batch": 4, "flag": True, "lr": 0.5, "sizes": [1, 2]})


def test_a_second_process_training_in_the_same_folder_is_refused_until_the_first_ends(tmp_path):
    """Two processes training into one folder (a job started twice, a retry while the first still runs) both
    wrote its snapshots and logs; the folder's lock refuses the second, and a killed holder leaves no lock."""
    import subprocess
    import sys

    folder = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom mmreward.core import checkpoint as ck\n"
                               f"ck.start_run({folder!r}, {{'a': 1}}, resume=True, overwrite=False, run_files=())\n"
                               "print('locked', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for overwrite in (False, True):  # not even --overwrite removes a running run's files
            with pytest.raises(ValueError, match="in use by another training run"):
                ck.start_run(folder, {"a": 1}, resume=True, overwrite=overwrite, run_files=())
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    ck.start_run(folder, {"a": 1}, resume=True, overwrite=False, run_files=())  # the kernel released it
    ck.start_run(folder, {"a": 1}, resume=True, overwrite=False, run_files=())  # re-entrant in one process
    ck.unlock_run_folder(folder)


def test_a_dangling_link_as_the_output_folder_is_named_as_one(tmp_path):
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="is a link to .*gone.*which does not exist"):
        ck.start_run(str(tmp_path / "out"), {}, resume=True, overwrite=False, run_files=())
