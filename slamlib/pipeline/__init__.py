"""Infrastructure built on the core: where and how SLAM runs at scale.

* :mod:`slamlib.pipeline.cli` -- the ``slam`` command;
* :mod:`slamlib.pipeline.checkpoint` -- block-wise, resumable training
  (:class:`~slamlib.pipeline.checkpoint.ResumableTraining`);
* :mod:`slamlib.pipeline.scaleout` -- training and prediction on a Dask cluster
  (:class:`~slamlib.pipeline.scaleout.DaskRunner`; needs the ``[cluster]`` extra);
* :mod:`slamlib.pipeline.catalog_input`, :mod:`slamlib.pipeline.catalog_prediction` -- catalogue
  input and chunked, resumable prediction;
* :mod:`slamlib.pipeline.cache` -- the content-addressed cache of mock surveys and downloads;
* :mod:`slamlib.pipeline.progress` -- progress bars.

The core (:mod:`slamlib`) never imports this package.
"""
