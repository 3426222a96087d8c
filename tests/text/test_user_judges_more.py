"""Verdict parsing as a demanding RLHF user meets it: judge outputs that earlier parsers misread."""
from mmreward.text.generative.parsing import parse_score, parse_yes_no


def test_yes_no_hyphenated_word_is_not_a_verdict():
    # GenRM: a "yes-man" / "no-brainer" after the verdict flipped it (the last yes/no counts)
    assert parse_yes_no("Answer: No.\n\nNote: the response is a yes-man reply.").value is False
    assert parse_yes_no("It is a no-brainer. Yes").value is True
    assert parse_yes_no("Answer: No - it fails the test").value is False


def test_score_full_width_colon():
    # Critic-RM on CJK output (Qwen writes "Score：7"): was "no 'Score: x' found"
    assert parse_score("评价很好。Score：7").value == 7.0
    assert parse_score("Score： **8**").value == 8.0
    assert parse_score("Score: 7").value == 7.0


def test_cli_warns_when_verdicts_are_unparsed(tmp_path, capsys):
    # a tiny untrained LM never writes [[A]]/[[B]] in 3 tokens: accuracy 0.5 of unread outputs must not pass silently
    import json

    from mmreward.text.generative.cli import main
    from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

    tok = word_tokenizer(["good bad q A B"])
    model = tiny_llama(len(tok), hidden=16, layers=1, heads=2)
    model.save_pretrained(str(tmp_path / "lm"))
    tok.save_pretrained(str(tmp_path / "lm"))
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "good", "rejected": "bad"}))
    assert main(["rm_r1", "--model", str(tmp_path / "lm"), "--data", str(tmp_path / "p.jsonl"),
                 "--max-new-tokens", "2"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["parse"]["n_parsed"] == 0
    assert "warning: 2 of 2 judge outputs had no verdict" in err
