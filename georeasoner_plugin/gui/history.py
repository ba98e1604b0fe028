"""The dock's list of the project's answers: select to show the reasoning and zoom, rename, delete,
export."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from qgis.core import Qgis, QgsProject
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..qgis_io.layers import (
    add_to_project,
    answer_layers,
    find_group,
    forget_answer,
    project_answer_ids,
    remove_from_project,
    stores_of,
)
from ..qgis_io.store import AnswerStore, StoredAnswer
from ..toolbelt.i18n import tr


def history_text(stored: StoredAnswer) -> str:
    a = stored.answer
    title = stored.title or f"{a.created[:16].replace('T', ' ')}  {a.question}"
    return f"{title}  [{len(a.objects)}]"


class HistoryPanel(QWidget):
    selected = pyqtSignal(object)  # StoredAnswer
    message = pyqtSignal(str, object)  # text, Qgis.MessageLevel
    export_requested = pyqtSignal(list)  # [StoredAnswer]
    correct_requested = pyqtSignal(object)  # StoredAnswer

    def __init__(self, project: QgsProject, parent=None):
        super().__init__(parent)
        self.project = project
        self.answers: Dict[str, StoredAnswer] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.list = QListWidget(self)
        self.list.setObjectName("history")
        self.list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.itemSelectionChanged.connect(self._selection_changed)
        layout.addWidget(self.list, 1)
        buttons = QHBoxLayout()
        for text, slot, name in ((tr("Correct"), self._correct, "correct"), (tr("Export..."), self._export, "export"),
                                 (tr("Rename..."), self.rename_selected, "rename"),
                                 (tr("Delete"), self.delete_selected, "delete")):
            button = QPushButton(text, self)
            button.setObjectName(name)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        layout.addLayout(buttons)

    # -- contents --------------------------------------------------------------------------------
    def stored_answers(self) -> List[StoredAnswer]:
        """The project's answers, read from the stores they live in (the project's own store first)."""
        wanted = set(project_answer_ids(self.project))
        found: Dict[str, StoredAnswer] = {}
        for path in stores_of(self.project):
            if not Path(path).exists():
                continue
            for stored in AnswerStore(Path(path)).all(wanted - set(found)):
                if stored.answer.answer_id not in found:
                    found[stored.answer.answer_id] = stored
        return sorted(found.values(), key=lambda s: s.answer.created)

    def reload(self) -> None:
        selected = {s.answer.answer_id for s in self.selected_answers()}
        self.list.blockSignals(True)
        self.list.clear()
        self.answers = {}
        try:
            answers = self.stored_answers()
        except Exception as exc:  # noqa: BLE001 - an unreadable store must not break the dock
            self.message.emit(tr("Cannot read the answer store: {0}").format(exc), Qgis.MessageLevel.Warning)
            answers = []
        for stored in answers:
            item = QListWidgetItem(history_text(stored))
            item.setData(Qt.ItemDataRole.UserRole, stored.answer.answer_id)
            item.setToolTip(stored.answer.reasoning[:1000])
            self.list.addItem(item)
            self.answers[stored.answer.answer_id] = stored
            item.setSelected(stored.answer.answer_id in selected)
        self.list.blockSignals(False)

    def select(self, answer_id: str) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == answer_id:
                self.list.setCurrentRow(i)

    def selected_answers(self) -> List[StoredAnswer]:
        ids = [i.data(Qt.ItemDataRole.UserRole) for i in self.list.selectedItems()]
        return [self.answers[i] for i in ids if i in self.answers]

    def _selection_changed(self) -> None:
        chosen = self.selected_answers()
        if not chosen:
            return
        stored = chosen[-1]
        if not answer_layers(stored.answer.answer_id, self.project):
            add_to_project(stored, self.project)  # e.g. an answer from Processing, or a removed group
        group = find_group(stored.answer.answer_id, self.project)
        if group is not None:
            group.setItemVisibilityChecked(True)
            group.setExpanded(True)
        self.selected.emit(stored)

    # -- actions ---------------------------------------------------------------------------------
    def _menu(self, pos) -> None:
        menu = QMenu(self)
        menu.addAction(tr("Correct"), self._correct)
        menu.addAction(tr("Rename..."), self.rename_selected)
        menu.addAction(tr("Delete"), self.delete_selected)
        menu.addAction(tr("Export..."), self._export)
        menu.exec(self.list.mapToGlobal(pos))

    def _correct(self) -> None:
        chosen = self.selected_answers()
        if len(chosen) != 1:
            self.message.emit(tr("Select the one answer to correct."), Qgis.MessageLevel.Info)
            return
        self.correct_requested.emit(chosen[0])

    def _export(self) -> None:
        chosen = self.selected_answers()
        if not chosen:
            self.message.emit(tr("Select one or more answers to export."), Qgis.MessageLevel.Info)
            return
        self.export_requested.emit(chosen)

    def rename_selected(self, title: str = "") -> None:
        chosen = self.selected_answers()
        if len(chosen) != 1:
            self.message.emit(tr("Select one answer to rename."), Qgis.MessageLevel.Info)
            return
        stored = chosen[0]
        if not title:
            title, ok = QInputDialog.getText(self, tr("Rename answer"), tr("Name"), text=history_text(stored))
            if not ok or not title.strip():
                return
        self.rename(stored, title.strip())

    def rename(self, stored: StoredAnswer, title: str) -> None:
        AnswerStore(stored.store).rename(stored.answer.answer_id, title)
        group = find_group(stored.answer.answer_id, self.project)
        if group is not None:
            group.setName(title)
        self.project.setDirty(True)
        self.reload()

    def delete_selected(self, confirm: bool = True) -> None:
        chosen = self.selected_answers()
        if not chosen:
            self.message.emit(tr("Select the answers to delete."), Qgis.MessageLevel.Info)
            return
        if confirm:
            reply = QMessageBox.question(self, tr("Delete answers"),
                                         tr("Delete {0} answer(s), their layers and their stored data?")
                                         .format(len(chosen)))
            if reply != QMessageBox.StandardButton.Yes:
                return
        self.delete(chosen)

    def delete(self, answers: List[StoredAnswer]) -> None:
        for stored in answers:
            remove_from_project(stored.answer.answer_id, self.project)
            AnswerStore(stored.store).remove(stored.answer.answer_id)
            forget_answer(self.project, stored.answer.answer_id)
        self.project.setDirty(True)
        self.reload()
