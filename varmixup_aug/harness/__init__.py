"""The research harness: data opening, classifier models, training, evaluation, pictures and the CLI.

It uses the core package (``varmixup_aug``); the core never imports it.
"""
