"""What a trained run gives: evaluation on its validation and test pictures (``evaluate``), predictions for new
pictures (``predict``), heat maps of what made the model decide (``cam``), exports with their model card
(``export``)."""
