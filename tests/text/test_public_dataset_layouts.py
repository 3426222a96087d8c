"""Rows in the exact published layouts of the public RM / PRM datasets, read through mmreward's row
readers: each is read as its authors mean it (prompt once, system turn kept, the right side preferred,
ties as ties, step labels the right way round) or refused with one error naming the fields to give.
The expected values are derived by hand from each dataset card / official conversion code."""
import json

import pytest

from mmreward.core.data import DataError
from mmreward.core.inputs import Comparison, StepSolution, TextPair, as_inputs
from mmreward.text.data import TextEncoder, load_preference_pairs, pair_from_row, split_conversation
from mmreward.text.prm.data import IGNORE, parse_row, read_step_examples


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def system(text):
    return {"role": "system", "content": text}


def joined(pair, side="chosen"):
    """The text a ``joined``-format model reads for one side of a pair."""
    r = TextEncoder(None, input_format="joined").render(pair.prompt, getattr(pair, side))
    return r.text


# ------------------------------------------------------------------ preference pairs
def test_hh_rlhf_whole_dialogue_strings_are_read_whole():
    """Anthropic/hh-rlhf: {"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": …}, no prompt field:
    each side is the whole dialogue, scored as it is (the shared prefix once per side)."""
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}
    p = pair_from_row(row, 0)
    assert (p.prompt, p.chosen, p.rejected, p.tie) == (None, row["chosen"], row["rejected"], False)
    assert joined(p) == row["chosen"] and joined(p, "rejected") == row["rejected"]


def test_ultrafeedback_binarized_prompt_counted_once_even_with_outer_whitespace():
    """HuggingFaceH4/ultrafeedback_binarized: prompt + chosen / rejected conversations that repeat it
    (+ messages, score_chosen, score_rejected). The prompt is read once; a repeat that differs from
    the prompt field only by outer whitespace is still a repeat (it was read twice)."""
    row = {"prompt": "Name a colour.", "prompt_id": "abc",
           "chosen": [user("Name a colour.\n"), assistant("Blue.")],
           "rejected": [user("Name a colour.\n"), assistant("Soup.")],
           "messages": [user("Name a colour.\n"), assistant("Blue.")], "score_chosen": 8.0, "score_rejected": 5.0}
    p = pair_from_row(row, 0)
    assert not p.tie and p.meta["score_chosen"] == 8.0 and p.meta["score_rejected"] == 5.0
    assert split_conversation(p.prompt, p.chosen) == ("Name a colour.", [assistant("Blue.")])
    assert joined(p) == "Name a colour.\n\nBlue." and joined(p, "rejected") == "Name a colour.\n\nSoup."


def test_skywork_and_trl_implicit_conversations():
    """Skywork-Reward-Preference-80K-v0.2 / trl-lib/ultrafeedback_binarized: chosen / rejected are whole
    conversations (no prompt): the earlier turns are the prompt, the last turn the response."""
    row = {"chosen": [user("2+2?"), assistant("4")], "rejected": [user("2+2?"), assistant("5")], "source": "x"}
    p = pair_from_row(row, 0)
    assert p.prompt is None and p.meta == {"source": "x"}
    assert split_conversation(p.prompt, p.chosen) == ([user("2+2?")], [assistant("4")])
    assert joined(p, "rejected") == "2+2?\n\n5"


def test_trl_explicit_formats():
    """TRL explicit prompt, standard and conversational."""
    p = pair_from_row({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}, 0)
    assert (p.prompt, p.chosen, p.rejected) == ("The sky is", " blue.", " green.")
    p = pair_from_row({"prompt": [user("Colour?")], "chosen": [assistant("blue")],
                       "rejected": [assistant("green")]}, 0)
    assert joined(p) == "Colour?\n\nblue"


def test_orca_dpo_pairs_question_and_system_are_the_prompt():
    """Intel/orca_dpo_pairs {system, question, chosen, rejected}: the question and the system prompt were
    dropped (both sides scored as bare answers); they are the prompt, the system turn first."""
    row = {"system": "You are a helpful assistant.", "question": "What is 3*3?", "chosen": "9", "rejected": "6"}
    p = pair_from_row(row, 0)
    assert p.prompt == [system("You are a helpful assistant."), user("What is 3*3?")] and p.meta == {}
    assert joined(p) == "You are a helpful assistant.\n\nWhat is 3*3?\n\n9"
    # an empty system prompt (most rows of the argilla version) adds no turn
    assert pair_from_row({**row, "system": ""}, 0).prompt == "What is 3*3?"


def test_argilla_distilabel_orca_input_is_the_prompt_and_status_tie_is_a_tie():
    """argilla/distilabel-intel-orca-dpo-pairs {system, input, chosen, rejected, status, …}: ``input`` is
    the prompt; rows with status "tie" (both rated the same) are ties, not preferences."""
    row = {"system": "", "input": "Q?", "chosen": "a", "rejected": "b", "generations": ["a", "b"],
           "order": ["gpt4", "llama"], "rating": [8.0, 8.0], "status": "tie", "chosen_score": 8.0,
           "in_gsm8k_train": False}
    p = pair_from_row(row, 0)
    assert p.prompt == "Q?" and p.tie and "input" not in p.meta and p.meta["status"] == "tie"
    assert not pair_from_row({**row, "status": "swapped"}, 0).tie
    assert not pair_from_row({**row, "status": "unchanged"}, 0).tie


def test_system_field_goes_before_implicit_conversations_or_is_refused():
    row = {"system": "Be brief.", "chosen": [user("Hi"), assistant("Hey")], "rejected": [user("Hi"), assistant("Yo")]}
    p = pair_from_row(row, 0)
    assert p.chosen[0] == system("Be brief.") and p.rejected[0] == system("Be brief.")
    assert split_conversation(p.prompt, p.chosen) == ([system("Be brief."), user("Hi")], [assistant("Hey")])
    same = {**row, "chosen": [system("Be brief.")] + row["chosen"], "rejected": [system("Be brief.")] + row["rejected"]}
    assert pair_from_row(same, 0).chosen == p.chosen  # not put twice
    with pytest.raises(DataError, match="row 0: field 'system' and the system turn that opens 'chosen' differ"):
        pair_from_row({**same, "system": "Be long."}, 0)
    with pytest.raises(DataError, match="row 0: field 'system' would be dropped"):
        pair_from_row({"system": "S", "chosen": "a", "rejected": "b"}, 0)
    with pytest.raises(DataError, match="row 0: field 'system' must be a string"):
        pair_from_row({"system": 3, "prompt": "q", "chosen": "a", "rejected": "b"}, 0)


def test_prompt_under_another_name_beside_bare_texts_is_refused():
    for key in ("instruction", "query", "problem", "context", "history"):
        with pytest.raises(DataError, match=f"row 0: field '{key}' would be dropped.*rename '{key}' to 'prompt'"):
            pair_from_row({key: "q", "chosen": "a", "rejected": "b"}, 0)
    with pytest.raises(DataError, match="row 0: field 'instruction' would be dropped"):  # one-turn lists too
        pair_from_row({"instruction": "q", "chosen": [assistant("a")], "rejected": [assistant("b")]}, 0)
    with pytest.raises(DataError, match="fields 'conversation_a' and 'conversation_b' give two responses"):
        pair_from_row({"conversation_a": [user("q"), assistant("a")], "conversation_b": [user("q"), assistant("b")],
                       "winner": "model_a", "model_a": "x", "model_b": "y"}, 0)
    with pytest.raises(DataError, match="fields 'question' and 'input' both give the prompt"):
        pair_from_row({"question": "q1", "input": "q2", "chosen": "a", "rejected": "b"}, 0)


@pytest.mark.parametrize("strength, chosen, tie", [(-3, "R1", False), (-1, "R1", False), (0, "R1", True),
                                                   (1, "R2", False), (3, "R2", False)])
def test_helpsteer2_preference_strength_sign(strength, chosen, tie):
    """nvidia/HelpSteer2 preference/preference.jsonl.gz: preference_strength −3 = response 1 much better …
    +3 = response 2 much better; 0 = about the same (a tie)."""
    row = {"split": "train", "prompt": "P", "response_1": "R1", "response_2": "R2", "preference_strength": strength,
           "preference_statement": "…", "preference_elaboration": "…", "three_most_similar_preferences": [],
           "all_preferences_unprocessed": [strength]}
    p = pair_from_row(row, 0)
    assert (p.prompt, p.chosen, p.rejected, p.tie) == ("P", chosen, "R2" if chosen == "R1" else "R1", tie)
    assert p.meta["preference_strength"] == strength and "response_1" not in p.meta


def test_helpsteer3_overall_preference_sign():
    """nvidia/HelpSteer3 preference: context (messages), response1, response2, overall_preference (same scale)."""
    row = {"domain": "general", "language": "english", "context": [user("Hi")], "response1": "A", "response2": "B",
           "overall_preference": 2, "individual_preference": []}
    p = pair_from_row(row, 0)
    assert (p.prompt, p.chosen, p.rejected, p.tie) == ([user("Hi")], "B", "A", False)
    assert pair_from_row({**row, "overall_preference": -2}, 0).chosen == "A"
    with pytest.raises(DataError, match="row 0: field 'overall_preference' must be an integer from -3"):
        pair_from_row({**row, "overall_preference": 7}, 0)


def test_pku_saferlhf_and_two_response_rows_are_refused_naming_the_fields():
    """PKU-Alignment/PKU-SafeRLHF holds two preferences (better_response_id: helpfulness,
    safer_response_id: harmlessness): the reader cannot pick one for the user."""
    row = {"prompt": "P", "response_0": "A", "response_1": "B", "prompt_source": "x", "response_0_source": "m",
           "response_1_source": "n", "is_response_0_safe": True, "is_response_1_safe": False,
           "better_response_id": 1, "safer_response_id": 0}
    with pytest.raises(DataError, match="PKU-SafeRLHF row .*helpfulness and harmlessness.*'chosen'.*'rejected'"):
        pair_from_row(row, 0)
    with pytest.raises(DataError, match="fields 'response_a' and 'response_b' give two responses but not which"):
        pair_from_row({"prompt": "P", "response_a": "A", "response_b": "B", "winner": "model_a"}, 0)


def test_reward_bench_rows():
    """allenai/reward-bench: prompt, chosen, chosen_model, rejected, rejected_model, subset, id."""
    row = {"prompt": "P", "chosen": "a", "chosen_model": "m1", "rejected": "b", "rejected_model": "m2",
           "subset": "alpacaeval-easy", "id": 7}
    p = pair_from_row(row, 0)
    assert (p.prompt, p.chosen, p.rejected) == ("P", "a", "b")
    assert p.meta == {"chosen_model": "m1", "rejected_model": "m2", "subset": "alpacaeval-easy", "id": 7}


def test_rm_bench_rows_point_to_the_harness(tmp_path):
    """RM-Bench: chosen / rejected are lists of three styled strings (was: "'chosen'[0] must be a message")."""
    row = {"id": 1, "prompt": "P", "chosen": ["c1", "c2", "c3"], "rejected": ["r1", "r2", "r3"], "domain": "chat"}
    with pytest.raises(DataError, match="row 0: field 'chosen' is a list of 3 strings.*--benchmark rm-bench"):
        pair_from_row(row, 0)
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    path = tmp_path / "rmb.parquet"
    pq.write_table(pa.Table.from_pylist([row]), str(path))
    with pytest.raises(DataError, match="rmb.parquet: row 0: field 'chosen' is a list of 3 strings"):
        load_preference_pairs(str(path))


def test_layouts_through_a_jsonl_file(tmp_path):
    rows = [{"system": "S", "question": "Q", "chosen": "a", "rejected": "b"},
            {"prompt": "P", "response_1": "x", "response_2": "y", "preference_strength": 2}]
    path = tmp_path / "mix.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = load_preference_pairs(str(path))
    assert a.prompt == [system("S"), user("Q")] and (b.chosen, b.rejected) == ("y", "x")
    # a PreferencePair read back keeps its system turn once
    again = pair_from_row(a, 0)
    assert again.prompt == a.prompt and again.meta == {}


# ------------------------------------------------------------------ score --data rows (from_record)
def test_text_pair_rows_keep_their_system_field():
    assert TextPair.from_record({"system": "S", "prompt": "Q", "response": "R"}) == \
        TextPair([system("S"), user("Q")], "R")
    assert TextPair.from_record({"system": "S", "messages": [user("Q"), assistant("R")]}) == \
        TextPair(None, [system("S"), user("Q"), assistant("R")])
    assert TextPair.from_record({"system": "", "prompt": "Q", "response": "R"}) == TextPair("Q", "R")
    assert TextPair.from_record({"system": "S", "prompt": "", "response": "R"}) == TextPair([system("S")], "R")
    assert pair_from_row({"system": "S", "prompt": "", "chosen": "a", "rejected": "b"}, 0).prompt == [system("S")]
    with pytest.raises(DataError, match="row: field 'system' would be dropped"):
        TextPair.from_record({"system": "S", "text": "whole text"})
    with pytest.raises(DataError, match="input 0: field 'system' would be dropped: a pairwise judge"):
        as_inputs(Comparison, [{"system": "S", "prompt": "Q", "chosen": "a", "rejected": "b"}])
    assert as_inputs(Comparison, [{"system": "", "prompt": "Q", "chosen": "a", "rejected": "b"}]) == \
        [Comparison("Q", "a", "b")]
    with pytest.raises(DataError, match="'response_1' is one of two responses of a preference row"):
        TextPair.from_record({"prompt": "P", "response_1": "A", "response_2": "B", "preference_strength": 1})


def test_step_solution_rows_of_public_prm_datasets():
    """ProcessBench and trl-lib/math_shepherd rows score as they are; raw Math-Shepherd and PRM800K rows
    name the reader that takes their steps out (they were 'missing field problem' / 'problem must be a
    string, got {...}')."""
    pb = {"id": "gsm8k-0", "generator": "g", "problem": "P", "steps": ["a", "b"], "final_answer_correct": False,
          "label": 1}
    assert as_inputs(StepSolution, [pb]) == [StepSolution("P", ["a", "b"])]
    trl = {"prompt": "P", "completions": ["a", "b"], "labels": [True, False]}
    assert as_inputs(StepSolution, [trl]) == [StepSolution("P", ["a", "b"])]
    with pytest.raises(DataError, match="a Math-Shepherd row .*read_step_examples.*'problem'.*'steps'"):
        as_inputs(StepSolution, [{"input": "P Step 1: a ки", "label": "P Step 1: a +", "task": "GSM8K"}])
    with pytest.raises(DataError, match="a raw PRM800K row"):
        as_inputs(StepSolution, [{"question": {"problem": "P"}, "label": {"steps": []}}])


# ------------------------------------------------------------------ stepwise PRM rows
MS_PROBLEM = "Janet has 16 eggs and eats 3. How many are left?"


def shepherd(problem, steps, signs):
    inp = problem + " " + "\n".join(f"{s} ки" for s in steps)
    lab = problem + " " + "\n".join(f"{s} {g}" for s, g in zip(steps, signs))
    return {"input": inp, "label": lab, "task": "GSM8K"}


def test_math_shepherd_rows_as_trl_converts_them():
    """peiyi9979/Math-Shepherd: the problem ends at "Step 1:" (steps keep the prefix), + good, − bad:
    the same (prompt, completions, labels) as trl-lib/math_shepherd."""
    row = shepherd(MS_PROBLEM, ["Step 1: 16 - 3 = 13.", "Step 2: The answer is: 14"], "+-")
    e = parse_row(row, 0)
    assert (e.problem, e.steps, e.labels, e.first_error) == (
        MS_PROBLEM, ["Step 1: 16 - 3 = 13.", "Step 2: The answer is: 14"], [1.0, 0.0], 1)
    trl = parse_row({"prompt": MS_PROBLEM, "completions": e.steps, "labels": [True, False]}, 0)
    assert (trl.problem, trl.steps, trl.labels) == (e.problem, e.steps, e.labels)


def test_math_shepherd_problem_split_without_step_1():
    """TRL's conversion: "step 1:" (lower case) too, else the text up to the question's "?" — a
    multi-line question was split at its last line break, the question's tail read as step 1."""
    e = parse_row(shepherd(MS_PROBLEM, ["step 1: 13 left"], "+"), 0)
    assert (e.problem, e.steps) == (MS_PROBLEM, ["step 1: 13 left"])
    e = parse_row(shepherd("Janet has 16 eggs.\nShe eats 3. How many are left?", ["16 - 3 = 13", "13"], "+-"), 0)
    assert (e.problem, e.steps, e.labels) == ("Janet has 16 eggs.\nShe eats 3. How many are left?",
                                              ["16 - 3 = 13", "13"], [1.0, 0.0])
    # a tag inside the problem (a few released rows): not a step, its label dropped
    row = {"input": "Mr. Rocky sells ки jam. How much? Step 1: 2 jars ки\nStep 2: 4 ки",
           "label": "Mr. Rocky sells + jam. How much? Step 1: 2 jars -\nStep 2: 4 +"}
    e = parse_row(row, 0)
    assert (e.problem, e.steps, e.labels) == ("Mr. Rocky sells jam. How much?", ["Step 1: 2 jars", "Step 2: 4"],
                                              [0.0, 1.0])
    with pytest.raises(DataError, match="row 0: cannot tell where the problem ends and step 1 begins"):
        parse_row({"input": "sixteen ки", "label": "sixteen +"}, 0)


def test_processbench_label_is_the_first_wrong_step():
    """Qwen/ProcessBench: label = index of the earliest wrong step (−1: all right); later steps unjudged."""
    row = {"id": "olympiadbench-4", "generator": "g", "problem": "P", "steps": ["a", "b", "c", "d"],
           "final_answer_correct": False, "label": 2}
    e = parse_row(row, 0)
    assert (e.labels, e.first_error, e.subset) == ([1.0, 1.0, 0.0, IGNORE], 2, "olympiadbench")
    e = parse_row({**row, "label": -1, "final_answer_correct": True}, 0)
    assert (e.labels, e.first_error) == ([1.0, 1.0, 1.0, 1.0], -1)


def test_prm800k_raw_rows():
    """openai/prm800k phase*_train.jsonl: the chosen completion of each step, ratings +1 good, −1 bad,
    0 neutral (ignored by default); a human completion (all completions rated −1) is a good step; a step
    without a chosen or human completion ends the trajectory (found_error)."""
    row = {"labeler": "l", "timestamp": "t", "generation": 1, "is_quality_control_question": False,
           "is_initial_screening_question": False,
           "question": {"problem": "P", "ground_truth_answer": "4", "pre_generated_steps": ["s1", "s2"],
                        "pre_generated_answer": "4", "pre_generated_verifier_score": 0.5},
           "label": {"steps": [
               {"completions": [{"text": "s1", "rating": 1, "flagged": False}], "human_completion": None,
                "chosen_completion": 0},
               {"completions": [{"text": "x", "rating": -1, "flagged": False}, {"text": "y", "rating": 0,
                                                                                 "flagged": False}],
                "human_completion": None, "chosen_completion": 1},
               {"completions": [{"text": "z", "rating": -1, "flagged": False}],
                "human_completion": {"text": "h", "rating": None, "source": "human", "flagged": False},
                "chosen_completion": None},
               {"completions": [{"text": "w", "rating": -1, "flagged": False}], "human_completion": None,
                "chosen_completion": None},
               {"completions": [{"text": "never read", "rating": 1, "flagged": False}], "human_completion": None,
                "chosen_completion": 0}],
               "total_time": 1, "finish_reason": "found_error"}}
    e = parse_row(row, 0)
    assert (e.problem, e.steps, e.labels, e.first_error) == ("P", ["s1", "y", "h", "w"], [1.0, IGNORE, 1.0, 0.0], 3)
    assert read_step_examples([row], neutral="bad")[0].labels == [1.0, 0.0, 1.0, 0.0]


def test_helpsteer2_preference_file_rows_are_read_one_split_at_a_time(tmp_path):
    """nvidia/HelpSteer2 preference/preference.jsonl.gz holds the train and validation rows together, told
    apart by their field 'split': reading the whole file trained on the validation rows."""
    rows = [{"split": "train", "prompt": "p1", "response_1": "a", "response_2": "b", "preference_strength": 2},
            {"split": "val", "prompt": "p2", "response_1": "c", "response_2": "d", "preference_strength": -1},
            {"split": "train", "prompt": "p3", "response_1": "e", "response_2": "f", "preference_strength": 0}]
    path = tmp_path / "preference.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"preference.jsonl: the rows belong to several splits \(field 'split': "
                                         r"\{'train': 2, 'val': 1\}\): give split="):
        load_preference_pairs(str(path))
    train = load_preference_pairs(str(path), split="train")
    assert [(p.prompt, p.chosen, p.rejected, p.tie) for p in train] == [("p1", "b", "a", False), ("p3", "e", "f", True)]
    assert [(p.prompt, p.chosen) for p in load_preference_pairs(rows, split="val")] == [("p2", "c")]
    with pytest.raises(DataError, match="no row has split 'validation'"):
        load_preference_pairs(str(path), split="validation")
    # a split asked of a file whose rows do not name theirs is still the file's error
    (tmp_path / "plain.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(DataError, match="is a JSON-lines file, not a set of splits"):
        load_preference_pairs(str(tmp_path / "plain.jsonl"), split="train")


def test_orca_system_turn_reaches_the_chat_template():
    """In the chat format the system prompt is the template's system turn, the question the user turn."""
    from helpers import word_tokenizer

    template = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
    tok = word_tokenizer(["x"], model_max_length=64, chat_template=template)
    p = pair_from_row({"system": "Be exact.", "question": "3*3?", "chosen": "9", "rejected": "6"}, 0)
    enc = TextEncoder(tok, input_format="chat")
    assert enc.render(p.prompt, p.chosen).text == "<system> Be exact. <user> 3*3? <assistant> 9 "
    hs3 = pair_from_row({"context": [user("Hi"), assistant("Hey"), user("Joke?")], "response1": "no",
                         "response2": "knock knock", "overall_preference": 3}, 0)
    assert enc.render(hs3.prompt, hs3.chosen).text == "<user> Hi <assistant> Hey <user> Joke? <assistant> knock knock "


def test_score_commands_read_a_preference_row_as_training_does(tmp_path, capsys):
    """`mmreward score` / `mmreward text score` built preference rows by hand: an orca row's system prompt and
    argilla's `input` prompt were dropped (both responses scored against no prompt)."""
    from mmreward.text.cli import score_items

    row = {"system": "be brief", "input": "2+2?", "chosen": "4", "rejected": "5"}
    items, where = score_items([row], "rows.jsonl")
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    assert [(it.prompt, it.response) for it in items] == [(turns, "4"), (turns, "5")]
    assert where == [(0, "chosen"), (0, "rejected")]
    with pytest.raises(DataError, match=r"rows.jsonl: row 0: field 'query' would be dropped"):
        score_items([{"query": "q", "chosen": "a", "rejected": "b"}], "rows.jsonl")


def test_score_commands_read_helpsteer_rows_and_their_split_field(tmp_path, capsys):
    """HelpSteer2 rows trained but `mmreward score` / `text score` refused them ("needs 'response'"), and
    `mmreward score --split val` refused a file whose rows name their split."""
    from mmreward.text.cli import score_items

    row = {"prompt": "p", "response_1": "one", "response_2": "two", "preference_strength": 2, "split": "val"}
    items, where = score_items([row], "hs2.jsonl")
    assert [(it.prompt, it.response) for it in items] == [("p", "two"), ("p", "one")]  # +2: response 2 preferred
    assert where == [(0, "chosen"), (0, "rejected")]

    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "core"))
    from test_contract_inputs_and_folders import LinRM

    from mmreward import registry
    from mmreward.cli import main

    registry.register_model(LinRM.model_type, "test_contract_inputs_and_folders:LinRM")
    try:
        LinRM().save_pretrained(str(tmp_path / "m"))
        data = tmp_path / "hs2.jsonl"
        data.write_text(json.dumps({**row, "split": "train", "prompt": "t"}) + "\n" + json.dumps(row) + "\n")
        assert main(["score", "--model", str(tmp_path / "m"), "--data", str(data), "--split", "val", "--json"]) == 0
        out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [r["prompt"] for r in out] == ["p"] and "score_chosen" in out[0] and "score_rejected" in out[0]
    finally:
        registry.MODEL_TYPES.pop(LinRM.model_type, None)
