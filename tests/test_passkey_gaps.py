"""eval_passkey.py: what its surviving mutants showed the other tests did not pin down
(tools/mutation.sh eval_passkey.py, results/mutation.md)."""
import random

import pytest

import eval_passkey
from data.tokenizer import get_encoding


def test_default_depths_are_five_cells_over_the_whole_text():
    # the README's command gives no --depths: the default must be the five documented centres,
    # whose cells split [0, 1] halfway between them (by hand)
    args = eval_passkey.parse_args(["out/run"])
    assert args.depths == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert eval_passkey.depth_cells(args.depths) == [(0.0, 0.125), (0.125, 0.375), (0.375, 0.625),
                                                     (0.625, 0.875), (0.875, 1.0)]
    assert (args.trials, args.seed, args.lengths, args.attention, args.p, args.batch, args.out) == \
        (20, 0, None, None, None, None, None)


def test_the_shortest_prompt_has_no_filler_and_one_token_less_is_an_error():
    # intro (after EOT), key line and question with no filler at all: the boundary room == 0,
    # its length counted here from the pieces' own encodings
    enc = get_encoding()
    key = "12345"
    shortest = (1 + len(enc.encode(eval_passkey.INTRO)) + len(enc.encode(eval_passkey.KEY_LINE.format(key=key)))
                + len(enc.encode(eval_passkey.QUESTION)))
    for depth in (0.0, 1.0):
        tokens = eval_passkey.build_prompt(enc, shortest, depth, key)
        assert len(tokens) == shortest
        assert enc.decode(tokens[1:]) == eval_passkey.INTRO + eval_passkey.KEY_LINE.format(key=key) + eval_passkey.QUESTION
    with pytest.raises(ValueError, match=f"needs at least {shortest} tokens; got length {shortest - 1}"):
        eval_passkey.build_prompt(enc, shortest - 1, 0.5, key)


def test_depth_cells_refuse_bad_centres():
    for centres in ([], [-0.5, 0.5], [0.5, 1.5], [0.5, 0.5]):
        with pytest.raises(ValueError, match="distinct numbers in \\[0, 1\\]"):
            eval_passkey.depth_cells(centres)


def test_trials_are_seeded_by_seed_length_and_both_cell_edges():
    # the documented seeding, written out: keys are uniform 5-digit numbers drawn, then the
    # depth, from random.Random("seed-length-low-high"), so old results stay comparable
    # (seed 3515's 17th draw is where randint's range matters: 90000 values, not 90001)
    for seed, length, cell, n in ((0, 256, (0.0, 0.5), 5), (3, 1024, (0.25, 0.5), 5), (3515, 256, (0.0, 0.5), 17)):
        rng = random.Random(f"{seed}-{length}-{cell[0]}-{cell[1]}")
        expected = []
        for _ in range(n):
            key = str(10000 + rng.randrange(90000))   # randint(10000, 99999)
            expected.append((key, rng.uniform(*cell)))
        assert eval_passkey.draw_trials(seed, length, cell, n) == expected
    # cells sharing an upper edge get different keys
    keys = [k for k, _ in eval_passkey.draw_trials(0, 256, (0.0, 0.5), 10)]
    assert keys != [k for k, _ in eval_passkey.draw_trials(0, 256, (0.25, 0.5), 10)]
