"""Token windows as the engine cuts them (standard library only, so the benchmark harness can
use it without torch)."""


def windows(ids, max_length, stride, max_windows):
    """Split one encoded text ([CLS] body [SEP]) into model windows.

    body = ids[1:-1]; each window is [CLS] + body[s:s+W] + [SEP] with
    W = max_length - 2. Starts are 0, stride, 2*stride, ... while the window
    does not reach the end of body, plus one final window ending exactly at the
    end of body. If that gives more than max_windows windows, the first
    max_windows - 1 and the final one are kept. The text's score is the max
    over its windows.
    """
    cls, sep = ids[0], ids[-1]
    body = ids[1:-1]
    w = max_length - 2
    if len(body) <= w:
        return [list(ids)]
    starts = []
    s = 0
    while s + w < len(body):
        starts.append(s)
        s += stride
    starts.append(len(body) - w)
    if len(starts) > max_windows:
        starts = starts[: max_windows - 1] + [starts[-1]]
    return [[cls] + list(body[s:s + w]) + [sep] for s in starts]
