"""The Train step: settings, Start/Pause/Stop, the live plots, the run history, and the one training thread."""
