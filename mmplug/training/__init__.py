"""Training: preparing a run (``train``), the loop (``trainer``), the optimizer and schedule
(``optim``) and what a run tells its user (``progress``)."""
