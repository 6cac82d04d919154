"""What the user keeps: projects (``.tsproj`` files and drafts, ``project``), run folders (``runs``), the model
library of imported weights and trained models (``library``) and the demo project (``demo``)."""
