"""Token windows as the engine cuts them (standard library only, so the benchmark harness can
use it without torch). `spans` is the Python twin of `vallum::classifier::windows`
(core/src/classifier.rs); both are checked against testdata/vectors/windows.json."""


def spans(n, w, stride, max_windows):
    """Window spans over a body of `n` tokens: half-open (start, end) token offsets, each `w`
    tokens long (the model's max_length minus [CLS] and [SEP]).

    A body of at most `w` tokens is one window (0, n). Otherwise the natural count is
    ceil((n - w) / stride) + 1 windows (the fewest whose starts are at most `stride` apart),
    capped at `max_windows`, with starts spread evenly from 0 to n - w (start i is
    (n - w) * i // (count - 1)), so the first window starts the text, the last ends it and a
    capped long text is sampled across its whole length rather than only its beginning.
    """
    if n <= w or w <= 0:
        return [(0, n)]
    natural = -(-(n - w) // max(stride, 1)) + 1
    count = min(natural, max(max_windows, 1))
    if count == 1:
        return [(0, w)]
    span = n - w
    return [(span * i // (count - 1), span * i // (count - 1) + w) for i in range(count)]


def windows(ids, max_length, stride, max_windows):
    """Split one encoded text ([CLS] body [SEP]) into model windows: [CLS] + body[s:e] + [SEP]
    for each (s, e) of `spans(len(body), max_length - 2, stride, max_windows)`. The text's score
    is the max over its windows."""
    cls, sep = ids[0], ids[-1]
    body = ids[1:-1]
    return [[cls] + list(body[s:e]) + [sep] for s, e in spans(len(body), max_length - 2, stride, max_windows)]
