"""New pictures unlike the training pictures: an out-of-distribution score for every prediction (``ood``), a drift
report for a folder (``drift``), and adaptation without labels, AdaBN and TENT (``adapt``).

Everything here reads a run folder through the prediction loader (engine.results.predict.load_run_model), so runs,
adapted runs and exported bundles are handled alike. engine.results never imports this package (the engine's
packages import each other without cycles): the command line and the window call it.
"""
