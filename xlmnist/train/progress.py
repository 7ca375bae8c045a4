"""Progress of a training session: the CLI's per-epoch lines and the hooks that feed a caller's
``progress(done, total, loss, accuracy, unit=...)`` (the add-ins' status bars) and ``cancel()``."""

from __future__ import annotations

import sys


def epoch_printer(epochs: int):
    def show(epoch: int, row: dict) -> None:
        va = row.get("valid_accuracy")
        vl = row.get("valid_loss")
        extra = f" valid_loss {vl:.6g}" if vl is not None else ""
        extra += f" valid_accuracy {va:.4f}" if va is not None else ""
        print(
            f"epoch {epoch}/{epochs} train_loss {row['train_loss']:.6g}{extra} {row['seconds']:.1f}s",
            file=sys.stderr,
            flush=True,
        )

    return show


def progress_hooks(progress, cancel, total):
    """(full-batch ``progress(step, objective)``, minibatch ``progress(epoch, row)``) calling the caller's
    ``progress(done, total, loss, accuracy, unit="epoch"|"step")``; full batch stops (KeyboardInterrupt,
    which train() turns into ``interrupted``) when ``cancel()``; minibatch polls ``cancel`` itself."""

    def steps(step, objective):
        if progress is not None:
            progress(step, total, objective, None, unit="step")
        if cancel is not None and cancel():
            raise KeyboardInterrupt

    def epochs(epoch, row):
        if progress is not None:
            progress(epoch, total, row["train_loss"], row.get("valid_accuracy"))

    return steps, epochs
