"""Synthetic shapes data: exact labels, determinism, rendering that matches the scene."""
import numpy as np
import pytest
from mmreward.vision import synthetic as S


def test_prompts_read_like_the_scene():
    assert S.Scene("red", "circle", 1, "left").prompt() == "a red circle on the left"
    assert S.Scene("blue", "square", 2, "right").prompt() == "two blue squares on the right"
    assert S.Scene("green", "triangle", 3, "left").prompt() == "three green triangles on the left"
    words = set(S.vocabulary())
    assert {"a", "two", "three", "circles", "yellow", "right"} <= words


@pytest.mark.parametrize("n_match", [0, 1, 2, 3, 4])
def test_scene_with_matches_is_exact(n_match):
    rng = np.random.default_rng(n_match)
    for _ in range(50):
        target = S.random_scene(rng)
        assert target.matches(S.scene_with_matches(target, n_match, rng)) == n_match


def test_ranked_sets_are_seeded_and_labelled_exactly():
    a, b = S.ranked_sets(5, set_size=4, seed=3), S.ranked_sets(5, set_size=4, seed=3)
    c = S.ranked_sets(5, set_size=4, seed=4)
    assert all(np.array_equal(x.images, y.images) and x.prompt == y.prompt for x, y in zip(a, b))
    assert any(not np.array_equal(x.images, y.images) for x, y in zip(a, c))
    for s in a:
        assert s.images.shape == (4, 32, 32, 3) and s.images.dtype == np.uint8
        target = [sc for sc, r in zip(s.scenes, s.ranks) if r == 0]
        assert len(target) == 1 and target[0].prompt() == s.prompt
        assert len(set(s.ranks.tolist())) == 4  # no ties
        assert [4 - target[0].matches(sc) for sc in s.scenes] == s.ranks.tolist()


def _mask(img, colour):
    return (np.abs(img.astype(int) - np.array(S.COLOURS[colour])).sum(-1) < 60).astype(np.uint8)


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("position", ["left", "right"])
def test_render_draws_count_objects_of_the_colour_in_the_half(count, position):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(count)
    for colour, shape in [("red", "circle"), ("blue", "square"), ("yellow", "triangle")]:
        img = S.render(S.Scene(colour, shape, count, position), 32, rng)
        m = _mask(img, colour)
        n_components = cv2.connectedComponents(m)[0] - 1
        assert n_components == count
        _, xs = np.nonzero(m)
        assert (xs < 16).all() if position == "left" else (xs >= 16).all()


def test_shapes_differ_in_area():
    # circle / square / triangle cover clearly different areas: the shape is visible in the pixels
    for seed in range(5):
        rng = np.random.default_rng(seed)
        area = {sh: int(_mask(S.render(S.Scene("green", sh, 1, "left"), 32, rng), "green").sum()) for sh in S.SHAPES}
        assert area["triangle"] + 10 < area["circle"] < area["square"] - 10, area


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="set_size"):
        S.ranked_sets(2, set_size=6)
    with pytest.raises(ValueError, match="n must be"):
        S.ranked_sets(0)
    with pytest.raises(ValueError, match="size"):
        S.render(S.Scene("red", "circle", 1, "left"), 16)
