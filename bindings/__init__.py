"""Adapters that put steplog under other frontends, each importing its frontend only
itself: mlflow/ (MLflow's tracking store, scheme steplog://), tensorboard/ (a
SummaryWriter and the event-file importer), lightning.py (a Lightning logger),
transformers.py (a Hugging Face Trainer callback)."""
