"""What export reads of a folder ``python -m export.qat`` wrote: its record and its two graphs, checked.

The graphs must belong to the checkpoint being exported (its sha256 in ``qat.json``), be the files
the record lists (their sha256), and the CPU graph's 7-bit weights must not saturate on any x86 CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export.int8.flavours import FLAVOURS, Flavour
from export.int8.safety import u8s8_saturation
from formats.errors import UserError
from formats.files import sha256_file
from formats.qat import QAT_FILE, QatRecord, read_qat_record


@dataclass(frozen=True)
class QatGraphs:
    """A checked QAT folder: its graphs belong to the checkpoint being exported."""

    folder: Path
    record: QatRecord

    def graph(self, flavour: Flavour) -> Path:
        return self.folder / flavour.file


def read_qat(folder: str | Path, checkpoint: Path) -> QatGraphs:
    """The QAT folder for ``checkpoint``, checked before any export work."""
    folder = Path(folder)
    fix = f"run `python -m export.qat {checkpoint} --overwrite` to write it again"
    if not (folder / QAT_FILE).is_file():
        raise UserError(f"--qat {folder}: no {QAT_FILE} there: run `python -m export.qat {checkpoint}` to write it")
    record = read_qat_record(folder, fix)
    if record.source_checkpoint.sha256 != sha256_file(checkpoint):
        raise UserError(f"--qat {folder} was trained from another checkpoint than {checkpoint}: {fix}")
    files = {f.file: f for f in record.flavours}
    for flavour in FLAVOURS:
        path = folder / flavour.file
        if flavour.file not in files or not path.is_file() or sha256_file(path) != files[flavour.file].sha256:
            raise UserError(f"--qat {folder}: {flavour.file} is missing or does not match {QAT_FILE}: {fix}")
        if flavour.reduce_range and not u8s8_saturation(path).safe_on_every_x86:
            raise UserError(f"--qat {folder}: {flavour.file} has 8-bit weights whose int16 pair sums can saturate on x86 "
                            f"CPUs without VNNI (trained by an older version): {fix} (7-bit weights)")
    return QatGraphs(folder, record)
