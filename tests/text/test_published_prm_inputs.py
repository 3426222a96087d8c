"""A published PRM sees exactly the tokens its authors feed it: for every layout ``mmreward.load`` reads
(Qwen2.5-Math-PRM, Math-Shepherd, Skywork-o1-Open-PRM, RLHFlow, TRL token classifiers / PURE-PRM), the ids
``encode_one`` builds for (problem, steps) equal, token for token, the ids of the official construction
written out here from the model card / official code (see docs/prm.md for the sources), and the step
scores are read at the official positions. Also: a realistic Llama-3.1 template (system header, trimmed
turns), unusual steps (empty, spaced, multi-line), a problem given as chat messages, and truncation (the
kept ids are the official ids up to the last step that fits).

The tiny folders come from ``test_prm_contract`` / ``test_published_prms_more`` (official key layouts).
"""
import os
import shutil

import pytest

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mmreward  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import StepSolution  # noqa: E402
from mmreward.text.prm import published  # noqa: E402
from test_prm_contract import CHAT_TEMPLATE, FOLDER_NAMES, SOLUTIONS, WRITERS  # noqa: E402
from test_published_prms_more import official_trl_rows, write_qwen_token_prm  # noqa: E402

ODD = [StepSolution(SOLUTIONS[0].problem, ["  3 + 4 = 7 .  ", "", "7 - 2\n\n= 5 ."]),  # spaced, empty, multi-line
       StepSolution("", ["5 - 1 = 4 ."])]  # no problem text


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("published-inputs")
    return {name: write(str(root / FOLDER_NAMES.get(name, f"{name}-tiny"))) for name, write in WRITERS.items()}


def _tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _positions(ids, token_id):
    return [i for i, t in enumerate(ids) if t == token_id]


# ---------------------------------------------------------------- official constructions, written out
def official_qwen_ids(tok, problem, steps):
    """Qwen2.5-Math-PRM-7B / -72B / Qwen2.5-Math-7B-PRM800K cards: system / user / assistant chat, steps
    joined and ended by <extra_0>, apply_chat_template(tokenize=False, add_generation_prompt=False),
    tokenizer.encode; step_sep_id = encode("<extra_0>")[0], read wherever it occurs."""
    messages = [{"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
                {"role": "user", "content": problem},
                {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
    ids = tok.encode(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))
    return ids, _positions(ids, tok.encode("<extra_0>")[0])


def official_math_shepherd_ids(tok, problem, steps):
    """peiyi9979/math-shepherd-mistral-7b-prm card: encode(f"{question} {output}"), output = the steps each
    ended by " ки", joined by newlines; step_tag_id = encode("ки")[-1], read wherever it occurs."""
    output = "\n".join(f"{s} ки" for s in steps)
    ids = tok.encode(f"{problem} {output}")
    return ids, _positions(ids, tok.encode("ки")[-1])


def official_skywork_ids(tok, problem, steps):
    """skywork-o1-prm-inference io_utils.prepare_input(problem, "\\n".join(steps), step_token="\\n"): BOS +
    problem + "\\n" encoded, then each step's ids (none for an empty step) + the step token; flags on those."""
    ids = tok.encode(tok.bos_token + problem + "\n")
    flags = []
    step_token_id = tok.encode("\n")[-1]
    for step in "\n".join(steps).split("\n"):
        ids += (tok.encode(step) if step != "" else []) + [step_token_id]
        flags.append(len(ids) - 1)
    return ids, flags


def official_rlhflow_ids(tok, problem, steps):
    """RLHFlow math/prm_evaluate.py: for step k, apply_chat_template of the conversation up to it (user
    turns problem + " " + step₁, then step_k, each answered "+"); the score is read at position -3."""
    conversation, per_step = [], []
    for k, step in enumerate(steps):
        conversation += [{"content": problem + " " + step if k == 0 else step, "role": "user"},
                         {"content": "+", "role": "assistant"}]
        ids = list(tok.apply_chat_template(conversation, return_dict=True)["input_ids"])
        per_step.append((ids, len(ids) - 3))
    return per_step


# ---------------------------------------------------------------- token-for-token parity
@pytest.mark.parametrize("name, official", [("qwen2.5-math-prm", official_qwen_ids),
                                            ("math-shepherd", official_math_shepherd_ids)])
def test_whole_text_layouts_feed_the_cards_ids(folders, name, official):
    prm, tok = mmreward.load(folders[name]), _tokenizer(folders[name])
    sols = SOLUTIONS + (ODD if name == "qwen2.5-math-prm" else [])  # the word-level Math-Shepherd vocab lacks ODD's
    for sol in sols:
        ids, tags = prm.encode_one(sol.problem, sol.steps)
        assert (ids, tags) == official(tok, sol.problem, sol.steps)
        assert len(tags) == len(sol.steps)
    if name == "qwen2.5-math-prm":  # the system turn of the card is there, once, before the problem
        text = tok.decode(prm.encode_one(SOLUTIONS[0].problem, SOLUTIONS[0].steps)[0])
        assert text.count(published.QWEN_PRM_SYSTEM) == 1 and text.index(published.QWEN_PRM_SYSTEM) < text.index("What is")


def test_skywork_feeds_prepare_input_ids(folders):
    prm, tok = mmreward.load(folders["skywork-o1-open-prm"]), _tokenizer(folders["skywork-o1-open-prm"])
    assert tok.bos_token is not None
    # a step holding "\n" is several steps to the official split (docs/prm.md): not among these
    for sol in SOLUTIONS + [StepSolution(ODD[0].problem, ["  3 + 4 = 7 .  ", ""]), ODD[1]]:
        assert prm.encode_one(sol.problem, sol.steps) == official_skywork_ids(tok, sol.problem, sol.steps)


LLAMA31_TEMPLATE = (  # the shape of Llama-3.1-8B-Instruct's template: BOS, a dated system header, trimmed turns
    "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")


@pytest.mark.parametrize("template", ["tiny", "llama-3.1"])
def test_rlhflow_one_pass_reads_every_official_prefix_position(folders, tmp_path, template):
    folder = folders["rlhflow-prm"]
    if template == "llama-3.1":
        folder = shutil.copytree(folder, str(tmp_path / "Llama3.1-8B-PRM-Mistral-Data"))
        tok = _tokenizer(folder)
        tok.chat_template = LLAMA31_TEMPLATE
        tok.save_pretrained(folder)
    prm, tok = mmreward.load(folder), _tokenizer(folder)
    assert prm.config.input_format == "rlhflow_prm"
    for sol in SOLUTIONS + ODD:
        ids, tags = prm.encode_one(sol.problem, sol.steps)
        per_step = official_rlhflow_ids(tok, sol.problem, sol.steps)
        assert ids == per_step[-1][0]  # the whole conversation, BOS from the template only
        assert all(ids[: len(prefix)] == prefix for prefix, _ in per_step)  # every step's input is a prefix of it
        assert tags == [pos for _, pos in per_step]
        assert all(ids[t + 1] == tok.encode("+")[-1] for t in tags)  # read just before each assistant "+"


def test_trl_token_classifier_feeds_tokenize_row_ids(tmp_path):
    folder = str(tmp_path / "run")
    write_qwen_token_prm(folder)
    prm, tok = mmreward.load(folder), _tokenizer(folder)
    for sol in SOLUTIONS + ODD:
        ids, labels = official_trl_rows(tok, sol.problem, sol.steps)
        assert prm.encode_one(sol.problem, sol.steps) == (ids, [i for i, y in enumerate(labels) if y != -100])
    # PURE-PRM's card: steps split at "\n\n", a "\n" token after each (TRL's default separator): the same ids
    assert prm.config.step_tag == "\n" and tok.bos_token_id is None


# ---------------------------------------------------------------- unusual inputs
def test_a_chat_message_list_as_the_problem_is_refused_by_name(folders):
    prm = mmreward.load(folders["qwen2.5-math-prm"])
    with pytest.raises(DataError, match=r"input 0: field 'problem' must be a string"):
        prm.score_parts([{"problem": [{"role": "user", "content": "What is 5 - 1 ?"}], "steps": ["5 - 1 = 4 ."]}])


@pytest.mark.parametrize("name", ["qwen2.5-math-prm", "rlhflow-prm", "skywork-o1-open-prm", "math-shepherd"])
def test_truncation_keeps_the_official_ids_up_to_the_last_step_that_fits(folders, name):
    prm = mmreward.load(folders[name])
    sol = SOLUTIONS[3]  # 4 steps
    full, tags = prm.encode_one(sol.problem, sol.steps)
    limit = (tags[1] + tags[2]) // 2 + 1  # steps 0 and 1 fit, step 2 does not
    prm.config.max_length = limit
    with pytest.raises(DataError, match=rf"input: problem \+ 4 steps are {len(full)} tokens, more than max_length={limit}"):
        prm.encode_one(sol.problem, sol.steps)
    ids, kept = prm.encode_one(sol.problem, sol.steps, truncate=True)
    assert kept == tags[:2] and ids == full[: tags[1] + 1]  # cut after step 1's tag: the right end goes, not the left
    prm.config.truncate = True
    parts = prm.score_parts([sol])[0]
    assert not parts[:2].isnan().any() and parts[2:].isnan().all()


# ---------------------------------------------------------------- a tokenizer that is not the PRM's
def _qwen_tokenizer_without_extra_0():
    """A ChatML byte-BPE tokenizer without the <extra_0> special token (the base Qwen2.5 tokenizer's case)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [published.QWEN_PRM_SYSTEM, "system user assistant\n"] + [s.problem + " " + " ".join(s.steps) for s in SOLUTIONS]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=specials[1:])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_a_qwen_prm_folder_whose_tokenizer_splits_extra_0_is_refused(folders, tmp_path):
    """Before: the folder loaded and every step was scored at the first piece of the split tag ('<'), a
    position the head never learned, with plausible-looking numbers."""
    folder = shutil.copytree(folders["qwen2.5-math-prm"], str(tmp_path / "qwen-prm-base-tokenizer"))
    for f in os.listdir(folder):
        if f.startswith(("tokenizer", "special_tokens", "chat_template", "added_tokens")):
            os.remove(os.path.join(folder, f))
    tok = _qwen_tokenizer_without_extra_0()
    tok.save_pretrained(folder)
    assert len(tok.encode("<extra_0>")) > 1
    with pytest.raises(CheckpointError, match=r"qwen-prm-base-tokenizer: its tokenizer splits the step tag '<extra_0>' "
                                              r"into \d+ tokens"):
        mmreward.load(folder)
    # the same check guards a PRM built by hand in this format
    from transformers import Qwen2Config, Qwen2Model

    from mmreward.text.prm.model import ProcessRewardModel

    base = Qwen2Model(Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match=r"splits '<extra_0>' into \d+ tokens"):
        ProcessRewardModel.from_backbone(base, tok, head="mlp", input_format="qwen_prm", step_tag="<extra_0>",
                                         step_separator="", system_prompt=published.QWEN_PRM_SYSTEM)
