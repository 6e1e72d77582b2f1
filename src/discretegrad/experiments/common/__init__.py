"""What the paper experiments share, one concern per module.

* :mod:`.seeding` -- generators derived by hashing ``(seed, stream name)``;
* :mod:`.nets` -- PyTorch's default layer initialisation from an explicit generator, MLPs;
* :mod:`.estimators` -- an estimator's keyword arguments and sample count from a run config;
* :mod:`.training` -- the generic training loop (:func:`~.training.train`: epochs of steps,
  divergence, per-epoch logging, evaluation and checkpoint hooks, the efficiency artifact);
* :mod:`.vae` -- the VAE experiments' problem record and loop (:func:`~.vae.fit`) on top of it;
* :mod:`.probes` -- the gradient-variance probe;
* :mod:`.profiling` -- the peak memory of one training step.
"""
