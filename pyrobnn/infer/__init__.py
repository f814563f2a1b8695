"""Inference: the ELBO, SVI as building blocks and as a front door, and NUTS as the reference.

- :mod:`pyrobnn.infer.elbo`: ``ELBO``, Pyro's ``Trace_ELBO`` with the KL kept apart.
- :mod:`pyrobnn.infer.svi`: ``init`` and ``SVIState.step``, SVI for a loop of one's own.
- :mod:`pyrobnn.infer.fit`: ``fit``, the front door over them, and ``FitResult``.
- :mod:`pyrobnn.infer.settings`: ``FitSettings``, the settings of a fit held once, which
  ``fit``, ``init``, the state, the result and the checkpoints read.
- :mod:`pyrobnn.infer.history`: ``History``, the per-step record and its checks, ``FitError``
  and ``FitWarning``.
- :mod:`pyrobnn.infer.distributed`: data-parallel fitting over ``torch.distributed``.
- :mod:`pyrobnn.infer.mcmc`: ``mcmc``, NUTS, the yardstick that is exact in the limit.

Private to the stage: the ELBO's local reparameterisation handler
(``_local_reparam.py``), minibatches (``_batching.py``), the optimiser and its
schedules (``_optim.py``), the guide built from fit's arguments (``_guide_args.py``),
the end-of-fit checks of a history (``_checks.py``), the two starts of a joint guide's
default fit (``_starts.py``).
"""
