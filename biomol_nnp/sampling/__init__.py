"""Enhanced sampling on MM, NNP/MM and refitted systems: metadynamics, umbrella sampling + MBAR.

``systems`` builds the System from settings, ``cvs`` the collective variables; ``metadynamics`` and
``umbrella`` run and analyse (:func:`~biomol_nnp.sampling.metadynamics.run_metadynamics`,
:func:`~biomol_nnp.sampling.umbrella.run_umbrella`). Heavy modules are imported where they are used.
"""
