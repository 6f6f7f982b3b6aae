"""The contract: everything the API needs to validate and describe jobs, without torch.

Job bodies (:mod:`.bodies`, :mod:`.spec`, :mod:`.evaluate_spec`, :mod:`.experiment_spec`),
their limits, job kinds, states and failure reasons (:mod:`.states`), errors, metric
names, the dataset catalogue, the datasets a spec reads, and the ready presets. Nothing in
this package imports torch; a test holds it to that.
"""
