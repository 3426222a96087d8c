"""Golden tests: the "paper" prompt presets render the published prompts character for character.

The expected strings below are the published ones (sources in docs/generative.md), filled in for the
fixed input: prompt "What is 2 + 2?", first response "4", second response "5".
"""
import json

import pytest

from mmreward.core.inputs import Comparison
from mmreward.text.generative.genrm import GenRMConfig
from mmreward.text.generative.gram import GRAM, GRAMConfig, stage1_batch, stage1_example
from mmreward.text.generative.reward_anything import RewardAnythingConfig, RewardAnythingJudge
from mmreward.text.generative.rm_r1 import RMR1Config, RMR1Judge, chain_of_rubrics_messages
from mmreward.text.generative.runner import JudgeResult
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

PROMPT, FIRST, SECOND = "What is 2 + 2?", "4", "5"

# NiuTrans/GRAM evaluation/gram_eval.py, lines 23-38
GRAM_PAPER_JUDGE = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user question displayed below. You should choose the assistant that follows the user's instructions and "
    "answers the user's question better.\n"
    "Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and "
    "level of detail of their responses. Avoid any position biases and ensure that the order in which the "
    "responses were presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible.\n"
    "Please directly output your final verdict by strictly following this format: \"A\" if assistant A is better, "
    "\"B\" if assistant B is better.\n\n"
    "[User Question]\n"
    "What is 2 + 2?\n\n"
    "[The Start of Assistant A's Answer]\n"
    "4\n"
    "[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n"
    "5\n"
    "[The End of Assistant B's Answer]\n\n"
    "#Preferred: "
)
# RM-R1-UIUC/RM-R1 eval/reward-bench/rewardbench/generative.py lines 280-328 (= demo/demo.ipynb INSTRUCT_SYSTEM_PROMPT)
RM_R1_PAPER_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI Chatbots to the "
    "Client's question displayed below.\n\n"
    "First, classify the task into one of two categories: <type>Reasoning</type> or <type>Chat</type>.\n"
    "- Use <type>Reasoning</type> for tasks that involve math, coding, or require domain knowledge, multi-step "
    "inference, logical deduction, or combining information to reach a conclusion.\n"
    "- Use <type>Chat</type> for tasks that involve open-ended or factual conversation, stylistic rewrites, safety "
    "questions, or general helpfulness requests without deep reasoning.\n\n"
    "If the task is Reasoning:\n"
    "1. Solve the Client's question yourself and present your final answer within <solution>...</solution> tags.\n"
    "2. Evaluate the two Chatbot responses based on correctness, completeness, and reasoning quality, referencing "
    "your own solution.\n"
    "3. Include your evaluation inside <eval>...</eval> tags, quoting or summarizing the Chatbots using the "
    "following tags:\n"
    "   - <quote_A>...</quote_A> for direct quotes from Chatbot A\n"
    "   - <summary_A>...</summary_A> for paraphrases of Chatbot A\n"
    "   - <quote_B>...</quote_B> for direct quotes from Chatbot B\n"
    "   - <summary_B>...</summary_B> for paraphrases of Chatbot B\n"
    "4. End with your final judgment in the format: <answer>[[A]]</answer> or <answer>[[B]]</answer>\n\n"
    "If the task is Chat:\n"
    "1. Generate evaluation criteria (rubric) tailored to the Client's question and context, enclosed in "
    "<rubric>...</rubric> tags.\n"
    "2. Assign weights to each rubric item based on their relative importance.\n"
    "3. Inside <rubric>, include a <justify>...</justify> section explaining why you chose those rubric criteria "
    "and weights.\n"
    "4. Compare both Chatbot responses according to the rubric.\n"
    "5. Provide your evaluation inside <eval>...</eval> tags, using <quote_A>, <summary_A>, <quote_B>, and "
    "<summary_B> as described above.\n"
    "6. End with your final judgment in the format: <answer>[[A]]</answer> or <answer>[[B]]</answer>\n\n"
    "Important Notes:\n"
    "- Be objective and base your evaluation only on the content of the responses.\n"
    "- Do not let response order, length, or Chatbot names affect your judgment.\n"
    "- Follow the response format strictly depending on the task type.\n\n"
    "Your output must follow one of the two formats below:\n\n"
    "For Reasoning:\n"
    "<type>Reasoning</type>\n\n"
    "<solution> your own solution for the problem </solution>\n\n"
    "<eval>\n"
    "  include direct comparisons supported by <quote_A>...</quote_A> or <summary_A>...</summary_A>, and "
    "<quote_B>...</quote_B>, or <summary_B>...</summary_B>\n"
    "</eval>\n\n"
    "<answer>[[A/B]]</answer>\n\n"
    "For Chat:\n"
    "<type>Chat</type>\n\n"
    "<rubric>\n"
    "  detailed rubric items\n"
    "  <justify> justification for the rubric </justify>\n"
    "</rubric>\n\n"
    "<eval>\n"
    "  include direct comparisons supported by <quote_A>...</quote_A> or <summary_A>...</summary_A>, and "
    "<quote_B>...</quote_B>, or <summary_B>...</summary_B> tags\n"
    "</eval>\n\n"
    "<answer>[[A/B]]</answer>"
)
# generative.py lines 330-333 (INSTRUCT_SINGLE_USER_PROMPT_TEMPLATE)
RM_R1_PAPER_USER = (
    "[Client Question]\n"
    "What is 2 + 2?\n\n"
    "[The Start of Chatbot A's Response]\n"
    "4\n"
    "[The End of Chatbot A's Response]\n\n"
    "[The Start of Chatbot B's Response]\n"
    "5\n"
    "[The End of Chatbot B's Response]"
)
# generative.py lines 340-346 (REASONING_SINGLE_PROMPT_TEMPLATE)
RM_R1_PAPER_REASONING_USER = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI Chatbots to the "
    "Client question displayed below. \n\n"
    "[Client Question]\n"
    "What is 2 + 2?\n\n"
    "[The Start of Chatbot A's Response]\n"
    "4\n"
    "[The End of Chatbot A's Response]\n\n"
    "[The Start of Chatbot B's Response]\n"
    "5\n"
    "[The End of Chatbot B's Response]\n\n"
    "Output your final verdict at last by strictly following this format: '<answer>[[A]]</answer>' if Chatbot A is "
    "better, or '<answer>[[B]]</answer>' if Chatbot B is better."
)
# zhuohaoyu/RewardAnything (PyPI rewardanything) rewardanything/processing.py lines 12-32 (SYSTEM_PROMPT)
RA_PAPER_SYSTEM = (
    "\n"
    "You are an evaluator judging model responses based on a given **evaluation principle**. Your primary goal is "
    "to assess how well each response for the prompt adheres to the principle, placing this above typical general "
    "preferences, though you should not endorse harmful content.\n\n"
    "Your task:\n"
    "1. Read the principle, prompt, and all responses carefully and consider how each response aligns with the "
    "principle, **briefly in a concise thinking process**\n"
    "2. Score each response from 1-5:\n"
    "   - 5: Perfect adherence + excellent quality\n"
    "   - 4: Strong adherence with minor limitations\n"
    "   - 3: Basic adherence\n"
    "   - 2: Partial adherence with key omissions\n"
    "   - 1: Poor adherence or contradicts principle\n"
    "3. Sort responses from best to worst (distinguish between same scores)\n\n"
    "Use the scoring scale accurately based on merit - don't compress scores if responses show significant quality "
    "differences. If responses vary substantially in quality, utilize the full range (1-5) to reflect these "
    "differences.\n\n"
    "Output ONLY this JSON format:\n"
    "{\n"
    "  \"scores\": {\"model-1\": 2, \"model-2\": 4, ...},\n"
    "  \"best-to-worst\": [\"model-2\", \"model-1\", ...]\n"
    "}\n"
)
# processing.py prepare_chat_messages: json.dumps(..., ensure_ascii=False) of the principle, the prompt and
# the responses under names masked by random.seed(42) + random.shuffle (here: "5" is shown as model-1)
RA_PAPER_USER = '{"principle": "Be correct.", "prompt": "What is 2 + 2?", "responses": {"model-1": "5", "model-2": "4"}}'


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer(["What is 2 + 2 ? 4 5 A B [[A]] [[B]] <answer> </answer> judge"])


def test_gram_paper_prompt(tok):
    gram = GRAM(tiny_llama(len(tok), hidden=16, layers=1, heads=2), tok, GRAMConfig(template="paper"))
    assert gram.messages(PROMPT, FIRST, SECOND) == [{"role": "user", "content": GRAM_PAPER_JUDGE}]
    # the stage-1 (pre-training) format of the GRAM README ("Datasets", "Pre-Training"): the user question
    # as the instruction, both answers as the output
    assert stage1_example(PROMPT, FIRST, SECOND, "paper") == (
        [{"role": "user", "content": "[User Question]\nWhat is 2 + 2?\n\n"}],
        "[The Start of Assistant A's Answer]\n4\n[The End of Assistant A's Answer]\n\n"
        "[The Start of Assistant B's Answer]\n5\n[The End of Assistant B's Answer]")
    assert stage1_batch(tok, [PROMPT], [FIRST], [SECOND], template="paper")["input_ids"].shape[0] == 1


def test_gram_paper_renders_without_thinking():
    """gram_eval.py line 71 renders with enable_thinking=False (a Qwen3 template then writes an empty
    think block); the runner passes the preset's chat-template variables through."""
    qwen3_like = word_tokenizer(["q a b A B <think> </think>"])
    qwen3_like.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <eos> {% endfor %}<assistant> "
        "{% if enable_thinking is defined and enable_thinking is false %}<think> </think> {% endif %}")
    model = tiny_llama(len(qwen3_like), hidden=16, layers=1, heads=2)
    paper = GRAM(model, qwen3_like, GRAMConfig(template="paper"))
    ours = GRAM(model, qwen3_like, GRAMConfig())
    assert paper.runner.render(paper.messages("q", "a", "b")).endswith("<assistant> <think> </think> ")
    assert ours.runner.render(ours.messages("q", "a", "b")).endswith("<assistant> ")


def test_rm_r1_paper_prompts():
    assert chain_of_rubrics_messages(PROMPT, FIRST, SECOND, template="paper") == [
        {"role": "system", "content": RM_R1_PAPER_SYSTEM}, {"role": "user", "content": RM_R1_PAPER_USER}]
    assert chain_of_rubrics_messages(PROMPT, FIRST, SECOND, template="paper-reasoning") == [
        {"role": "user", "content": RM_R1_PAPER_REASONING_USER}]
    # the compact default keeps RM-R1's user layout
    assert chain_of_rubrics_messages(PROMPT, FIRST, SECOND)[1] == {"role": "user", "content": RM_R1_PAPER_USER}


def test_rm_r1_paper_reads_verdicts_like_its_harness(tok):
    """RM-R1's harness (generative.py lines 578-585): an output naming both [[A]] and [[B]] is an error."""
    outputs = ["<eval>not [[A]]</eval> <answer>[[B]]</answer>", "<answer>[[A]]</answer>"]

    def scripted(msgs, parse, batch_size=None):
        return [[JudgeResult(i, 0, t, parse(t).value, parse(t).reason)] for i, t in enumerate(outputs[:len(msgs)])]

    pairs = [Comparison(PROMPT, FIRST, SECOND)] * 2
    model = tiny_llama(len(tok), hidden=16, layers=1, heads=2)
    for template, want in (("paper", [0.5, 1.0]), ("mmreward", [0.0, 1.0])):
        judge = RMR1Judge(model, tok, RMR1Config(template=template))
        judge.runner.run = scripted
        assert judge.score(pairs).tolist() == want, template


def test_reward_anything_paper_prompt(tok):
    judge = RewardAnythingJudge(tiny_llama(len(tok), hidden=16, layers=1, heads=2), tok,
                                RewardAnythingConfig(template="paper", principle="Be correct."))
    for index in (0, 7):  # the paper's masking uses seed 42 for every query
        msgs, names = judge.messages("Be correct.", PROMPT, [FIRST, SECOND], index)
        assert msgs == [{"role": "system", "content": RA_PAPER_SYSTEM}, {"role": "user", "content": RA_PAPER_USER}]
        assert names == ["model-2", "model-1"] and json.loads(msgs[1]["content"])["responses"]["model-2"] == FIRST


def test_genrm_uses_the_papers_question():
    """arXiv 2408.15240 Fig. 3: the verifier answers 'Is the answer correct (Yes/No)?' with Yes / No."""
    c = GenRMConfig()
    assert (c.question, c.yes, c.no) == ("Is the answer correct (Yes/No)?", "Yes", "No")


@pytest.mark.parametrize("cls, config", [(GRAMConfig, "template"), (RMR1Config, "template"),
                                         (RewardAnythingConfig, "template")])
def test_unknown_template_is_a_clear_error(cls, config):
    with pytest.raises(ValueError, match="template must be one of"):
        cls(**{config: "papr"})
