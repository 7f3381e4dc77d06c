"""eval_passkey.py: what its surviving mutants showed the other tests did not pin down
(scripts/mutation.sh eval_passkey.py, results/mutation.md)."""
import eval_passkey


def test_default_depths_are_five_cells_over_the_whole_text():
    # the README's command gives no --depths: the default must be the five documented centres,
    # whose cells split [0, 1] halfway between them (by hand)
    args = eval_passkey.parse_args(["out/run"])
    assert args.depths == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert eval_passkey.depth_cells(args.depths) == [(0.0, 0.125), (0.125, 0.375), (0.375, 0.625),
                                                     (0.625, 0.875), (0.875, 1.0)]
    assert (args.trials, args.seed, args.lengths, args.attention, args.p, args.batch, args.out) == \
        (20, 0, None, None, None, None, None)
