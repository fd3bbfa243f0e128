"""What the training examples share: whether two loss curves agree."""


def curves_agree(first, second, tolerance):
    """Print whether the loss curves ``first`` and ``second`` agree, step by step, to ``tolerance``
    (relative to ``first``), and return the script's exit status: 0 if they do, 1 if not."""
    gap = max(abs(a - b) / abs(a) for a, b in zip(first, second))
    if len(first) != len(second) or gap > tolerance:
        print(f"the curves differ (largest relative difference {gap:.2e})")
        return 1
    print(f"the curves agree (largest relative difference {gap:.2e})")
    return 0
