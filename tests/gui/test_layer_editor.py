"""The layer editor shows exactly what the engine trains: presets, clicks on rows and phase edits are checked
against the engine's model (which parameters have requires_grad, each optimizer group's learning rate, which
BatchNorm layers are in train mode), for a CNN (resnet18) and a transformer (ViT-Tiny)."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch.nn as nn
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

import gui.support.model_builder as model_builder
from engine import config as config_io
from engine.config import Phase, RunConfig, TrainConfig
from engine.train.strategies import apply_phase, param_groups, resolve_phases, set_train_mode
from engine.models.layers import HEAD
from gui.steps.layers import (BN, LR, PRESETS, RETRAIN, LayerEditor, format_share)
from gui.widgets.format import format_count
from gui.support.model_builder import build_now

LR_BASE = 0.01
CONFIG = RunConfig(epochs=6, lr=LR_BASE, train=TrainConfig(layer_decay=0.5))


@pytest.fixture(scope="module")
def resnet():
    return build_now("timm:resnet18", "none", 3)


@pytest.fixture(scope="module")
def vit():
    return build_now("timm:vit_tiny_patch16_224", "none", 3)


@pytest.fixture
def editor(qtbot):
    widget = LayerEditor()
    qtbot.addWidget(widget)
    widget.resize(1100, 760)
    widget.set_config(CONFIG)
    widget.show()
    return widget


def open_model(editor: LayerEditor, result) -> None:
    editor.set_build_result(result)


def row(editor: LayerEditor, key: str, column: int = 0) -> QModelIndex:
    index = editor.model.find(key)
    assert index.isValid(), key
    return index.siblingAtColumn(column)


def click_checkbox(qtbot, editor: LayerEditor, index: QModelIndex) -> None:
    """A real mouse click on the row's Retrain checkbox."""
    view = editor.view
    index = index.siblingAtColumn(RETRAIN)
    view.scrollTo(index)
    option = QStyleOptionViewItem()
    option.initFrom(view)
    option.rect = view.visualRect(index)
    option.features |= QStyleOptionViewItem.ViewItemFeature.HasCheckIndicator
    option.features |= QStyleOptionViewItem.ViewItemFeature.HasDisplay
    option.text = index.data()
    box = view.style().subElementRect(QStyle.SubElement.SE_ItemViewItemCheckIndicator, option, view)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=box.center())


def expand(editor: LayerEditor, key: str) -> QModelIndex:
    index = row(editor, key)
    editor.view.expand(index)  # the view fetches the children it needs
    assert editor.model.rowCount(index) > 0
    return index


def shown_text(label) -> str:
    """What a rich-text label shows on screen (markup rendered, entities decoded)."""
    document = QTextDocument()
    document.setHtml(label.text())
    return document.toPlainText()


def check_against_engine(editor: LayerEditor, result, config: RunConfig = CONFIG) -> tuple[Phase, ...]:
    """Apply each phase of the editor's plan to the engine's model exactly as training does, and compare."""
    model, tree = result.built.model, result.tree
    planned = editor.apply_to(config)
    planned.validate()
    phases = resolve_phases(planned, tree)
    assert phases == editor.phases()
    saved = config_io.loads(config_io.dumps(planned))  # saved with the project and in the run folder
    assert resolve_phases(saved, tree) == phases
    module_stages = tree.module_stages(model)
    for number, phase in enumerate(phases):
        editor.select_phase(number)
        assert editor.current_phase() == number
        trainable = apply_phase(model, tree, phase)
        set_train_mode(model, tree, phase, module_stages)
        for name, param in model.named_parameters():
            assert param.requires_grad == (tree.stage_of_param(name) in phase.stages), name
        for group in param_groups(model, tree, phase, weight_decay=0.05):
            assert group["lr"] == pytest.approx(phase.lr * phase.stages[group["stage"]])
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                retrained = module_stages[name] in phase.stages
                assert module.training == (retrained and phase.bn == "train"), name
        # ... and the editor says the same
        total = tree.total_params
        assert f"{format_count(trainable)} of {format_count(total)} parameters will train " \
               f"({format_share(trainable, total)})" in shown_text(editor.summary_label)
        assert [m is not None for _, _, m in editor.strip.segments()] == [s in phase.stages for s in tree.names]
        for stage in tree.names:
            index = row(editor, f"stage:{stage}") if editor.model.find(f"stage:{stage}").isValid() else None
            if index is None:
                continue  # inside a closed group
            checked = index.siblingAtColumn(RETRAIN).data(Qt.ItemDataRole.CheckStateRole)
            assert (checked == Qt.CheckState.Checked) == (stage in phase.stages), stage
            lr_text = index.siblingAtColumn(LR).data()
            assert lr_text == (f"{phase.stages[stage]:.3g}" if stage in phase.stages else "\u2014")
    return phases


# --- presets ---------------------------------------------------------------------------------------------------


# (lora trains adapters the engine inserts at the run's start: tests/gui/test_multitask_steps.py checks it)
@pytest.mark.parametrize("strategy", [s for s, _, _ in PRESETS if s != "lora"])
def test_each_preset_button_sets_the_engines_plan_for_a_cnn(qtbot, editor, resnet, strategy):
    open_model(editor, resnet)
    with qtbot.waitSignal(editor.planChanged) as signal:
        qtbot.mouseClick(editor.preset_buttons[strategy], Qt.MouseButton.LeftButton)
    phases, chosen = signal.args
    assert chosen == strategy == editor.strategy()
    assert editor.preset_buttons[strategy].isChecked()
    assert phases == resolve_phases(dataclasses.replace(CONFIG, strategy=strategy), resnet.tree)
    assert editor.phase_table.rowCount() == len(phases)
    assert "Custom" not in editor.custom_label.text()
    check_against_engine(editor, resnet)


@pytest.mark.parametrize("strategy", ["fine-tune-shallow", "lp-ft"])
def test_presets_for_a_transformer(qtbot, editor, vit, strategy):
    open_model(editor, vit)
    qtbot.mouseClick(editor.preset_buttons[strategy], Qt.MouseButton.LeftButton)
    expand(editor, "group:blocks 0\u201311")
    check_against_engine(editor, vit)


def test_every_preset_has_a_line_saying_when_to_use_it(editor):
    for strategy, label, when in PRESETS:
        assert editor.preset_buttons[strategy].text() == label
        assert when.endswith(".") and ":" in when and editor.preset_buttons[strategy].toolTip() == when


# --- editing by hand -------------------------------------------------------------------------------------------


def test_ticking_a_stage_makes_a_custom_plan_that_the_engine_trains(qtbot, editor, resnet):
    open_model(editor, resnet)
    editor.apply_preset("feature-extraction")
    with qtbot.waitSignal(editor.planChanged) as signal:
        click_checkbox(qtbot, editor, row(editor, "stage:layer4"))
    phases, strategy = signal.args
    assert strategy == "custom" == editor.strategy() and "Custom plan" in editor.custom_label.text()
    assert not any(b.isChecked() for b in editor.preset_buttons.values())
    # A stage ticked by hand learns at the layer-wise decay of its depth (0.5 ** 1 below the head).
    assert phases[0].stages == {"layer4": 0.5, HEAD: 1.0}
    check_against_engine(editor, resnet)

    # Its learning-rate multiplier is edited in place.
    assert editor.model.setData(row(editor, "stage:layer4", LR), 0.2, Qt.ItemDataRole.EditRole)
    assert editor.phases()[0].stages == {"layer4": 0.2, HEAD: 1.0}
    assert not editor.model.setData(row(editor, "stage:layer4", LR), -1.0, Qt.ItemDataRole.EditRole)
    assert not row(editor, "stage:layer1", LR).flags() & Qt.ItemFlag.ItemIsEditable  # frozen: nothing to set
    check_against_engine(editor, resnet)

    # Clearing it again keeps the rest of the plan.
    click_checkbox(qtbot, editor, row(editor, "stage:layer4"))
    assert editor.phases()[0].stages == {HEAD: 1.0}
    check_against_engine(editor, resnet)


def test_rows_below_a_stage_follow_the_stage(qtbot, editor, resnet):
    open_model(editor, resnet)
    editor.apply_preset("feature-extraction")
    layer3 = row(editor, "stage:layer3")
    assert editor.model.canFetchMore(layer3) and editor.model.rowCount(layer3) == 0  # built only when opened
    expand(editor, "stage:layer3")
    block = row(editor, "layer3.1")
    assert "follows stage 'layer3'" in block.siblingAtColumn(RETRAIN).data(Qt.ItemDataRole.ToolTipRole)
    editor.view.expand(block)
    conv = editor.model.index(0, 0, block)
    click_checkbox(qtbot, editor, conv)  # a single layer deep inside the stage
    assert set(editor.phases()[0].stages) == {"layer3", HEAD}
    for r in range(editor.model.rowCount(layer3)):
        child = editor.model.index(r, RETRAIN, layer3)
        assert child.data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked
    assert conv.siblingAtColumn(RETRAIN).data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked
    check_against_engine(editor, resnet)


def test_a_group_of_blocks_is_tri_state(qtbot, editor, vit):
    open_model(editor, vit)
    editor.apply_preset("fine-tune-shallow")  # the top quarter of the 13 body stages: 4 of the 12 blocks
    group = row(editor, "group:blocks 0\u201311", RETRAIN)
    assert group.data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.PartiallyChecked
    assert group.siblingAtColumn(LR).data() == "0.1"
    click_checkbox(qtbot, editor, group)  # partly ticked -> all
    assert group.data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked
    blocks = [n for n in vit.tree.names if n.startswith("blocks.")]
    assert set(blocks) <= set(editor.phases()[0].stages) and "stem" not in editor.phases()[0].stages
    check_against_engine(editor, vit)
    click_checkbox(qtbot, editor, group)  # all -> none
    assert group.data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Unchecked
    assert set(editor.phases()[0].stages) == {HEAD}
    check_against_engine(editor, vit)


def test_batchnorm_policy_is_shown_and_trained_as_chosen(qtbot, editor, resnet):
    open_model(editor, resnet)
    editor.apply_preset("fine-tune-shallow")
    assert row(editor, "stage:layer4", BN).data() == "updated"
    assert row(editor, "stage:layer1", BN).data() == "kept"  # a frozen stage always keeps its statistics
    assert row(editor, f"stage:{HEAD}", BN).data() == ""  # no BatchNorm in the head
    editor.bn_combo.setCurrentIndex(editor.bn_combo.findData("frozen"))
    assert editor.strategy() == "custom" and editor.phases()[0].bn == "frozen"
    assert row(editor, "stage:layer4", BN).data() == "kept"
    check_against_engine(editor, resnet)


def test_unticking_everything_is_reported_not_trained(qtbot, editor, resnet):
    open_model(editor, resnet)
    editor.apply_preset("feature-extraction")
    click_checkbox(qtbot, editor, row(editor, f"stage:{HEAD}"))
    assert editor.problem() and "retrains nothing" in editor.warning_label.text()
    with pytest.raises(Exception, match="trains nothing"):
        editor.apply_to(CONFIG).validate()


# --- phases ----------------------------------------------------------------------------------------------------


def test_progressive_phases_are_listed_selected_and_edited(qtbot, editor, resnet):
    open_model(editor, resnet)
    editor.apply_preset("progressive")
    phases = editor.phases()
    assert len(phases) == 6 and editor.phase_table.rowCount() == 6
    assert [editor.phase_table.item(i, 0).text() for i in range(6)] == [p.name for p in phases]
    editor.select_phase(2)
    assert editor.current_phase() == 2 and "Phase 3 of 6" in shown_text(editor.summary_label)
    assert row(editor, "stage:layer3", RETRAIN).data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked
    assert row(editor, "stage:layer2", RETRAIN).data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Unchecked
    check_against_engine(editor, resnet)

    # Editing a phase's epochs turns the plan custom, and the engine then trains those epochs.
    editor.phase_table.item(1, 1).setData(Qt.ItemDataRole.EditRole, 4)
    assert editor.strategy() == "custom" and editor.phases()[1].epochs == 4
    assert editor.apply_to(CONFIG).total_epochs == sum(p.epochs for p in phases) + 3
    editor.phase_table.item(1, 2).setData(Qt.ItemDataRole.EditRole, 0.003)
    assert editor.phases()[1].lr == pytest.approx(0.003)
    check_against_engine(editor, resnet)

    editor.select_phase(1)
    editor.add_phase()
    assert len(editor.phases()) == 7 and editor.current_phase() == 2
    editor.remove_phase()
    assert len(editor.phases()) == 6
    check_against_engine(editor, resnet)


def test_lp_ft_on_a_transformer_probes_then_fine_tunes(qtbot, editor, vit):
    open_model(editor, vit)
    qtbot.mouseClick(editor.preset_buttons["lp-ft"], Qt.MouseButton.LeftButton)
    probe, tune = editor.phases()
    assert set(probe.stages) == {HEAD} and set(tune.stages) == set(vit.tree.names)
    assert tune.lr == pytest.approx(LR_BASE * 0.1)
    check_against_engine(editor, vit)


# --- the plan in the project -----------------------------------------------------------------------------------


def test_a_saved_custom_plan_comes_back(qtbot, editor, resnet):
    open_model(editor, resnet)
    editor.apply_preset("feature-extraction")
    click_checkbox(qtbot, editor, row(editor, "stage:layer4"))
    saved = config_io.loads(config_io.dumps(editor.apply_to(CONFIG)))
    other = LayerEditor()
    qtbot.addWidget(other)
    other.set_config(saved)  # before the model is known, as when a project opens
    open_model(other, resnet)
    assert other.strategy() == "custom" and other.phases() == editor.phases()


def test_a_run_folders_config_with_its_preset_written_out_stays_that_preset(qtbot, editor, resnet):
    strategy = "fine-tune-shallow"
    resolved = resolve_phases(dataclasses.replace(CONFIG, strategy=strategy), resnet.tree)
    editor.set_config(dataclasses.replace(CONFIG, strategy=strategy, phases=resolved))
    open_model(editor, resnet)
    assert editor.strategy() == strategy and editor.phases() == resolved


def test_a_plan_for_another_model_is_reset_with_a_sentence(qtbot, editor, resnet):
    plan = (Phase("mine", 3, 0.01, {"features.17": 0.1, HEAD: 1.0}),)
    editor.set_config(dataclasses.replace(CONFIG, strategy="custom", phases=plan))
    open_model(editor, resnet)
    assert editor.strategy() == "feature-extraction"
    assert "does not have" in editor.custom_label.text() and "reset" in editor.custom_label.text()
    check_against_engine(editor, resnet)


# --- building off the GUI thread -------------------------------------------------------------------------------


def test_open_model_builds_on_another_thread(qtbot, editor, monkeypatch):
    threads = []

    def recording_build(*args):
        threads.append(threading.current_thread())
        return build_now(*args)

    monkeypatch.setattr(model_builder, "build_now", recording_build)
    editor.open_model("timm:resnet18", "none", 3)
    assert editor.stack.currentIndex() == 1 and "Building resnet18" in editor.busy_label.text()
    with qtbot.waitSignal(editor.builder.built, timeout=120_000):
        pass
    assert threads and threads[0] is not threading.main_thread()
    assert editor.stack.currentIndex() == 2
    assert editor.model.rowCount() == 6 and "resnet18" in editor.title_label.text()


def test_a_failed_build_is_a_sentence(qtbot, editor):
    editor.open_model("timm:no_such_net", "none", 3)
    with qtbot.waitSignal(editor.builder.failed, timeout=60_000):
        pass
    assert editor.stack.currentIndex() == 0 and "no timm model" in editor.empty_label.text()


def test_a_window_that_hands_the_plan_back_through_its_config(qtbot, editor, resnet):
    """The main window writes each plan into its RunConfig and gives the config back: no loop, the selected phase
    stays selected, and a preset follows new settings (fewer epochs, fewer progressive phases)."""
    open_model(editor, resnet)
    window = {"config": CONFIG, "plans": 0}

    def on_plan(phases, strategy):
        window["plans"] += 1
        window["config"] = editor.apply_to(window["config"])
        editor.set_config(window["config"])

    editor.planChanged.connect(on_plan)
    editor.apply_preset("progressive")
    editor.select_phase(2)
    editor.phase_table.item(2, 1).setData(Qt.ItemDataRole.EditRole, 5)
    assert editor.strategy() == "custom" and editor.current_phase() == 2 and window["plans"] == 2
    assert window["config"].phases == editor.phases() and window["config"].phases[2].epochs == 5

    editor.apply_preset("progressive")
    window["config"] = dataclasses.replace(window["config"], epochs=3)  # changed in the Train step
    editor.set_config(window["config"])
    assert editor.strategy() == "progressive" and len(editor.phases()) == 3
    assert window["config"].epochs == 3 and window["config"].phases == ()
    check_against_engine(editor, resnet, dataclasses.replace(CONFIG, epochs=3))


# --- plain words beside the technical ones ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mobilenet():
    return build_now("torchvision:mobilenet_v2", "none", 2)


def test_stage_rows_have_a_plain_name_beside_the_models_own(qtbot, editor, mobilenet):
    open_model(editor, mobilenet)
    group = row(editor, "group:features 0\u201318")
    assert group.data() == "blocks 1\u201319 of 19  \u00b7  features 0\u201318"
    editor.view.expand(group)
    block = row(editor, "stage:features.3")
    assert block.data() == "block 4 of 19  \u00b7  features.3"  # the technical name stays visible
    assert "block 4 of 19 (features.3 in the model)" in block.data(Qt.ItemDataRole.ToolTipRole)
    assert row(editor, "stage:features.0").data().startswith("block 1 of 19")
    assert row(editor, f"stage:{HEAD}").data() == "new head for your classes  \u00b7  classifier"
    editor.view.expand(block)  # rows inside a stage keep the model's own names
    assert editor.model.index(0, 0, block).data() == "conv"
    # The depth strip's tooltips use the same words.
    assert editor.strip.segments()[3][0] == "block 4 of 19 (features.3)"


def test_a_timm_stem_is_the_first_layers(qtbot, editor, resnet):
    open_model(editor, resnet)
    assert row(editor, "stage:stem").data() == "the first layers  \u00b7  stem"
    assert row(editor, "stage:layer1").data() == "block 1 of 4  \u00b7  layer1"
    assert row(editor, "stage:layer4").data() == "block 4 of 4  \u00b7  layer4"
    assert row(editor, f"stage:{HEAD}").data() == "new head for your classes  \u00b7  fc"


def test_the_size_here_and_in_the_catalogue_are_explained(qtbot, editor, mobilenet, resnet):
    from engine.models.catalogue import ParamCounts

    open_model(editor, mobilenet)
    catalogue_count = ParamCounts(shipped=None).count("torchvision:mobilenet_v2")  # what the Model step shows
    assert format_count(catalogue_count) == "3.5 M" and format_count(mobilenet.tree.total_params) == "2.2 M"
    assert ("mobilenet_v2 \u2014 2.2 M parameters with your 2-class head (3.5 M with ImageNet's 1,000-class head)"
            in shown_text(editor.title_label))
    open_model(editor, resnet)
    assert "11.2 M parameters with your 3-class head (11.7 M with ImageNet's 1,000-class head)" in \
        shown_text(editor.title_label)
