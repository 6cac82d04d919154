"""The workflow's steps, one module or package each: data, model, layers, train, evaluate, predict. Steps do not import
each other (an import-linter contract): what they share lives in ``gui.widgets`` and ``gui.support``, and the shell
(``gui.main_window`` with ``gui.training_steps`` and ``gui.result_steps``) wires them together."""
