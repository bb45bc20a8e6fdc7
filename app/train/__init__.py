"""python -m app.train DATA --name NAME: a folder of photos -> a trained, served classifier.

data.py (folder -> splits), features.py (the backbone's features, once), head.py (the
linear head), finetune.py (the optional fine-tune), stages.py (--resume), report.py (the
figures a person reads), rollout.py (--load), run.py (the stages in order), cli.py.
"""
