"""Help > Check this computer: what Transfer Studio runs on, and what to do about each problem.

A non-modal dialog over ``engine.check.check_computer``: the problems first (each a sentence with what to do), then
the facts grouped (software, devices, disk, offline mode, weights). The check runs on the window's job service (it
imports the catalogue and runs a tiny operation on every GPU: a few seconds), can be run again, and the report can
be copied as text for a question or a bug report. ``show_check(window)`` opens the window's one dialog or raises it.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import os
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QFrame, QHBoxLayout, QLabel, QPushButton,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from gui import style
from gui.support.jobs import Jobs

TITLE = "Check this computer"
_DIALOG_ATTR = "_check_dialog"


class CheckDialog(QDialog):
    """The report of ``engine.check`` for this computer; ``report`` is the last one (None while checking)."""

    def __init__(self, parent: QWidget | None = None, runs_dir: str | os.PathLike | None = None,
                 jobs: Jobs | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(TITLE)
        self.setModal(False)
        self.runs_dir = runs_dir
        self.report = None
        self.jobs = Jobs(self, threads=1, service=jobs)

        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status_icon = QLabel()
        head = QHBoxLayout()
        head.addWidget(self.status_icon)
        head.addWidget(self.status, 1)

        self.problems = QFrame()
        self.problems.setFrameShape(QFrame.Shape.StyledPanel)
        self.problems_layout = QVBoxLayout(self.problems)

        self.facts = QTreeWidget()
        self.facts.setHeaderLabels(["", ""])
        self.facts.setHeaderHidden(True)
        self.facts.setColumnCount(2)
        self.facts.setRootIsDecorated(False)
        self.facts.setAlternatingRowColors(True)
        self.facts.setSelectionMode(QTreeWidget.SelectionMode.NoSelection)
        self.facts.setWordWrap(True)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        self.again = QPushButton(style.icon("refresh"), "Check &again")
        self.again.setToolTip("Run the check again (after installing a driver or freeing disk space).")
        self.again.clicked.connect(self.start)
        self.copy = QPushButton("&Copy report")
        self.copy.setToolTip("Copy the whole report as text, for a question or a bug report.")
        self.copy.clicked.connect(self.copy_report)
        buttons.addButton(self.again, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.copy, QDialogButtonBox.ButtonRole.ActionRole)

        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.problems)
        layout.addWidget(self.facts, 1)
        layout.addWidget(buttons)
        self.resize(760, 620)
        self.start()

    # -- running -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        from engine.check import check_computer

        runs_dir = self.runs_dir
        self.report = None
        self.again.setEnabled(False)
        self.copy.setEnabled(False)
        self._set_status("info", "Checking this computer (versions, each GPU, disk space, weights) ...")
        self._clear_problems()
        self.facts.clear()
        self.jobs.start("check", lambda progress, stop: check_computer(runs_dir=runs_dir), self._show,
                        on_error=self._failed, what="Checking this computer")

    def _failed(self, message: str) -> None:
        self.again.setEnabled(True)
        self._set_status("error", message)

    def _show(self, report) -> None:
        self.report = report
        self.again.setEnabled(True)
        self.copy.setEnabled(True)
        count = len(report.problems)
        if count:
            self._set_status("warning", f"{count} problem{'s' if count > 1 else ''} found: what to do is said with "
                                        f"each.")
        else:
            self._set_status("ok", "No problems found: this computer is ready for Transfer Studio.")
        for problem in report.problems:
            self._add_problem(problem)
        self.problems.setVisible(bool(report.problems))
        self._fill_facts(report)

    def copy_report(self) -> None:
        if self.report is not None:
            QApplication.clipboard().setText("\n".join(self.report.lines()))
            self._set_status(self._status_kind, self.status.text().split(" (The report")[0]
                             + " (The report is copied.)")

    # -- showing -------------------------------------------------------------------------------------------------

    def _set_status(self, kind: str, text: str) -> None:
        self._status_kind = kind
        self.status_icon.setPixmap(style.icon(kind).pixmap(20, 20))
        self.status.setText(text)

    def _clear_problems(self) -> None:
        while self.problems_layout.count():
            item = self.problems_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.problems.setVisible(False)

    def _add_problem(self, text: str) -> None:
        row = QHBoxLayout()
        icon = QLabel()
        icon.setPixmap(style.icon("warning").pixmap(18, 18))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        label = QLabel(text)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(icon)
        row.addWidget(label, 1)
        holder = QWidget()
        holder.setLayout(row)
        row.setContentsMargins(0, 0, 0, 0)
        self.problems_layout.addWidget(holder)

    def _fill_facts(self, report) -> None:
        def section(title: str, rows: list[tuple[str, str]]) -> None:
            head = QTreeWidgetItem(self.facts, [title, ""])
            font = head.font(0)
            font.setBold(True)
            head.setFont(0, font)
            head.setFirstColumnSpanned(True)
            for key, value in rows:
                item = QTreeWidgetItem(self.facts, [key, value])
                item.setToolTip(1, value)

        cuda = report.cuda
        software = [("Python", f"{report.python['version']} ({report.python['executable']})"),
                    ("PyTorch", report.torch["version"]),
                    ("torchvision, timm", f"{report.torch['torchvision']}, {report.torch['timm']}"),
                    ("Transfer Studio", report.torch["transfer_studio"]),
                    ("CUDA", (f"built for CUDA {cuda['build']}" + (", usable" if cuda["available"] else
                                                                   ", not usable here")) if cuda["build"]
                     else "this PyTorch has no CUDA"),
                    ("NVIDIA driver", (cuda["driver"] + (f" (CUDA up to {cuda['driver_cuda']})"
                                                        if cuda["driver_cuda"] else ""))
                     if cuda["driver"] else "none found")]
        section("Software", software)
        rows = []
        for d in report.devices:
            memory = f"{d.memory_gb:.1f} GB" if d.memory_gb is not None else "memory unknown"
            bf16 = "bf16 " + ("runs" if d.bf16 else "does not run")
            if d.native_bf16 is not None:
                bf16 += " (in hardware)" if d.native_bf16 else " (emulated: training stays in fp32)"
            rows.append((d.name, f"{memory}; {bf16}; fp16 {'runs' if d.fp16 else 'does not run'}"))
        section("Devices", rows)
        section("Disk", [(f"{label.capitalize()} folder",
                          f"{f.path}: " + (f"{f.free_gb:.1f} GB free" if f.free_gb is not None else "free space "
                                           "unknown") + (", writable" if f.writable else ", NOT writable"))
                         for label, f in report.disk.items()])
        section("Network", [("Offline mode", "on: no network connection at all" if report.offline
                             else "off (File > Work offline turns it on)")])
        section("Weights on this computer", [(w.model, f"{w.where} ({Path(w.path).name}), {w.size_mb:,.0f} MB")
                                             for w in report.weights]
                or [("None yet", "pretrained weights are downloaded on first use, or imported in the Model step")])
        self.facts.resizeColumnToContents(0)


def show_check(parent: QWidget, runs_dir: str | os.PathLike | None = None) -> CheckDialog:
    """Open the parent's one check dialog (checking afresh), or raise it when it is open."""
    dialog = getattr(parent, _DIALOG_ATTR, None)
    try:
        alive = dialog is not None and dialog.isVisible()
    except RuntimeError:  # deleted with its parent's children
        alive = False
    if alive:
        dialog.runs_dir = runs_dir
        dialog.start()
    else:
        dialog = CheckDialog(parent, runs_dir, jobs=getattr(parent, "jobs", None))
        setattr(parent, _DIALOG_ATTR, dialog)
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    return dialog
