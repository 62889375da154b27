"""What an adapting run (`mslseg infer --adapt`, `Segmenter(adapt=...)`) writes and says: the adapted
network's file names, its snapshots every N frames, and the summary's record and line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

ADAPTED = "adapted.pt"  # an adapting run's adapted network in OUT (--resume continues from it)
SNAPSHOTS = "adapted"  # OUT/adapted/frame-0001000.pt: --adapt-save's snapshots


def adaptation_line(a: dict) -> str:
    """'adapted online (msl, every 4 batch(es)): 250 updates, ms/frame 28.4 without / 56.3 with an
    update, 0 guard resets -> OUT/adapted.pt'."""
    plain, update = a["ms_per_frame_without_update"], a["ms_per_frame_with_update"]
    ms = " / ".join(part for part in (f"{plain:.1f} without" if plain is not None else "",
                                      f"{update:.1f} with an update" if update is not None else "") if part)
    resets = a["resets"]
    back = (f" (last: frame {resets[-1]['frame']}, {', '.join(resets[-1]['vanished'])} vanished; back to frame "
            f"{resets[-1]['to_frame']})" if resets else "")
    stopped = (f", updates stopped at frame {a['stopped_at']} after {a['stopped_after']} guard resets in a row"
               if a.get("stopped_at") is not None else "")
    return (f"adapted online ({a['settings']['objective']}, every {a['settings']['every']} batch(es)): "
            f"{a['updates']} updates, ms/frame {ms or 'n/a'}, {len(resets)} guard reset(s){back}{stopped} -> {a['saved']}")


def adaptation_record(segmenter: Any, saved: Path, snapshots: list[str]) -> dict | None:
    stats = segmenter.adaptation
    if stats is None:
        return None
    names = segmenter.meta.class_names
    plain, update = stats.ms_per_frame()
    return {"settings": segmenter.adaptation_settings(), "frames": stats.frames, "batches": stats.batches,
            "updates": stats.updates, "checks": stats.checks, "stopped_at": stats.stopped_at,
            "stopped_after": stats.stopped_after,
            "ms_per_frame_without_update": None if plain is None else round(plain, 3),
            "ms_per_frame_with_update": None if update is None else round(update, 3),
            "resets": [vars(r) | {"vanished": [names[i] for i in r.vanished]} for r in stats.resets],
            "saved": str(saved), "snapshots": snapshots}


def snapshots_every(every: int, segmenter: Any, folder: Path, written: list[str],
                     on_frame: Callable[[Any], None] | None) -> Callable[[Any], None]:
    """`on_frame` that also writes a snapshot of the adapted network each time `every` more frames
    have been adapted to (named by that count: frame-0001000.pt)."""
    def hook(report: Any) -> None:
        if on_frame is not None:
            on_frame(report)
        stats = segmenter.adaptation
        due = stats.frames // every * every
        if due and due > hook.last:
            folder.mkdir(exist_ok=True)
            path = segmenter.save_adapted(folder / f"frame-{due:07d}.pt")
            written.append(str(path))
            hook.last = due

    hook.last = segmenter.adaptation.frames // every * every  # a continued run: its snapshots so far stay
    return hook
