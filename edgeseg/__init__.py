"""edgeseg: deploy lightweight semantic-segmentation models to edge runtimes.

Importing the package imports nothing heavy: ``edgeseg.models`` and ``edgeseg.export`` need torch,
``edgeseg.runtime`` needs only numpy and the chosen backend.
"""

__version__ = "0.1.0"
