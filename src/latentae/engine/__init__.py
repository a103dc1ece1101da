"""The engine under every training task, knowing no model kind: ``loop.py`` (the
edm2-shaped loop and the :class:`~latentae.engine.loop.Task` interface), ``config.py``
(``LoopConfig``, the value checker fed by each task's tables, YAML), ``state.py``
(progress record, checkpoint files), ``rundir.py`` (the run folder and its reuse rules),
``monitor.py`` (metrics log), ``plot.py``, ``ema.py``, ``dist.py`` (DDP), and the image
sources: ``data.py`` (folders, tar shards, the seeded loader) and ``webdata.py``
(webdataset streams, the shard writer). It imports only the bottom layer and ``io``."""
