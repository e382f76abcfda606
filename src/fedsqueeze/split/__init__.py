"""Split learning over MPI: uncompressed SplitFed (``fl.method = "split"``) and FedLite
(``"fedlite"``: grouped product quantisation of the cut-layer activations with gradient
correction), METHODS.md section 5.

Modules: :mod:`~.options` (``[method]`` options), :mod:`~.parts` (prefix/suffix of the model),
:mod:`~.schedule` (lockstep order), :mod:`~.payloads` (wire layouts), :mod:`~.strategy` (server
maths), :mod:`~.server` and :mod:`~.client` (the MPI roles). The methods are registered by
:mod:`fedsqueeze.methods.split_learning`. Importing this package starts nothing.
"""
