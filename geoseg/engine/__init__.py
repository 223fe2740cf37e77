"""The engine: a run's plan, its device session and predictor, the input rows, the blender and the pipeline.

Read it in that order: :mod:`.plan` (numbers only), :mod:`.device` and :mod:`.predictor` (the
network on its device), :mod:`.input_rows` (pixels in), :mod:`.blender` (labels out),
:mod:`.pipeline` (the threads that join them). :mod:`.grid`, :mod:`.windows`, :mod:`.resample` and
:mod:`.staging` are the pieces they are built from.
"""
